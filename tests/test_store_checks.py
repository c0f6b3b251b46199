"""What an operator gets for a store or cluster that cannot be used: one line naming it, exit 1, in
seconds, and nothing written (no store, no lock folder, no checkpoint folder), from every command."""
import socket
import time

import pytest
from mlflow import MlflowClient

from .conftest import SWEEPS, kd_sweep

WRITTEN = ("mlflow.db", "ray_results", ".kd-sweep-locks", "mlruns")


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_failure(res, started: float, *, within: float = 30.0) -> str:
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 1, out
    assert len(out.splitlines()) == 1 and out.startswith("error: ") and "Traceback" not in out, out
    assert time.monotonic() - started < within, out
    return out


def timed(*args: str, cwd, env: dict | None = None):
    t0 = time.monotonic()
    return kd_sweep(*args, cwd=cwd, env=env), t0


def test_a_server_that_does_not_answer_is_one_line_from_every_command(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    sweep = str(SWEEPS / "quickstart.yaml")
    for args in (["run", sweep, "--dry-run"], ["run", sweep], ["report"], ["status"], ["ui"], ["record", "quickstart"]):
        line = one_line_failure(*timed(*args, "--tracking-uri", uri, cwd=tmp_path))
        assert f"the MLflow server {uri} does not answer (connection refused)" in line, (args, line)
    # The same store from the environment, as a team sets it.
    line = one_line_failure(*timed("run", sweep, "--dry-run", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri}))
    assert uri in line
    assert not [p.name for p in tmp_path.iterdir() if p.name in WRITTEN]


def test_a_store_uri_mlflow_does_not_take_is_one_line(tmp_path):
    for args in (["run", str(SWEEPS / "quickstart.yaml")], ["report"]):
        line = one_line_failure(*timed(*args, "--tracking-uri", "foo://x", cwd=tmp_path))
        assert "the MLflow store URI foo://x has a scheme MLflow does not take (foo://)" in line
    assert not [p.name for p in tmp_path.iterdir() if p.name in WRITTEN]


def test_a_damaged_or_foreign_sqlite_store_is_one_line_and_left_as_it_is(tmp_path):
    import sqlite3

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)  # a real MLflow store, then cut to half its size as a full disk or a bad copy leaves it
    run = client.create_run(client.create_experiment("quickstart"))
    for i in range(200):
        client.log_metric(run.info.run_id, "train/loss", 1.0 / (i + 1), step=i)
    db = tmp_path / "mlflow.db"
    whole = db.read_bytes()
    db.write_bytes(whole[:len(whole) // 2])
    for args in (["report"], ["status"], ["run", str(SWEEPS / "quickstart.yaml"), "--dry-run"]):
        line = one_line_failure(*timed(*args, cwd=tmp_path))
        assert f"the MLflow store {uri} cannot be read: it is not a readable SQLite database" in line, line
        assert f"move {db} aside" in line
    assert db.read_bytes() == whole[:len(whole) // 2]  # never written to
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE samples (x)")
    line = one_line_failure(*timed("status", "--tracking-uri", f"sqlite:///{foreign}", cwd=tmp_path))
    assert "it is another program's SQLite database, not an MLflow store" in line


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_ray_address_where_nothing_answers_is_one_line_before_anything_is_written(tmp_path, how):
    address = f"127.0.0.1:{closed_port()}"
    args, env = (["--address", address], None) if how == "option" else ([], {"RAY_ADDRESS": address})
    line = one_line_failure(*timed("run", str(SWEEPS / "quickstart.yaml"), *args, cwd=tmp_path, env=env))
    assert line.startswith(f"error: no Ray cluster answers at {address}") and "connection refused" in line, line
    assert ("(from RAY_ADDRESS)" in line) == (how == "environment")
    assert not [p.name for p in tmp_path.iterdir() if p.name in WRITTEN]
