"""Packing: students that share a teacher forward train in one trial and get exactly the numbers they
get alone; a diverging student fails alone; a pack resumes from its checkpoint; and the planner
groups only what may share a trial."""
import copy
import json

import pytest
import torch
import yaml

from orchestrator import packing
from orchestrator.runner import preflight
from orchestrator.spec import SpecError, load_sweep
from trainables.datasets import load_dataset
from trainables.trial import NonFiniteLoss, fit, fit_pack, make_model

TIMING = ("train/images_per_s", "train/epoch_s", "cost/wall_s")  # the only numbers packing may change


def _plan(tmp_path, **over):
    """Four methods on one teacher (an MLP student with dropout: the global RNG is drawn every step)."""
    spec = {"name": "packs", "dataset": {"name": "digits"},
            "pairs": [{"teacher": {"model": "mlp", "hidden": [64]},
                       "student": {"model": "mlp", "hidden": [32], "dropout": 0.3}}],
            "method": "kd",
            "cells": [{"method": "kd", "lambda_kd": 1.0, "lambda_ce": 1.0}, {"method": "crd", "nce_k": 64},
                      {"method": "coss", "lambda": 0.5}, {"method": "fitnet"}],
            "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": [2]},
            "eval": {"knn": {"k": 5}, "linear": {"epochs": 3, "milestones": [2]}}, **over}
    path = tmp_path / "packs.yaml"
    path.write_text(yaml.safe_dump(spec))
    return preflight(load_sweep(path, []), str(path), str(tmp_path))


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return _plan(tmp_path_factory.mktemp("packs"))


@pytest.fixture(scope="module")
def teacher(plan):
    data = load_dataset("digits", "", download=False)
    torch.manual_seed(7)
    return make_model(plan.students[0]["teacher"], data, with_head=True).state_dict()


def alone(cfg, teacher, resume=None):
    got = []
    fit(cfg, lambda m, s, f: got.append((m, copy.deepcopy(s), f)), teacher, resume)
    return got


def packed(cfgs, teacher, resumes=None):
    got = []
    fit_pack(cfgs, lambda e, out: got.append((e, copy.deepcopy(out))), teacher, resumes)
    return got


def assert_same(mine: dict, theirs: dict):
    keys = set(theirs) - set(TIMING)
    assert keys == set(mine) - set(TIMING)
    for k in keys:
        assert mine[k] == pytest.approx(theirs[k], rel=1e-6, abs=1e-6), k


def test_a_pack_gives_each_student_its_numbers_alone(plan, teacher):
    cfgs = plan.students
    assert len({c["method"] for c in cfgs}) == 4 and len({c["config_hash"] for c in cfgs}) == 4
    solo = {c["config_hash"]: alone(c, teacher) for c in cfgs}
    pack = packed(cfgs, teacher)
    assert [e for e, _ in pack] == [1, 2, 3]
    for epoch, out in pack:
        assert set(out) == set(solo)
        for key, r in out.items():
            metrics, _, model = solo[key][epoch - 1]
            assert r.failed is None
            assert_same(r.metrics, metrics)
            assert (r.final_model is None) == (model is None)
    for key, r in pack[-1][1].items():
        final = solo[key][-1][2]
        assert "eval/linear_top1" in r.metrics and "eval/knn_top1" in r.metrics
        for name, w in final.items():
            assert torch.allclose(r.final_model[name], w, atol=1e-6), (key, name)
    # Each student's cost is its share of the pack's time, not the whole of it.
    total = sum(r.metrics["cost/wall_s"] for r in pack[-1][1].values())
    assert total == pytest.approx(max(r.metrics["cost/wall_s"] for r in pack[-1][1].values()) * 4, rel=0.5)


def test_a_diverging_student_fails_alone_and_the_others_go_on(plan, teacher):
    kd, coss = copy.deepcopy(plan.students[0]), plan.students[2]
    kd["train"] = {**kd["train"], "lr": 1e12}
    kd["config_hash"] = "diverges"
    with pytest.raises(NonFiniteLoss) as e:
        alone(kd, teacher)
    pack = packed([kd, coss], teacher)
    assert [ep for ep, _ in pack] == [1, 2, 3]
    failed = [out["diverges"] for _, out in pack]
    assert all(r.failed == str(e.value) and r.failed_epoch == e.value.epoch and r.state is None for r in failed)
    solo = alone(coss, teacher)
    for (_, out), (metrics, _, _) in zip(pack, solo):
        assert_same(out[coss["config_hash"]].metrics, metrics)


def test_a_pack_resumes_from_its_checkpoint_as_if_never_stopped(plan, teacher):
    cfgs = [plan.students[0], plan.students[2]]  # no per-step draws of the global RNG after a resume
    cfgs = [{**c, "student": {"model": "mlp", "options": {"hidden": [32]}}} for c in cfgs]
    cfgs = [{**c, "config_hash": f"h{i}"} for i, c in enumerate(cfgs)]
    full = packed(cfgs, teacher)
    states = {k: r.state for k, r in full[0][1].items()}  # killed after epoch 1
    resumed = packed(cfgs, teacher, copy.deepcopy(states))  # the optimiser adopts the momentum tensors
    assert [e for e, _ in resumed] == [2, 3]
    for (_, a), (_, b) in zip(full[1:], resumed):
        for k in a:
            assert_same(b[k].metrics, a[k].metrics)
    # A student that failed before the checkpoint fails again at once, without training.
    again = packed(cfgs, teacher, {"h0": {"failed": "loss is not finite at epoch 1, step 3", "epoch": 1},
                                   "h1": states["h1"]})
    assert all(out["h0"].failed.startswith("loss is not finite") for _, out in again)
    assert_same(again[-1][1]["h1"].metrics, full[-1][1]["h1"].metrics)


def _cfg(i: int, **over) -> dict:
    cfg = {"role": "student", "teacher": {"model": "t", "hash": "T"}, "dataset": {"name": "digits"}, "seed": 0,
           "train": {"batch_size": 64, "epochs": 3}, "resources": {"cpu": 1, "gpu": 0}, "method": "kd",
           "knobs": {}, "config_hash": f"{i:016x}", "name": f"s{i}"}
    for k, v in over.items():
        cfg[k] = v
    return cfg


def test_the_planner_packs_only_students_that_can_share_a_teacher_forward():
    lam = [_cfg(i) for i in range(6)]
    units = packing.plan(lam, "auto", slots=2)
    assert [len(u["pack"]) for u in units] == [3, 3]  # both slots busy, then as few trials as that allows
    assert [c["name"] for u in units for c in u["pack"]] == [c["name"] for c in lam]  # grid order kept
    assert [len(u["pack"]) for u in packing.plan(lam, 4, slots=2)] == [3, 3]  # near-equal packs of at most 4
    assert [len(u["pack"]) for u in packing.plan(lam, "auto", slots=1)] == [6]
    assert [len(u["pack"]) for u in packing.plan(lam, "auto", slots=1, room=lambda c: 2)] == [2, 2, 2]
    assert packing.plan(lam, "auto", slots=6) == lam  # a slot each: packing would only take longer
    assert packing.plan(lam, "off", slots=1) == lam
    apart = [_cfg(0), _cfg(1, seed=1), _cfg(2, teacher={"model": "t", "hash": "U"}),
             _cfg(3, train={"batch_size": 32, "epochs": 3}), _cfg(4, role="scratch", teacher=None),
             _cfg(5, method="coss", knobs={"k": 4}), _cfg(6, resume_from="/ckpt/a")]
    assert packing.plan(apart, 8, slots=1) == apart  # no two of these share batches and a teacher
    # CoSS's neighbours decide its batches: equal k packs, other k not; lambda and method may differ.
    mixed = [_cfg(0, method="coss", knobs={"k": 4, "lambda": 1}), _cfg(1, method="coss", knobs={"k": 4, "lambda": 2}),
             _cfg(2, method="coss", knobs={"k": 8}), _cfg(3, method="coss"), _cfg(4, method="kd")]
    units = packing.plan(mixed, 8, slots=1)
    assert sorted(sorted(c["name"] for c in u["pack"]) if "pack" in u else [u["name"]] for u in units) == \
        [["s0", "s1"], ["s2"], ["s3", "s4"]]
    pack = next(u for u in units if "pack" in u and u["pack"][0]["name"] == "s3")
    assert pack["name"].startswith("pack2_mixed_s0_")


def test_the_memory_estimate_grows_with_the_batch_and_caps_the_pack(plan):
    data = load_dataset("digits", "", download=False)
    cfg = plan.students[0]
    small = packing.student_bytes({**cfg, "train": {**cfg["train"], "batch_size": 64}}, data)
    large = packing.student_bytes({**cfg, "train": {**cfg["train"], "batch_size": 128}}, data)
    weights = sum(p.numel() * 4 for p in make_model(cfg["student"], data, with_head=True).parameters())
    activations = small - 3 * weights
    assert activations > 0 and large - 3 * weights == pytest.approx(2 * activations, rel=0.01)
    room = packing.room_by_memory(data, budget=int(10.5 * small / packing.MEMORY_USE))
    assert room(cfg) == 10


def test_pack_in_the_sweep_file(tmp_path):
    assert load_sweep(_write(tmp_path, pack="off"), []).pack == "off"  # YAML's bare off is false
    assert load_sweep(_write(tmp_path, pack=4), []).pack == 4
    for bad, field in ((0, "pack"), ("some", "pack")):
        with pytest.raises(SpecError) as e:
            load_sweep(_write(tmp_path, pack=bad), [])
        assert e.value.field == field
    with pytest.raises(SpecError) as e:
        load_sweep(_write(tmp_path, pack=4, grid={}, search={"n_trials": 2, "space": {"lambda_kd": {
            "type": "float", "low": 0.1, "high": 1}}}), [])
    assert e.value.field == "pack" and "search" in e.value.msg


def _write(tmp_path, **over):
    spec = {"name": "p", "dataset": {"name": "digits"}, "pairs": [{"teacher": "mlp", "student": "mlp"}],
            "method": "kd", "grid": {"lambda_kd": [0.5, 1.0]}, **over}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec).replace("pack: 'off'", "pack: off"))
    return path


def test_checkpoints_of_packs_are_found_per_student(tmp_path):
    from orchestrator.resume import latest_checkpoints

    for trial, epoch, info in (("pack2_x", 1, {"members": ["a", "b"]}), ("pack2_x", 2, {"members": ["a", "b"]}),
                               ("single", 3, {"config_hash": "c"})):
        ck = tmp_path / "sw-1234-1" / trial / f"checkpoint_{epoch:06d}"
        ck.mkdir(parents=True)
        torch.save({"epoch": epoch}, ck / "state.pt")  # a whole archive: damaged ones are passed over
        (ck / "epoch.json").write_text(json.dumps({"epoch": epoch, **info}))
    found = latest_checkpoints(str(tmp_path), "sw-1234")
    assert {k: e for k, (e, _) in found.items()} == {"a": 2, "b": 2, "c": 3}
    assert found["a"][1] == found["b"][1] and found["a"][1].endswith("checkpoint_000002")


def test_a_packed_sweep_logs_every_student_and_matches_the_same_sweep_unpacked(tmp_path):
    from mlflow import MlflowClient

    from .conftest import digits_coss_sweep, kd_sweep

    (tmp_path / "s.yaml").write_text(digits_coss_sweep("packed", "[0.5, 1.0, 2.0]", 3, pack=3, seeds="[0, 1]"))
    res = kd_sweep("run", "s.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "packed 6 students into 2 trial(s) of 3/3" in res.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("packed").experiment_id

    def students(parent_id):
        runs = client.search_runs([exp], f"tags.`kd.role` = 'student' and tags.`mlflow.parentRunId` = '{parent_id}'")
        return {r.data.tags["kd.config_hash"]: r for r in runs}

    parents = client.search_runs([exp], "tags.`kd.role` = 'sweep'", order_by=["attributes.start_time ASC"])
    packed = students(parents[0].info.run_id)
    assert len(packed) == 6
    packs = {r.data.tags["kd.pack"] for r in packed.values()}
    assert len(packs) == 2 and all(p.startswith("pack3_coss_s") for p in packs)
    for r in packed.values():
        assert r.info.status == "FINISHED" and r.data.tags["kd.state"] == "done" and r.data.tags["kd.pack_size"] == "3"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [1, 2, 3]
        weights = torch.load(client.download_artifacts(r.info.run_id, "student/model.pt", str(tmp_path)),
                             weights_only=True)
        assert "fc.weight" not in weights and any(k.endswith("weight") for k in weights)  # the headless student's
    # Unpacked, the same six trials give the same numbers (--rerun: run again, not linked to the packed ones).
    res = kd_sweep("run", "s.yaml", "--set", "pack=off", "--rerun", cwd=tmp_path)
    assert res.returncode == 0 and "students into" not in res.stdout, res.stdout + res.stderr
    assert "sweep packed: 6 trials to run" in res.stdout
    parents = client.search_runs([exp], "tags.`kd.role` = 'sweep'", order_by=["attributes.start_time ASC"])
    apart = students(parents[-1].info.run_id)
    assert set(apart) == set(packed) and all("kd.pack" not in r.data.tags for r in apart.values())
    assert all(r.data.tags["kd.state"] == "done" for r in apart.values())
    for h, r in apart.items():
        for k in ("eval/knn_top1", "train/loss", "train/ss", "train/co"):
            assert packed[h].data.metrics[k] == pytest.approx(r.data.metrics[k], rel=1e-6), (h, k)


def test_a_trial_finds_its_state_in_either_checkpoint_layout():
    from trainables.tune_trial import member_state

    single = {"epoch": 2, "student": {}}
    pack = {"members": {"a": {"epoch": 2, "student": {}}, "b": {"failed": "loss is not finite", "epoch": 1}}}
    assert member_state(single, {"config_hash": "a"}) is single
    assert member_state(pack, {"config_hash": "a"}) is pack["members"]["a"]
    assert member_state(pack, {"config_hash": "b"})["failed"] == "loss is not finite"
    assert member_state(pack, {"config_hash": "c"}) is None  # not in that pack: it starts afresh
