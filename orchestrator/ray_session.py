"""The Ray a sweep runs on: the warm local cluster (orchestrator/cluster.py), a private local one, or
a cluster given by --address / RAY_ADDRESS; checked against the sweep's resources and its checkpoint
storage before any trial starts."""
from __future__ import annotations

import logging
import os
import sys

from . import cluster
from .progress import Progress
from .spec import SpecError, Sweep


class RunError(Exception):
    """The sweep is valid but cannot run here (no cluster to join...): one line, exit 1."""


class _AuthEnabledNote(logging.Filter):
    """Ray enables token authentication on a new local cluster and says so at every start: no news for
    kd-sweep's own loopback cluster. (Asking for it with RAY_AUTH_MODE=token after Ray is imported
    breaks the start: Ray reads its config at import.) Its other auth warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


_AUTH_NOTE = _AuthEnabledNote()  # one instance: addFilter skips a filter it already has


_LEASE: list = []  # this driver's hold on the warm local cluster, released by _shutdown_ray


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
    while _LEASE:
        _LEASE.pop().release()


def _warm_lease(progress: Progress | None):
    """The warm local cluster's lease, or None for a private Ray: warm clusters off, or Ray already
    imported without token authentication (a cluster started by `ray start` wants it, and Ray reads
    RAY_AUTH_MODE once, at import)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode not in (None, "token") or ("ray" in sys.modules and mode != "token"):
        return None
    try:
        held = cluster.lease(progress)
    except cluster.ClusterError as e:
        raise RunError(str(e)) from None
    if held is not None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return held


def _init_ray(address: str | None, sweep: Sweep, file: str, progress: Progress | None = None) -> None:
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_AUTH_NOTE)

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
    held = None if address else _warm_lease(progress)
    import ray

    if held is not None and not _join_warm(held, kwargs, env):
        # Stopped between our look and the join (`ray stop`): start it anew, once.
        cluster.stop()
        held = _warm_lease(progress)
        if held is not None and not _join_warm(held, kwargs, env):
            raise RunError(f"cannot join the local Ray cluster at {held.address}; run with KD_SWEEP_KEEP_WARM=0"
                           " for a Ray of this sweep's own")
    if held is None and not address:
        kwargs["runtime_env"] = {"env_vars": env}
        # "local": a new instance of our own, even when `ray start` left a cluster on this machine.
        ray.init(address="local", **kwargs)
    elif held is None:
        kwargs["runtime_env"] = {"env_vars": env}
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


def _join_warm(held, kwargs: dict, env: dict) -> bool:
    """Join the warm cluster; False (the lease given back) when it does not answer."""
    import ray

    _LEASE.append(held)
    # Its workers were started for another driver: they get this one's environment as a job's.
    kwargs["runtime_env"] = {"env_vars": {**held.env_vars(), **env}}
    try:
        ray.init(address=held.address, **kwargs)
        return True
    except Exception:  # noqa: BLE001 - Ray raises several types here; all mean "not joined"
        ray.shutdown()
        _LEASE.pop().release()
        return False


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
