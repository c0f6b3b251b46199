"""A disk that fills mid-sweep (the store and the checkpoints on it): one line on the terminal naming the
store, the reason and the log file that keeps Tune's and MLflow's tracebacks; exit 1; and after space
is freed the same command continues the sweep to its end.

The disk is a small tmpfs, which takes root to mount: elsewhere the test is skipped."""
import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .conftest import digits_coss_sweep, kd_sweep


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and shutil.which("umount") is not None


def _fill(folder: Path) -> None:
    """Write zeros until the disk is full."""
    block = b"\0" * (1 << 20)
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with open(folder / "filler-tail", "wb", buffering=0) as f:  # the last partial MB
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.mark.skipif(not _can_mount(), reason="mounting a small tmpfs takes root")
def test_a_disk_that_fills_mid_sweep_is_one_line_and_the_same_command_continues_after(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"no tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (tmp_path / "s.yaml").write_text(digits_coss_sweep("fulldisk", "[0.5, 1.0]", 30))
        uri = f"sqlite:///{disk}/mlflow.db"
        logs = tmp_path / "logs"
        cmd = ["run", "s.yaml", "--tracking-uri", uri, "--storage", str(disk / "ray_results")]
        env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONUNBUFFERED": "1",
               "KD_SWEEP_LOGS": str(logs)}
        driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *cmd], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # A student's first epoch checkpoint: the students are training, then the disk fills.
            deadline = time.monotonic() + 240
            while not [p for p in (disk / "ray_results").glob("fulldisk-*/*/checkpoint_*")
                       if "-teachers-" not in str(p)]:
                assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
                time.sleep(0.2)
            _fill(disk)
            out, err = driver.communicate(timeout=180)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
        assert driver.returncode == 1, out + err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        (line,) = lines
        assert line.startswith(f"error: the MLflow store {uri} stopped taking this sweep's runs (disk is full)"), line
        assert "run the same command again to continue parent run" in line
        where = re.search(r"Tracebacks: (\S+)\.?$", line)
        assert where, line
        (log,) = logs.iterdir()
        assert where.group(1).rstrip(".") == str(log)
        assert "Traceback" in log.read_text() and "No space left on device" in log.read_text()

        # Space again: the same command continues the stopped parent to its end.
        (disk / "filler").unlink()
        (disk / "filler-tail").unlink()
        again = kd_sweep(*cmd, cwd=tmp_path, env={"KD_SWEEP_LOGS": str(logs)})
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "continuing parent run" in again.stdout
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("fulldisk")
        runs = client.search_runs([exp.experiment_id])
        students = [r for r in runs if r.data.tags.get("kd.role") == "student"]
        assert sorted(r.info.status for r in students) == ["FINISHED", "FINISHED"]
        parents = [r for r in runs if r.data.tags.get("kd.role") == "sweep"]
        assert [r.info.status for r in parents] == ["FINISHED"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
