"""The Ray a sweep runs on: a private local one, started for the sweep and stopped at its end, or a
cluster given by --address / RAY_ADDRESS; checked against the sweep's resources and its checkpoint
storage before any trial starts. A Ray of the sweep's own costs ~2 s a sweep more than joining one
left running (README, Performance), and nothing outlives the command that started it."""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from .spec import SpecError, Sweep


class RunError(Exception):
    """The sweep is valid but cannot run here (no cluster to join...): one line, exit 1."""


class _AuthEnabledNote(logging.Filter):
    """Ray enables token authentication on a new local cluster and says so at every start: no news for
    kd-sweep's own loopback cluster. (Asking for it with RAY_AUTH_MODE=token after Ray is imported
    breaks the start: Ray reads its config at import.) Its other auth warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


class _TuneRestoreNote(logging.Filter):
    """Tune's words on a Ctrl-C name its own API: "Resume experiment with: Tuner.restore(path=...,
    trainable=...)", which a kd-sweep user never called, and "ending Ray Tune run ... checkpoint the
    experiment state". kd-sweep's own lines say it: how to stop at once now, how to continue at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Stop signal received"):
            record.msg, record.args = "stopping the sweep: its trials are stopped and their runs closed (Ctrl-C" \
                                      " again stops at once)", ()
            return True
        return "Tuner.restore(" not in text


# One instance each: addFilter skips a filter it already has.
_AUTH_NOTE, _RESTORE_NOTE = _AuthEnabledNote(), _TuneRestoreNote()


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


def owner_only_token() -> Path | None:
    """The token a new local Ray authenticates with, readable by this user alone: whoever can read it can
    run code as them on the cluster. Ray's `ray.init()` makes the default one (~/.ray/auth_token) when
    there is none, readable by all; made here first, with the same 256 random bits, Ray uses it as its
    own. A token Ray is given otherwise (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) is the user's business."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            os.environ.get("RAY_AUTH_MODE", "token") != "token":
        return None
    path = Path.home() / ".ray" / "auth_token"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path
    except OSError as e:
        raise RunError(f"cannot write Ray's token {path} ({e.strerror}): make the home folder writable, or"
                       " give a token with RAY_AUTH_TOKEN_PATH") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def unreachable_cluster(address: str | None) -> str | None:
    """Why nothing answers at the Ray address given (--address, else RAY_ADDRESS), in one line, or None:
    one TCP connection to exactly that host and port, in seconds, before any store or lock is written
    (ray.init would try for a minute, and warn about other addresses on the way). `auto` and `local`
    are Ray's to resolve."""
    import socket

    given = address or os.environ.get("RAY_ADDRESS")
    if not given or given in ("auto", "local"):
        return None
    hostport = given.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return f"the Ray address {given} is not HOST:PORT (e.g. 10.0.0.5:6379, the head's `ray start --head` port)"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        src = "" if address else " (from RAY_ADDRESS)"
        return (f"no Ray cluster answers at {given}{src}: {why.lower()}; start one there with `ray start --head"
                f" --port {port}`, or leave --address out to run on a Ray of this sweep's own")
    return None


class ClusterWatch:
    """The driver's watch on its Ray cluster: one TCP connection to the GCS (the head's control store)
    every second. When it refuses or times out for `grace` seconds in a row (the head node is down, its
    GCS was killed or ran out of memory), `on_lost(why)` runs in the watch's thread. Ray's own driver
    waits 60 s for the GCS and then ends the process from C++, so no run would be closed; kd-sweep
    says so in seconds and closes them itself. A listening GCS accepts the connection even when busy,
    so a slow cluster is not taken for a lost one."""

    def __init__(self, gcs_address: str, on_lost: Callable[[str], None], grace: float = 5.0, every: float = 1.0):
        host, _, port = gcs_address.rpartition(":")
        self.where, self.grace, self.every, self.on_lost = (host.strip("[]"), int(port)), grace, every, on_lost
        self.gcs_address = gcs_address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kd-sweep-cluster-watch", daemon=True)

    def start(self) -> ClusterWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Before Ray is shut down on purpose: its GCS going away then is no loss."""
        self._stop.set()

    def _watch(self) -> None:
        import socket

        since = None
        while not self._stop.wait(self.every):
            try:
                socket.create_connection(self.where, timeout=self.every).close()
                since = None
            except OSError as e:
                since = since or time.monotonic()
                if time.monotonic() - since >= self.grace and not self._stop.is_set():
                    self.on_lost((e.strerror or str(e) or type(e).__name__).lower())
                    return


def gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _children(pid: int) -> list[int]:
    """PID's child processes, from /proc (Linux; elsewhere none)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def kill_own_ray() -> None:
    """After the sweep's own Ray lost its GCS: end what is left of it (raylet, workers, agents), the
    driver's descendants, which would otherwise wait a minute for the GCS and then linger."""
    todo, seen = _children(os.getpid()), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += _children(pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _init_ray(address: str | None, sweep: Sweep, file: str) -> None:
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_AUTH_NOTE)
    logging.getLogger("ray.tune.tune").addFilter(_RESTORE_NOTE)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Per-epoch checkpoints with num_to_keep make Tune warn about snapshot frequency on every short epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                  configure_logging=True)
    # Tune runs each trial in a new thread of a reused actor, and glibc gives each thread its own malloc
    # arena: without a cap, the memory of finished trials is never reused (measured: +1 GB a trial with
    # ImageNet-sized teachers, until Ray's OOM killer stops the sweep).
    env = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    if os.environ.get("KD_SWEEP_FAULT"):  # tests of retry and resume: the workers must see it too
        env["KD_SWEEP_FAULT"] = os.environ["KD_SWEEP_FAULT"]
    kwargs["runtime_env"] = {"env_vars": env}
    import ray

    if not address:
        owner_only_token()
        try:
            # "local": a new instance of our own, even when `ray start` left a cluster on this machine.
            ray.init(address="local", **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever stops Ray's start, the sweep cannot run
            lines = [ln for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            raise RunError(f"the local Ray did not start: {lines[-1][:300]}") from None
    else:
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises several types here; all mean "not joined"
            text = f"{e} {e.__cause__ or ''}"
            hint = ("the cluster wants token authentication: export RAY_AUTH_MODE=token (the token comes"
                    " from ~/.ray/auth_token or RAY_AUTH_TOKEN; `ray get-auth-token` prints it on the head)"
                    if "AuthToken" in text or "Authentication" in text else
                    "is `ray start --head` running there, and is the port right?")
            raise RunError(f"cannot join the Ray cluster at {address}: {hint}") from None
    have = ray.cluster_resources()
    want = sweep.resources
    if want.gpu > 0 and have.get("GPU", 0) < min(want.gpu, 1):
        _shutdown_ray()
        raise SpecError(file, "resources.gpu",
                        f"each trial asks for {want.gpu:g} GPU and the Ray cluster has "
                        f"{have.get('GPU', 0):g}; run on a GPU cluster (--address) or set resources.gpu: 0"
                        " (e.g. --set resources.gpu=0) to train on CPU")
    if want.cpu > have.get("CPU", 0):
        _shutdown_ray()
        raise SpecError(file, "resources.cpu",
                        f"each trial asks for {want.cpu:g} CPUs and the Ray cluster has {have.get('CPU', 0):g}")


def storage_blind_nodes(storage: str) -> tuple[int, list[str]]:
    """(alive nodes, those that cannot see STORAGE). A URI is the object store's business; a path is
    checked by a marker file the driver writes and a zero-CPU task on each node looks for."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or "://" in storage:
        return len(nodes), []
    os.makedirs(storage, exist_ok=True)
    marker = os.path.join(storage, f".kd-sweep-visible-{uuid.uuid4().hex}")
    open(marker, "w").close()

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        refs = [(n, sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                 .remote(marker)) for n in nodes]
        blind = []
        for n, ref in refs:
            try:
                ok = ray.get(ref, timeout=120)
            except Exception:  # noqa: BLE001 - a node that cannot answer cannot be trusted with checkpoints
                ok = False
            if not ok:
                blind.append(f"{n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]})")
    finally:
        os.remove(marker)
    return len(nodes), blind


def check_storage(storage: str, file: str) -> None:
    nodes, blind = storage_blind_nodes(storage)
    if blind:
        _shutdown_ray()
        raise SpecError(file, "storage",
                        f"{storage} is not visible from {len(blind)} of the cluster's {nodes} nodes"
                        f" ({', '.join(blind)}): trial checkpoints must be where every node sees them. Give a"
                        " shared path (NFS) or an object store URI (s3://..., gs://...) with --storage or"
                        " `storage:` in the sweep")
