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
