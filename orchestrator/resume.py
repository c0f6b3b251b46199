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
import socket

from .trials import digest

DRIVER_TAG = "kd.driver"


def sweep_key(resolved: dict, smoke: bool) -> str:
    """Two `kd-sweep run`s continue one another only when they resolve to the same sweep."""
    return digest({"sweep": resolved, "smoke": smoke})


def driver_tag() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid()})


def driver_alive(tag: str | None) -> int | None:
    """The pid of the driver that logged `tag`, when it is a live kd-sweep process on this machine."""
    try:
        d = json.loads(tag or "")
        pid = int(d["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if d.get("host") != socket.gethostname() or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if "kd-sweep" in cmd or "orchestrator" in cmd else None


def _filesystem(storage: str):
    from pyarrow import fs as pafs

    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    return pafs.LocalFileSystem(), os.path.abspath(storage)


def latest_checkpoints(storage: str, prefix: str) -> dict[str, tuple[int, str]]:
    """config hash -> (epoch, checkpoint path or URI) of its newest complete epoch checkpoint, over
    every experiment folder under STORAGE whose name starts with PREFIX (one per attempt)."""
    from pyarrow import fs as pafs

    fs, base = _filesystem(storage)
    scheme = storage.split("://", 1)[0] + "://" if "://" in storage else ""

    def dirs(path: str):
        try:
            return [i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                    if i.type == pafs.FileType.Directory]
        except OSError:
            return []

    found: dict[str, tuple[int, str]] = {}
    for exp in dirs(base):
        if not exp.base_name.startswith(prefix):
            continue
        for trial in dirs(exp.path):
            for ck in dirs(trial.path):
                if not ck.base_name.startswith("checkpoint_"):
                    continue
                names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(ck.path))}
                if not {"epoch.json", "state.pt"} <= names:
                    continue  # an upload the kill cut short
                with fs.open_input_stream(f"{ck.path}/epoch.json") as f:
                    info = json.loads(f.read())
                epoch = int(info["epoch"])
                for key in info.get("members") or [info["config_hash"]]:  # a pack's checkpoint holds several
                    if epoch > found.get(key, (-1, ""))[0]:
                        found[key] = (epoch, scheme + ck.path)
    return found
