"""Trial expansion and the keys that decide reuse."""
from orchestrator.spec import load_sweep
from orchestrator.trials import student_trials, teacher_trial

from .conftest import SWEEPS

DATA = {"name": "cifar100", "root": "/a", "download": False, "verify_checksum": True, "augment": None,
        "val_split": 0.0, "val_seed": 0, "fingerprint": "f"}


def test_teachers_sweep_trains_what_the_lambda_ablation_needs():
    teachers = load_sweep(SWEEPS / "teachers_cifar100.yaml")
    ablation = load_sweep(SWEEPS / "lambda_ablation.yaml")
    made = {teacher_trial(teachers, p.teacher, DATA, None)["config_hash"] for p in teachers.pairs}
    moved = dict(DATA, root="/elsewhere", download=True)  # where the data lies does not matter
    needed = {teacher_trial(ablation, p.teacher, moved, None)["config_hash"] for p in ablation.pairs}
    assert needed <= made and len(made) == 5
    assert student_trials(teachers, DATA, {}) == []


def test_what_changes_the_keys():
    sweep = load_sweep(SWEEPS / "lambda_ablation.yaml")
    base = teacher_trial(sweep, sweep.pairs[0].teacher, DATA, None)
    other_eval = load_sweep(SWEEPS / "lambda_ablation.yaml", ["eval.knn.k=20"])
    rescored = teacher_trial(other_eval, other_eval.pairs[0].teacher, DATA, None)
    assert rescored["weights_hash"] == base["weights_hash"] and rescored["config_hash"] != base["config_hash"]
    other_data = teacher_trial(sweep, sweep.pairs[0].teacher, dict(DATA, fingerprint="g"), None)
    assert other_data["weights_hash"] != base["weights_hash"]
    flipped = teacher_trial(sweep, sweep.pairs[0].teacher, dict(DATA, augment="flip"), None)
    assert flipped["weights_hash"] != base["weights_hash"]
    given = teacher_trial(sweep, sweep.pairs[0].teacher, DATA, "abc123")
    assert given["weights_hash"] != base["weights_hash"] and given["train"]["epochs"] == 0
    trials = student_trials(sweep, DATA, {0: "T0", 1: "T1"})
    assert len(trials) == 24 and len({t["config_hash"] for t in trials}) == 24
    more_seeds = load_sweep(SWEEPS / "lambda_ablation.yaml", ["resources.gpu=0.5"])
    assert [t["config_hash"] for t in student_trials(more_seeds, DATA, {0: "T0", 1: "T1"})] == \
        [t["config_hash"] for t in trials]  # resources do not change results


def test_torchvision_teachers_train_phase_comes_first():
    """A teacher of torchvision `weights:` with 0 epochs makes its weights in its own trial: it must not be
    deferred into the students' Tuner, whose trials need those weights (a KeyError in every student)."""
    from orchestrator.runner import scoring_only
    from orchestrator.trials import evaluate_only, teacher_trial

    sweep = load_sweep(SWEEPS / "miles_table6_imagenet.yaml")
    dataset = {"name": "imagenet", "root": "/data", **sweep.dataset.loader_args(), "fingerprint": "f"}
    cfg = teacher_trial(sweep, sweep.pairs[0].teacher, dataset, None)
    assert cfg["train"]["epochs"] == 0 and not scoring_only([cfg], {})
    given = evaluate_only(cfg)  # weights an earlier sweep trained, fetched by the driver
    assert scoring_only([given], {cfg["weights_hash"]: {}}) and not scoring_only([], {})


def test_teacher_per_seed_gives_each_seed_its_own_teacher_and_leaves_seed_0_as_it_was(tmp_path):
    """RRKD's notebook trains a teacher for each of its seeds: with `teacher_per_seed`, the student of seed
    s learns from the teacher trained with seed s; seed 0's teacher is the one-teacher sweep's (reused)."""
    from orchestrator.preflight import preflight
    from trainables.datasets.synthetic import write_mnist

    write_mnist(tmp_path, 64, 16)
    sets = [f"dataset.root={tmp_path}", "dataset.verify_checksum=false", "dataset.train_split=1.0"]
    path = SWEEPS / "rrkd_tables12_mnist_ssl.yaml"
    per_seed = preflight(load_sweep(path, sets), str(path), str(SWEEPS))
    one = preflight(load_sweep(path, [*sets, "teacher_per_seed=false"]), str(path), str(SWEEPS))
    assert [t["seed"] for t in per_seed.teachers] == [0, 1, 2] and [t["seed"] for t in one.teachers] == [0]
    assert len({t["weights_hash"] for t in per_seed.teachers}) == 3
    assert per_seed.teachers[0]["weights_hash"] == one.teachers[0]["weights_hash"]
    assert [t["labels"]["run"] for t in per_seed.teachers] == \
        ["teacher ae_encoder-128", "teacher ae_encoder-128 · s1", "teacher ae_encoder-128 · s2"]
    by_seed = {t["seed"]: t["weights_hash"] for t in per_seed.teachers}
    distilled = [s for s in per_seed.students if s["teacher"]]
    assert distilled and all(s["teacher"]["hash"] == by_seed[s["seed"]] for s in distilled)
    same = {s["config_hash"] for s in one.students if s["seed"] == 0}
    assert same == {s["config_hash"] for s in per_seed.students if s["seed"] == 0}  # seed 0: reused
    # The baselines without a teacher are the same trials either way.
    alone = lambda plan: {s["config_hash"] for s in plan.students if not s["teacher"]}  # noqa: E731
    assert alone(per_seed) == alone(one)
    assert "teacher_per_seed" not in load_sweep(path, [*sets, "teacher_per_seed=false"]).model_dump()
