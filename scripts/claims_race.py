"""Two identical sweeps (same configs, different names, one store) started 0.1 s apart, N times, on a
sqlite file and on an `mlflow server` over a real PostgreSQL: how many configs were trained twice.

    python scripts/claims_race.py [N]      (default 10; about 40 s a pair on 2 cores)

Each pair runs `kd-sweep run` as a user would (each driver its own Ray), a digits CoSS grid of a teacher
and four students (two λ x two seeds). Prints one line per pair and a total per store; exit 1 when any
config was trained twice.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import (digits_coss_sweep, free_port, mlflow_server, postgres_server, stop_server,  # noqa: E402
                            trained_counts)


def race(uri: str, folder: Path, i: int) -> tuple[int, int, float]:
    """(configs, configs trained more than once, wall seconds) of pair I."""
    names = [f"race{i}_a", f"race{i}_b"]  # one store: on the server, pairs differ by name
    # Each pair its own learning rate: configs no earlier pair finished (those would be linked, not raced).
    text = digits_coss_sweep("NAME", "[0, 0.5]", 3, seeds="[0, 1]").replace("lr: 0.05", f"lr: {0.05 + 0.001 * i:g}")
    for n in names:
        (folder / f"{n}.yaml").write_text(text.replace("name: NAME", f"name: {n}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    t0 = time.time()
    procs = []
    for n in names:
        procs.append(subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", f"{n}.yaml", "--tracking-uri",
                                       uri], cwd=folder, env={**env, "PYTHONPATH": str(REPO)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(0.1)
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"pair {i}: a sweep failed:\n" + "\n----\n".join(outs))
    count = trained_counts(mlflow.MlflowClient(uri), names)
    return len(count), sum(1 for c in count.values() if c > 1), time.time() - t0


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    twice_total = 0
    with tempfile.TemporaryDirectory() as d, postgres_server() as pg:
        folder = Path(d)
        server = mlflow_server(folder, port := free_port(), pg)
        try:
            for label, uri in (("sqlite", f"sqlite:///{folder}/mlflow.db"),
                               ("mlflow server over PostgreSQL", f"http://127.0.0.1:{port}")):
                twice = 0
                for i in range(n):
                    configs, dup, wall = race(uri, folder, i)
                    twice += dup
                    print(f"{label}: pair {i + 1}/{n}: {configs} configs, {dup} trained twice ({wall:.0f} s)", flush=True)
                print(f"{label}: {n} pairs started 0.1 s apart: {twice} configs trained twice", flush=True)
                twice_total += twice
        finally:
            stop_server(server)
    return 1 if twice_total else 0


if __name__ == "__main__":
    sys.exit(main())
