"""Searches beyond grids: Optuna samples the asked number of trials through Ray Tune, ASHA stops some
early, and the report ranks them and says which knob mattered."""
import math

import pandas as pd
from mlflow import MlflowClient

from results.search import importances, trials_frame

from .conftest import kd_sweep

SWEEP = """\
name: kdsearch
dataset: {name: digits}
pairs:
  - teacher: {model: mlp, hidden: [64]}
    student: {model: mlp, hidden: [32]}
method: kd
search:
  n_trials: 6
  max_concurrent: 2
  metric: eval/knn_top1
  space:
    T: {type: float, low: 1, high: 8, log: true}
    weight: {type: float, low: 0.1, high: 0.9}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
seeds: [0]
train: {epochs: 4, batch_size: 64, lr: 0.05, milestones: []}
teacher_train: {epochs: 2, batch_size: 64, lr: 0.05, milestones: []}
eval:
  knn: {k: 10, temperature: 0.07}
  classifier: {}
resources: {cpu: 1, gpu: 0}
"""


def test_optuna_search_with_asha_runs_the_asked_trials_and_stops_some_early(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    res = kd_sweep("run", "s.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "search kdsearch: 6 trials to run (optuna, 2 at a time)" in res.stdout

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("kdsearch")
    runs = client.search_runs([exp.experiment_id], "tags.`kd.role` = 'student'")
    assert len(runs) == 6
    cells = [r.data.tags["kd.cell"] for r in runs]
    assert len(set(cells)) == 6  # six different samples
    epochs = {r.info.run_id: max(m.step for m in client.get_metric_history(r.info.run_id, "cost/wall_s"))
              for r in runs}
    early = [r for r in runs if r.data.tags["kd.state"] == "stopped_early"]
    done = [r for r in runs if r.data.tags["kd.state"] == "done"]
    assert early and done and len(early) + len(done) == 6
    assert all(epochs[r.info.run_id] < 4 and r.info.status == "KILLED" for r in early)
    assert all(epochs[r.info.run_id] == 4 and "eval/knn_top1" in r.data.metrics for r in done)
    for r in runs:  # every sampled knob inside its range, and the trial ran with it
        assert 1 <= float(r.data.params["knobs.T"]) <= 8 and 0.1 <= float(r.data.params["knobs.weight"]) <= 0.9

    rep = kd_sweep("report", "kdsearch", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    rows = [ln for ln in rep.stdout.splitlines() if ln.startswith("|")][2:]  # after the header and rule
    assert len(rows) == 6 and rows[0].startswith("| 1 ") and "**" in rows[0]
    best = max(r.data.metrics["eval/knn_top1"] for r in done)
    assert f"**{best:.4g}**" in rows[0]
    assert f"6 of 6 trials ({len(done)} finished)" in rep.stdout


def test_importance_ranks_the_knob_that_decides_the_metric():
    spec = {"mode": "max", "space": {"lr_like": {"type": "float", "low": 0.0, "high": 1.0},
                                    "noise": {"type": "choice", "values": ["a", "b"]}}}
    rows = []
    for i in range(24):
        x = (i * 7 % 24) / 23
        rows.append({"role": "student", "status": "FINISHED", "run_id": f"{i:08d}",
                     "cell": {"lr_like": x, "noise": "ab"[i % 2]}, "eval/knn_top1": 100 * x})
    frame = trials_frame(pd.DataFrame(rows), spec, "eval/knn_top1")
    assert frame["eval/knn_top1"].tolist() == sorted(frame["eval/knn_top1"], reverse=True)
    imp = importances(frame, spec, "eval/knn_top1")
    assert set(imp) == {"lr_like", "noise"} and imp["lr_like"] > 0.9 and math.isclose(sum(imp.values()), 1.0)
    assert importances(frame.head(2), spec, "eval/knn_top1") == {}  # too few to say


def test_a_continued_search_tells_the_sampler_what_was_found_and_samples_elsewhere():
    import yaml
    from optuna.trial import TrialState

    from orchestrator.search import search_space, searcher
    from orchestrator.spec import Sweep

    sweep = Sweep.model_validate(yaml.safe_load(SWEEP))
    done = [({"T": 2.0, "weight": 0.5}, 97.0), ({"T": 4.0, "weight": 0.7}, 98.0)]
    limiter = searcher(sweep, done)
    assert limiter.set_search_properties(None, None, {"trial": {"x": 1}, "search": search_space(sweep)})
    study = limiter.searcher._ot_study
    told = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted((t.params["search/T"], t.value) for t in told) == [(2.0, 97.0), (4.0, 98.0)]
    new = [limiter.suggest(f"t{i}")["search"] for i in range(2)]  # max_concurrent 2
    assert all(1 <= c["T"] <= 8 and 0.1 <= c["weight"] <= 0.9 for c in new)
    assert not any(c == p for c in new for p, _ in done)
    assert limiter.suggest("t2") is None  # a third waits for one of the two running to finish
