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
