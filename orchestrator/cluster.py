"""A warm local Ray cluster: the first `kd-sweep run` on a machine starts it, later runs join it in a
fraction of a second instead of starting and stopping their own Ray (~4 s a sweep), and it stops after
`KD_SWEEP_KEEP_WARM` idle seconds (default 900) or at `kd-sweep down`.

A small keeper process owns it (`python -m orchestrator.cluster keep`): it starts `ray start --head
--block` in a session of its own (so a Ctrl-C or a killed driver never reaches it), writes where it is
to `state.json`, and stops it when no driver has held `use.lock` for the idle time. Drivers hold that
lock shared while they run; the OS drops it when a driver dies, so a crashed sweep never keeps Ray up.

The cluster serves only drivers that would have built the same local Ray: the same Python, the same
visible GPUs. Its workers get each driver's own environment (the variables that differ from the
keeper's) through the job's runtime environment, as a private cluster's workers would inherit it.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_KEEP_WARM_S = 900
START_TIMEOUT_S = 90
# Per process or per terminal: not part of what a trial should see differently.
NOT_FORWARDED = {"PWD", "OLDPWD", "SHLVL", "_", "RAY_ADDRESS", "TERM", "COLUMNS", "LINES", "PS1",
                 "RAY_AUTH_MODE", "KD_SWEEP_KEEP_WARM", "KD_SWEEP_CLUSTER"}


class ClusterError(Exception):
    """The warm cluster could not be started: one line for the user."""


def keep_warm_s() -> float:
    raw = os.environ.get("KD_SWEEP_KEEP_WARM", str(DEFAULT_KEEP_WARM_S))
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ClusterError(f"KD_SWEEP_KEEP_WARM={raw!r} is not a number of seconds (0: no warm cluster)") from None


def state_dir() -> Path:
    if "KD_SWEEP_CLUSTER" in os.environ:
        return Path(os.environ["KD_SWEEP_CLUSTER"])
    cache = Path(os.environ.get("KD_SWEEP_CACHE", Path.home() / ".cache" / "kd-sweep"))
    return cache / "cluster"


def fingerprint() -> str:
    """What a local Ray of this driver would differ in: a driver with another Python (another venv, other
    packages) or other visible GPUs must not run its trials on this cluster's workers."""
    facts = [os.path.realpath(sys.executable), os.environ.get("CUDA_VISIBLE_DEVICES", "*"),
             os.environ.get("PYTHONPATH", "")]
    return hashlib.sha256("\0".join(facts).encode()).hexdigest()[:16]


def _read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def running(folder: Path | None = None) -> dict | None:
    """The warm cluster's state when its keeper and its head are up, else None."""
    state = _read_state(folder or state_dir())
    if state and _alive(state["keeper"]) and _answers(state["address"]):
        return state
    return None


@contextlib.contextmanager
def _exclusive(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Lease:
    """A driver's hold on the warm cluster: a shared lock the keeper's idle check sees, released at exit
    (or by the OS when the driver dies) with the time of release noted for the idle countdown."""

    def __init__(self, folder: Path, state: dict):
        self.folder, self.state = folder, state
        self._f = open(folder / "use.lock", "a")
        fcntl.flock(self._f, fcntl.LOCK_SH)

    @property
    def address(self) -> str:
        return self.state["address"]

    def env_vars(self) -> dict[str, str]:
        """This driver's environment where it differs from the workers' (the keeper's); a variable the
        driver lacks is given empty, the nearest a runtime environment comes to unsetting it."""
        theirs = self.state.get("env", {})
        ours = {k: v for k, v in os.environ.items() if k not in NOT_FORWARDED}
        changed = {k: v for k, v in ours.items() if theirs.get(k) != v}
        return {**changed, **{k: "" for k in theirs if k not in ours and k not in NOT_FORWARDED}}

    def release(self) -> None:
        if self._f.closed:
            return
        (self.folder / "last_used").write_text(str(time.time()))
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def lease(progress=None) -> Lease | None:
    """Join the warm cluster, starting it if there is none; None when warm clusters are off
    (KD_SWEEP_KEEP_WARM=0) or the one running was built for another Python or other GPUs while busy."""
    idle = keep_warm_s()
    if idle <= 0:
        return None
    folder = state_dir()
    with _exclusive(folder / "start.lock"):
        state = running(folder)
        if state and state["fingerprint"] != fingerprint():
            if _busy(folder):
                return None  # another venv's sweep is on it: this one gets a private Ray, as before
            stop(folder)
            state = None
        if state is None:
            if progress is not None:
                progress.note(f"starting a local Ray cluster, kept warm for {idle:g} s after the last sweep"
                              " (`kd-sweep down` stops it)")
            state = _start(folder, idle)
        return Lease(folder, state)


def _busy(folder: Path) -> bool:
    with open(folder / "use.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _start(folder: Path, idle: float) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "last_used").write_text(str(time.time()))
    log = open(folder / "keeper.log", "ab")
    # kd-sweep's and MLflow's own settings are per sweep: each driver forwards its own (`env_vars`).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KD_SWEEP_", "MLFLOW_")) and k != "RAY_ADDRESS"}
    keeper = subprocess.Popen([sys.executable, "-m", "orchestrator.cluster", "keep", "--idle", str(idle),
                               "--folder", str(folder)], start_new_session=True, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = _read_state(folder)
        if state and state.get("keeper") == keeper.pid:
            return state
        if keeper.poll() is not None:
            break
        time.sleep(0.1)
    keeper.kill()
    tail = (folder / "keeper.log").read_text(errors="replace").strip().splitlines()[-3:]
    raise ClusterError("the local Ray cluster did not start (" + " | ".join(tail) + f"); see {folder}/keeper.log,"
                       " or run with KD_SWEEP_KEEP_WARM=0 for a private one")


def stop(folder: Path | None = None, wait_s: float = 10) -> bool:
    """Stop the warm cluster (its keeper stops Ray); True when one was running."""
    folder = folder or state_dir()
    state = _read_state(folder)
    if not state or not _alive(state["keeper"]):
        (folder / "state.json").unlink(missing_ok=True)
        return False
    os.kill(state["keeper"], signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while _alive(state["keeper"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


# --- the keeper process ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_head(head: subprocess.Popen) -> None:
    # `ray start --block` takes ~30 s to stop on SIGTERM; its processes (GCS, raylet, agents) share its
    # process group, and the workers exit when their raylet goes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(3)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()


def keep(folder: Path, idle: float, poll_s: float = 1.0) -> None:
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray if os.path.exists(ray) else "ray", "start", "--head", f"--port={port}",
           "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    address = f"127.0.0.1:{port}"
    try:
        while not _answers(address):
            if head.poll() is not None or stopping:
                return
            time.sleep(0.1)
        state = {"keeper": os.getpid(), "head": head.pid, "address": address, "fingerprint": fingerprint(),
                 "started": time.time(), "idle_s": idle, "env": dict(os.environ)}
        # Owner-only: it holds the keeper's environment (credentials, often), to compare drivers' against.
        tmp = folder / "state.json.tmp"
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(state, f)
        tmp.replace(folder / "state.json")
        while not stopping and head.poll() is None:
            time.sleep(poll_s)
            if not _busy(folder) and time.time() - _last_used(folder) > idle:
                print(f"idle for {idle:g} s: stopping", flush=True)
                break
    finally:
        state = _read_state(folder)
        if state and state.get("keeper") == os.getpid():
            (folder / "state.json").unlink(missing_ok=True)
        _stop_head(head)


def _last_used(folder: Path) -> float:
    try:
        return float((folder / "last_used").read_text())
    except (OSError, ValueError):
        return 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep", help="run the warm cluster's keeper (started by `kd-sweep run`)")
    k.add_argument("--idle", type=float, default=DEFAULT_KEEP_WARM_S)
    k.add_argument("--folder", type=Path, default=None)
    sub.add_parser("down", help="stop the warm cluster")
    args = parser.parse_args(argv)
    if args.cmd == "keep":
        keep(args.folder or state_dir(), args.idle)
    else:
        stop()


if __name__ == "__main__":
    main()
