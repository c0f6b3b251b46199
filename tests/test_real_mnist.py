"""RRKD Table 1 on the official MNIST files, reduced to fit the suite, through `kd-sweep run`, `report`
and `record` as a researcher runs them: sweeps/rrkd_tables12_mnist_ssl.yaml with `--set` only.

Reduced: the first 30,000 training images (27,000 after the notebook's 90% split), 2,000 test images,
10 epochs for the AE-64 teachers (one per seed) and the students (the sweep: 54,000, 10,000 and 20),
seeds 0 and 1, and the two cells Table 1 compares (RRKD, and the AE-32 autoencoder at lr 1e-8, in
effect its random initial encoder under the same probe). About 90 s on 2 cores. At 12,000 images and
5 epochs RRKD did not yet clear the baseline (71.93 against 72.68): too short to test what Table 1 says.
"""
import io

import pandas as pd
from mlflow import MlflowClient

from .conftest import REAL_MNIST, SWEEPS, kd_sweep, needs_real_mnist

REDUCED = ["--set", f"dataset.root={REAL_MNIST}", "--set", "dataset.max_train=30000", "--set", "dataset.max_test=2000",
           "--set", "train.epochs=10", "--set", "teacher_train.epochs=10", "--set", "seeds=[0, 1]",
           "--set", "cells=[{method: rrkd}, {method: autoencoder, weight: 1.0e-7}]"]

# Measured on this reduced run (2026-12-07, torch 2.14.1, 2-core CPU; a teacher per seed, as the sweep file):
# teachers 84.10 ± 1.56, RRKD 77.18 ± 0.88, baseline 74.13 ± 0.60 (2 seeds; paper, full size: 87.99, 80.88,
# 74.14). Each floor is 3-4 points under the measured mean, far above chance (10%); RRKD's lead of 3.05
# must stay above 2.0, about 1.4 times the seeds' pooled spread (0.76) under it.
THRESHOLDS = {"teacher": 80.0, "rrkd": 75.0, "baseline": 71.0, "rrkd_over_baseline": 2.0}


@needs_real_mnist
def test_rrkd_on_the_official_mnist_learns_and_beats_its_lr_1e_8_baseline(tmp_path):
    res = kd_sweep("run", str(SWEEPS / "rrkd_tables12_mnist_ssl.yaml"), *REDUCED, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    csv = kd_sweep("report", "rrkd_tables12_mnist_ssl", "--paper", "--format", "csv", cwd=tmp_path)
    assert csv.returncode == 0, csv.stderr
    cells = pd.read_csv(io.StringIO(csv.stdout)).set_index("column")
    print(cells[["mean", "std", "n", "paper"]].to_string())
    teacher, rrkd = cells.loc["Teacher"], cells.loc["rrkd"]
    baseline = cells.loc["autoencoder weight=1e-07"]
    assert (rrkd["n"], baseline["n"], teacher["n"]) == (2, 2, 2)  # a teacher per seed
    assert teacher["mean"] >= THRESHOLDS["teacher"]
    assert rrkd["mean"] >= THRESHOLDS["rrkd"] and baseline["mean"] >= THRESHOLDS["baseline"]
    assert rrkd["mean"] - baseline["mean"] >= THRESHOLDS["rrkd_over_baseline"]
    assert (rrkd["paper"], baseline["paper"], teacher["paper"]) == (80.88, 74.14, 87.99)  # rrkd Table 1, attached

    # The RRKD students' training loss goes down over their epochs.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("rrkd_tables12_mnist_ssl").experiment_id
    students = client.search_runs([exp], "tags.`kd.role` = 'student' and tags.`kd.method` = 'rrkd'")
    assert len(students) == 2
    for r in students:
        loss = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "train/loss"), key=lambda m: m.step)]
        assert len(loss) == 10 and loss[-1] < 0.8 * loss[0] and loss[-1] <= min(loss[:5]), loss

    # The record of the run: its command as typed, and each published number against ours.
    rec = kd_sweep("record", "rrkd_tables12_mnist_ssl", cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    assert "- command: `kd-sweep run " + str(SWEEPS / "rrkd_tables12_mnist_ssl.yaml") in rec.stdout
    assert f"| rrkd Table 1 | rrkd (ae_encoder-128/ae_encoder-64), linear_top1 | {rrkd['mean']:.2f} ± " in rec.stdout
