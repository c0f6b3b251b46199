"""Bad sweep files end with one line naming the file and the field, exit 2, and nothing started."""
import copy

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.spec import count_teachers, count_trials, load_sweep

from .conftest import SWEEPS

BASE = yaml.safe_load((SWEEPS / "quickstart.yaml").read_text())


def mutate(path: str, value=None, delete: bool = False) -> dict:
    raw = copy.deepcopy(BASE)
    node, keys = raw, path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


CASES = [
    # (what, raw sweep or text, field the line must name, words it must say)
    ("unknown top-level field", mutate("seedz", [0]), "seedz", "unknown field"),
    ("mistyped nested field", mutate("train.epoch", 3), "train.epoch", "unknown field"),
    ("wrong type", mutate("train.epochs", "many"), "train.epochs", "integer"),
    ("negative epochs", mutate("train.epochs", -1), "train.epochs", "greater than or equal to 0"),
    ("unknown method", mutate("method", "cosss"), "method", "unknown method 'cosss'"),
    ("unknown model", mutate("pairs.0.student.model", "resnet7"), "pairs.0.student.model", "unknown model"),
    ("unknown model option", mutate("pairs.0.student.hiden", [8]), "pairs.0.student", "no option 'hiden'"),
    ("unknown dataset", mutate("dataset.name", "cifar1000"), "dataset.name", "unknown dataset"),
    ("empty grid axis", mutate("grid.lambda", []), "grid.lambda", "empty grid axis"),
    ("unknown knob", mutate("grid", {"lamda": [0.5]}), "grid.lamda", "method 'coss' has no knob 'lamda'"),
    ("knob of wrong type", mutate("grid.lambda", [0.5, "big"]), "grid.lambda", "valid number"),
    ("negative knob", mutate("knobs.beta", -1.0), "knobs.beta", "greater than 0"),
    ("missing field", mutate("pairs", delete=True), "pairs", "required field is missing"),
    ("no pairs", mutate("pairs", []), "pairs", "at least 1"),
    ("CPU share under the minimum", mutate("resources.cpu", 0.1), "resources.cpu", "greater than or equal to 0.5"),
    ("unknown protocol", mutate("eval", ["linear", "knnn"]), "eval", "unknown protocol 'knnn'"),
    ("repeated seeds", mutate("seeds", [0, 0]), "seeds", "seeds repeat"),
    ("milestones out of order", mutate("train.milestones", [25, 20]), "train.milestones", "increasing order"),
    ("labels in the unsupervised setting", mutate("knobs.lambda_ce", 1.0), "method", "uses labels (lambda_ce 1)"),
    ("teacher logits in the unsupervised setting", mutate("knobs.lambda_kd", 0.5), "method", "teacher's logits"),
    ("unknown setting", mutate("setting", "semi"), "setting", "'supervised' or 'unsupervised'"),
    ("k above its pool", mutate("knobs.k", 40), "knobs", "k (40) cannot exceed k_pool (31)"),
    ("validation split too large", mutate("dataset.val_split", 0.8), "dataset.val_split", "less than or equal to 0.5"),
    ("unknown augmentation", mutate("dataset.augment", "rotate"), "dataset.augment", "'crop_flip'"),
    ("main stage with nothing to train", {**mutate("method", "ab"), "knobs": {}, "grid": {"margin": [1.0]}},
     "method", "nothing to train the student"),
    ("search mixed with a grid", {**BASE, "search": {"n_trials": 4, "space": {"beta": {"type": "float", "low": 0.5,
                                                                                      "high": 2}}}},
     "search", "cannot be mixed with grid axes or cells (lambda)"),
    ("search over several seeds", {**BASE, "grid": {}, "search": {"n_trials": 4, "space": {
        "lambda": {"type": "float", "low": 0, "high": 1}}}}, "seeds", "give one seed"),
    ("search over an unknown knob", {**BASE, "grid": {}, "seeds": [0], "scratch": False, "search": {
        "n_trials": 4, "space": {"lamda": {"type": "float", "low": 0, "high": 1}}}},
     "search.space.lamda", "no knob 'lamda' (did you mean 'lambda'?)"),
    ("search range upside down", {**BASE, "grid": {}, "seeds": [0], "search": {
        "n_trials": 4, "space": {"lambda": {"type": "float", "low": 1, "high": 0}}}},
     "search.space.lambda", "low < high"),
    ("search choice without values", {**BASE, "grid": {}, "seeds": [0], "search": {
        "n_trials": 4, "space": {"temperature": {"type": "choice"}}}}, "search.space.temperature", "needs `values`"),
    ("search value the knob refuses", {**BASE, "grid": {}, "seeds": [0], "scratch": False, "search": {
        "n_trials": 4, "space": {"beta": {"type": "float", "low": -1, "high": 1}}}},
     "search.space.beta", "greater than 0"),
    ("ASHA on a metric scored once", {**BASE, "scheduler": {"type": "asha", "metric": "eval/linear_top1"}},
     "scheduler.metric", "scored every epoch is eval/classifier_top1"),
    ("a scratch schedule with no scratch column", {**BASE, "scratch": False, "scratch_train": {"epochs": 1}},
     "scratch_train", "set scratch: true"),
    ("zero trials", {**BASE, "grid": {}, "seeds": [0], "search": {"n_trials": 0, "space": {
        "lambda": {"type": "float", "low": 0, "high": 1}}}}, "search.n_trials", "greater than or equal to 1"),
    ("image size on an in-memory dataset", mutate("dataset.image_size", 64), "dataset", "image_size is for datasets"
     " read from image files"),
    ("bad YAML", "name: x\npairs: [\n", "line", "not valid YAML"),
    ("not a mapping", "- just\n- a list\n", "", "YAML mapping"),
    # What once escaped validation (issue 14): each a traceback or a wasted run before.
    ("infinite lr", mutate("train.lr", float("inf")), "train.lr", "finite number"),
    ("infinite weight decay", mutate("train.weight_decay", float("inf")), "train.weight_decay", "finite number"),
    ("nan knob", mutate("knobs.beta", float("nan")), "knobs.beta", "finite number"),
    ("overlong name", mutate("name", "x" * 300), "name", "at most 100 characters"),
    ("a key given twice", (SWEEPS / "quickstart.yaml").read_text() + "\nseeds: [5]\n", "line",
     "key 'seeds' is given twice"),
    ("binary file", b"\x80\x81\xfe\xff" * 64, "", "not a text file"),
    ("deeply nested", "name: x\nseeds: " + "[" * 20000 + "]" * 20000 + "\n", "", "nests deeper"),
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)),
     "", "expands to more than"),
    ("a seed numpy cannot take", mutate("seeds", [10 ** 30]), "seeds", "0 to 2**32 - 1"),
    ("mocov2 on digits", mutate("dataset.augment", "mocov2"), "dataset", "'mocov2'"),
    ("a negative hidden width", mutate("pairs.0.student.hidden", [-1]), "pairs.0.student", "does not build"),
    ("a hidden width that is a word", mutate("pairs.0.student.hidden", "abc"), "pairs.0.student", "does not build"),
]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("what,raw,field,words", CASES, ids=[c[0] for c in CASES])
def test_bad_sweep_is_one_line_exit_2_and_nothing_started(what, raw, field, words, tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "bad.yaml"
    if isinstance(raw, bytes):
        f.write_bytes(raw)
    else:
        f.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    res = runner.invoke(app, ["run", str(f)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {f}: {field}"), lines[0]
    assert words in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no mlflow.db, no ray_results


def test_missing_dataset_says_where_and_how(tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(SWEEPS / "lambda_ablation.yaml"), "--set", f"dataset.root={tmp_path}/none"])
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert "lambda_ablation.yaml: dataset: CIFAR-100 not found" in line
    assert f"{tmp_path}/none/cifar-100-python" in line and "download: true" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_teacher_checkpoint_names_the_pair(tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--set", "pairs.0.teacher.checkpoint=nope.pth"])
    assert res.exit_code == 2
    assert "pairs.0.teacher.checkpoint" in res.stderr and "nope.pth does not exist" in res.stderr


def test_gpu_sweep_on_cpu_cluster_is_refused_before_any_trial(tmp_path, monkeypatch, runner):
    """A trial asking for a GPU the cluster lacks would wait forever: refuse it with what to change."""
    from orchestrator.runner import _init_ray

    sweep = load_sweep(SWEEPS / "quickstart.yaml", ["resources.gpu=1"])
    with pytest.raises(Exception) as e:
        _init_ray(None, sweep, "q.yaml")
    assert "resources.gpu" in str(e.value) and "--set resources.gpu=0" in str(e.value)


@pytest.mark.parametrize("setting,words", [
    ("seeds.0.x=1", "--set seeds.0.x: seeds.0 is a value, not a mapping"),
    ("name=[unclosed", "--set name: not valid YAML:"),
    ("train.epochs.x=1", "--set train.epochs.x: train.epochs is not a mapping"),
])
def test_bad_set_is_one_line(setting, words, tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--set", setting])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert words in res.stderr, res.stderr


@pytest.mark.parametrize("content,words", [(None, "is a folder"), (b"", "is empty"),
                                           (b"not a checkpoint\n", "is not a")])
def test_a_teacher_checkpoint_that_is_no_checkpoint(content, words, tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "t.pth"
    ckpt.mkdir() if content is None else ckpt.write_bytes(content)
    res = runner.invoke(app, ["run", str(SWEEPS / "quickstart.yaml"), "--set", f"pairs.0.teacher.checkpoint={ckpt}"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "pairs.0.teacher.checkpoint" in res.stderr and words in res.stderr, res.stderr


def test_set_overrides_and_counts():
    sweep = load_sweep(SWEEPS / "quickstart.yaml", ["seeds=[0, 1, 2]", "grid.lambda=[0.5]", "train.epochs=1"])
    assert sweep.seeds == [0, 1, 2] and sweep.grid == {"lambda": [0.5]} and sweep.train.epochs == 1
    assert count_trials(sweep) == 1 * 3 + 3  # one cell x 3 seeds, plus the from-scratch student x 3 seeds


def test_set_reaches_into_model_shorthand(tmp_path, monkeypatch, runner):
    sweep = load_sweep(SWEEPS / "lambda_ablation.yaml", ["pairs.1.teacher.checkpoint=ckpt.pth"])
    assert sweep.pairs[1].teacher.model == "resnet56" and sweep.pairs[1].teacher.checkpoint == "ckpt.pth"
    assert sweep.pairs[0].teacher.checkpoint is None


def test_method_axis_with_knobs_of_one_method(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump({**BASE, "setting": "supervised", "grid": {"method": ["coss", "none"]},
                                 "knobs": {"lambda_ce": 0.5, "coss": {"lambda": 0.25, "beta": 2.0}}}))
    sweep = load_sweep(f)
    assert sweep.knobs_for("coss", {"method": "coss"}) == {"lambda_ce": 0.5, "lambda": 0.25, "beta": 2.0}
    assert sweep.knobs_for("none", {"method": "none"}) == {"lambda_ce": 0.5}
    f.write_text(yaml.safe_dump({**BASE, "setting": "supervised", "grid": {"method": ["coss", "none"]},
                                 "knobs": {"coss": {"lamda": 0.25}}}))
    with pytest.raises(Exception, match=r"knobs.coss.lamda: method 'coss' has no knob 'lamda'"):
        load_sweep(f)
    f.write_text(yaml.safe_dump({**BASE, "setting": "supervised", "grid": {"method": ["coss", "none"]},
                                 "knobs": {"beta": 2.0}}))  # beta is CoSS's alone: not shared by `none`
    with pytest.raises(Exception, match=r"knobs.beta: method 'none' has no knob 'beta'"):
        load_sweep(f)


def test_every_sweep_file_validates():
    for f in sorted(SWEEPS.glob("*.yaml")):
        sweep = load_sweep(f)
        assert count_trials(sweep) + count_teachers(sweep) > 0, f
