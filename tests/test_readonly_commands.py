"""`report` and `status` only read: pointed at a store that does not exist they say so, and create nothing."""
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app


@pytest.mark.parametrize("command", ["report", "status"])
def test_no_store_is_created_by_reading(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    for uri, made in ((f"sqlite:///{tmp_path}/missing/x.db", tmp_path / "missing"),
                      ("sqlite:///mlflow.db", tmp_path / "mlflow.db"), (str(tmp_path / "mlruns"), tmp_path / "mlruns")):
        res = CliRunner().invoke(app, [command, "--tracking-uri", uri])
        assert res.exit_code == 1, res.output
        assert "no MLflow store at" in res.output and "kd-sweep run SWEEP.yaml" in res.output
        assert not made.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_store_stops_the_run_with_one_line(tmp_path, monkeypatch):
    """Through the real command. The permission itself is simulated (os.access denies the store): root,
    as CI runs, may write anywhere."""
    import os

    from .conftest import SWEEPS

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "ro"
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"")
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(str(store)) else real(path, mode))
    res = CliRunner().invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--tracking-uri", f"sqlite:///{store}/mlflow.db"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "the MLflow store cannot take this sweep's runs" in res.stderr and "is not writable" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]  # no lock, no ray_results


def test_unwritable_store_is_told_before_anything_starts(tmp_path, monkeypatch):
    """The check itself, where root's permissions cannot hide it: os.access says what the driver may do."""
    import os

    from orchestrator.tracking import unwritable_store

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "is not writable" in unwritable_store(f"sqlite:///{tmp_path}")  # exists
    assert "cannot be created" in unwritable_store(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert unwritable_store("http://mlflow.example:5000") is None
    monkeypatch.undo()
    assert unwritable_store(f"sqlite:///{tmp_path}/new/mlflow.db") is None


def test_a_dry_run_creates_no_store(tmp_path, monkeypatch):
    from .conftest import SWEEPS

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--dry-run",
                                   "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert res.exit_code == 0, res.output
    assert "trial" in res.output and list(tmp_path.iterdir()) == []


def test_a_dry_run_with_no_earlier_run_estimates_from_the_models_flops(tmp_path, monkeypatch):
    """No store yet: every trial is costed from its backbones' FLOPs x images x epochs, so doubling the
    epochs doubles the arithmetic; the lines keep to 100 columns."""
    import re

    from .conftest import SWEEPS

    monkeypatch.chdir(tmp_path)

    def dry(epochs: int) -> tuple[str, float]:
        res = CliRunner().invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--dry-run", "--tracking-uri",
                                       f"sqlite:///{tmp_path}/mlflow.db", "--set", f"train.epochs={epochs}",
                                       "--set", f"teacher_train.epochs={epochs}"])
        assert res.exit_code == 0, res.output
        assert all(len(line) <= 100 for line in res.output.splitlines()), res.output
        text = " ".join(res.output.split())
        assert "0 finished earlier, 0 estimated from earlier runs at 0.00 CPU-hours; 9 not run before (1 teacher(s) to train)" in text
        assert "per image (teacher forward, student forward and backward" in text
        assert "x 1438 images x epochs" in text and "half this machine's measured fp32 matmul peak" in text
        n, unit = re.search(r"epochs = ([\d.]+) (\w)FLOP", text).groups()
        return text, float(n) * {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[unit]

    _, one = dry(10)
    _, two = dry(20)
    assert two == pytest.approx(2 * one, rel=2e-3)
    assert list(tmp_path.iterdir()) == []


class _FailingClient:
    """An MLflow client whose store fails as a read-only sqlite file does, counting the calls made."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls += 1
            raise self.error
        return call


def test_a_store_failing_mid_sweep_stops_the_trials_instead_of_raising_through_tune():
    """The trial callback notes the failure (Tune would wrap a raise in hundreds of lines), its stopper
    then stops every trial, and nothing more is sent to the broken store. kd-sweep's own bugs still raise."""
    from types import SimpleNamespace

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    from orchestrator.tracking import failure_reason, make_callback, store_failure

    readonly = MlflowException(str(sqlalchemy.exc.OperationalError(
        "INSERT INTO metrics", {}, Exception("attempt to write a readonly database"))))
    client = _FailingClient(readonly)
    callback = make_callback(SimpleNamespace(uri="sqlite:///x.db", client=client), "0", "parent")
    stopper = callback.stopper()
    trial = SimpleNamespace(config={"trial": {"config_hash": "abc", "name": "t"}})
    assert not stopper.stop_all()
    callback.on_trial_start(0, [], trial)
    assert stopper.stop_all() and callback.store_error is readonly and client.calls == 1
    callback.on_trial_result(0, [], trial, {"epoch": 1})
    callback.on_trial_complete(0, [], trial)
    assert client.calls == 1  # nothing more is tried
    assert failure_reason(readonly) == "readonly database"

    bug = make_callback(SimpleNamespace(uri="sqlite:///x.db", client=_FailingClient(KeyError("kd.cell"))), "0", "p")
    with pytest.raises(KeyError):
        bug.on_trial_start(0, [], trial)
    assert bug.store_error is None

    full = OSError(28, "No space left on device")
    assert store_failure(full) and failure_reason(full) == "no space left on device"
    assert not store_failure(OSError(2, "No such file or directory")) and not store_failure(ValueError("x"))


def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path):
    """MLflow creates a new sqlite store's tables on first use, and two processes doing so at the same
    instant race ("table ... already exists"): a driver and a watcher beside it must both get through."""
    import subprocess
    import sys
    import time

    start = time.time() + 3  # every process imports first, then opens the store at this instant
    code = ("import sys, time; from orchestrator.tracking import Store; t = float(sys.argv[2]);"
            " time.sleep(max(0, t - time.time())); Store(sys.argv[1]); print('ok')")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "ok" for p, (out, _) in zip(procs, results)), \
        [err[-500:] for _, err in results]
