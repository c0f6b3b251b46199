"""What an earlier `kd-sweep run` of the same sweep left behind: its parent run (when its driver died),
the epoch checkpoints of its unfinished trials on the storage, and finished trials of any sweep.

Why not `Tuner.restore`: Tune saves its experiment state at most every 10 s (more rarely on long
sweeps), so after a SIGKILL it may believe a trial that finished is still running and train it
again. kd-sweep decides from MLflow (a trial is finished when its run is) and from the checkpoints
themselves (each holds `epoch.json`), then starts a new Tuner on what is left.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys

from trainables.config import digest


def sweep_key(resolved: dict, smoke: bool) -> str:
    """Two `kd-sweep run`s continue one another only when they resolve to the same sweep."""
    return digest({"sweep": resolved, "smoke": smoke})


def driver_tag() -> str:
    """The parent run's `kd.driver`: which process on which machine drives it."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid()})


def command_line() -> str:
    """The command as typed, `kd-sweep run ...` (what a reproduction record quotes)."""
    args = list(sys.argv)
    # The entry point, or `python -m orchestrator.cli` (the same program): as a user would type it.
    if args and (os.path.basename(args[0]) == "kd-sweep" or args[0].endswith(os.path.join("orchestrator", "cli.py"))):
        args[0] = "kd-sweep"
    return shlex.join(args)


def driver_alive(tag: str | None) -> int | None:
    """The pid of the driver that logged `tag`, when it is a live kd-sweep process on this machine."""
    try:
        d = json.loads(tag or "")
        host, pid = d.get("host"), int(d["pid"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return pid if pid != os.getpid() and kd_process(host, pid) else None


def kd_process(host: str | None, pid: int) -> bool:
    """Whether PID is a live kd-sweep process on this machine (HOST is this machine)."""
    if host != socket.gethostname():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "kd-sweep" in cmd or "orchestrator" in cmd


def _filesystem(storage: str):
    from pyarrow import fs as pafs

    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    return pafs.LocalFileSystem(), os.path.abspath(storage)


def latest_checkpoints(storage: str, prefix: str, notes: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """config hash -> (epoch, checkpoint path or URI) of its newest intact epoch checkpoint, over every
    experiment folder under STORAGE whose name starts with PREFIX (one per attempt). A checkpoint whose
    `epoch.json` does not parse, whose `state.pt` is not the size `epoch.json` recorded, or (on a local
    disk) is not a whole torch archive (a kill or a full disk mid-copy), is passed over for the next
    newest, with a line in NOTES."""
    from pyarrow import fs as pafs

    from trainables.config import checkpoint_members

    fs, base = _filesystem(storage)
    scheme = storage.split("://", 1)[0] + "://" if "://" in storage else ""

    def dirs(path: str):
        try:
            return [i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                    if i.type == pafs.FileType.Directory]
        except OSError:
            return []

    candidates: dict[str, list[tuple[int, str]]] = {}
    for exp in dirs(base):
        if not exp.base_name.startswith(prefix):
            continue
        for trial in dirs(exp.path):
            for ck in dirs(trial.path):
                if not ck.base_name.startswith("checkpoint_"):
                    continue
                files = {i.base_name: i for i in fs.get_file_info(pafs.FileSelector(ck.path))}
                if not {"epoch.json", "state.pt"} <= files.keys():
                    continue  # an upload the kill cut short
                try:
                    with fs.open_input_stream(f"{ck.path}/epoch.json") as f:
                        info = json.loads(f.read())
                    epoch = int(info["epoch"])
                    keys = list(checkpoint_members(info))  # a trial's checkpoint may hold several
                    want = info.get("state_bytes")
                except (OSError, ValueError, KeyError, TypeError) as e:
                    if notes is not None:
                        notes.append(f"skipped checkpoint {ck.path}: its epoch.json does not read ({type(e).__name__})")
                    continue
                if want is not None and files["state.pt"].size != want:  # any filesystem, object stores too
                    if notes is not None:
                        notes.append(f"skipped checkpoint {ck.path}: its state.pt holds {files['state.pt'].size} of"
                                     f" {want} bytes (cut short); an older one is used")
                    continue
                for key in keys:
                    candidates.setdefault(key, []).append((epoch, scheme + ck.path))
    found: dict[str, tuple[int, str]] = {}
    whole: dict[str, bool] = {}  # a pack's students share one checkpoint: read it once
    for key, cks in candidates.items():
        for epoch, path in sorted(cks, reverse=True):
            if path not in whole:
                whole[path] = bool(scheme) or _whole_archive(os.path.join(path, "state.pt"))
                if not whole[path] and notes is not None:
                    notes.append(f"skipped checkpoint {path}: its state.pt is damaged (cut short?); an older one is used")
            if whole[path]:
                found[key] = (epoch, path)
                break
    return found


def prune_checkpoints(storage: str, experiment: str, trials: set[str]) -> None:
    """Every checkpoint but the newest of each of TRIALS (finished: their weights are in MLflow) in the
    Tune experiment folder EXPERIMENT under STORAGE."""
    from pyarrow import fs as pafs

    fs, base = _filesystem(storage)
    for name in trials:
        try:
            cks = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(f"{base}/{experiment}/{name}",
                                                                             allow_not_found=True))
                         if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
            for path in cks[:-1]:
                fs.delete_dir(path)
        except OSError:
            continue  # a checkpoint left behind costs disk, never a result


def checkpoint_bytes(storage: str, sweep: str) -> int | None:
    """Bytes under a local STORAGE in the experiment folders of SWEEP (every attempt, teachers too);
    None for an object store."""
    if "://" in storage or not os.path.isdir(storage):
        return None
    total = 0
    for exp in os.listdir(storage):
        if exp.startswith(f"{sweep}-"):
            for root, _, files in os.walk(os.path.join(storage, exp)):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                             if not os.path.islink(os.path.join(root, f)))
    return total


def _whole_archive(path: str) -> bool:
    """A torch checkpoint is a zip archive: every member's CRC checks out, or it was cut short."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


class SweepLocked(Exception):
    pass


class SweepLock:
    """One driver per sweep on this store: an exclusive flock on a file beside a sqlite store (or under
    the checkpoint storage for a server store), taken before anything is written and held until the
    driver ends; the OS releases it when the process dies, so a killed driver never blocks the next.
    The file holds the holder's pid and, once made, its parent run, for the loser's message."""

    def __init__(self, folder: str, name: str, key: str):
        self.path = os.path.join(folder, ".kd-sweep-locks", f"{name}-{key[:12]}.lock")
        self.fd: int | None = None

    def acquire(self) -> "SweepLock":
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                held = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                held = {}
            os.close(fd)
            parent = f", parent run {held['parent']}" if held.get("parent") else ""
            raise SweepLocked(f"this sweep is being run by process {held.get('pid', '?')} on"
                              f" {held.get('host', 'this machine')}{parent}; wait for it, or stop it and run again"
                              " to continue") from None
        self.fd = fd
        self.write()
        return self

    def write(self, parent: str | None = None) -> None:
        data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **({"parent": parent} if parent else {})})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
