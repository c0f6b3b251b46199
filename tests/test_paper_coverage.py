"""Every published number of a paper sweep reaches the printed table, through the real path.

For each sweep file with a `paper:` block: its trials are planned by the functions `kd-sweep run` plans
them with, logged to an MLflow store by the same Tune callback and parent-run tags, finished with a
value for each metric their `eval` block scores; then `kd-sweep report NAME --paper`, with the flags
README.md's reproduction table gives for that file, prints the table. The published numbers printed
(the `↳ paper` rows) must be every published row of the file's tables and pairs, over the metrics
those rows use. Nothing here writes a label by hand: a mismatch between what runs log and how
published rows are keyed fails it.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.resume import sweep_key
from orchestrator.runner import parent_tags
from orchestrator.spec import load_sweep
from orchestrator.trials import student_trials, teacher_trial
from results.compare import in_scope
from results.published import load_published
from trainables.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p for p in (ROOT / "sweeps").glob("*.yaml") if load_sweep(p).paper is not None)
PROTOCOL_METRICS = {"linear": ["linear_top1", "linear_top5"], "knn": ["knn_top1"], "classifier": ["classifier_top1"]}


def readme_reports() -> dict[str, list[str]]:
    """sweep name -> the arguments of README's `kd-sweep report` command for it (reproduction table)."""
    out = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\|[^|]*\| `kd-sweep run sweeps/([^`]+)\.yaml` \| `kd-sweep report ([^`]+)` \|", line)
        if not m:
            continue
        names, args = expand(m.group(1)), shlex.split(m.group(2))
        for name in names:  # one print command stands for every file of its row
            out[name] = [name if a in names else a for a in args]
    return out


def expand(pattern: str) -> list[str]:
    """`rrkd_table3_{cifar10,svhn}` -> both names; `a{,_b}` -> a, a_b."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if not m:
        return [pattern]
    return [n for alt in m.group(1).split(",") for n in expand(pattern[:m.start()] + alt + pattern[m.end():])]


def fake_value(cfg: dict, metric: str) -> float:
    """Distinct, seed-dependent, in range: the test counts numbers, it does not judge them."""
    return 40.0 + (int(cfg["config_hash"][:4], 16) % 400) / 10 + cfg["seed"] * 0.3 + len(metric) * 0.01


def log_sweep(sweep, uri: str) -> None:
    """What `kd-sweep run` leaves in the store for this sweep, every trial finished."""
    from orchestrator.tracking import Store, make_callback

    dataset = {"name": sweep.dataset.name, "root": "/data", **sweep.dataset.loader_args(), "fingerprint": "f"}
    teachers, pair_teacher = {}, {}
    for i, pair in enumerate(sweep.pairs):
        cfg = teacher_trial(sweep, pair.teacher, dataset, "given" if pair.teacher.checkpoint else None)
        teachers.setdefault(cfg["config_hash"], cfg)
        pair_teacher[i] = cfg["weights_hash"]
    students = student_trials(sweep, dataset, pair_teacher)
    store = Store(uri)
    exp = store.experiment(sweep.name)
    raw = sweep.model_dump(mode="json", by_alias=True)
    parent = store.start_parent(exp, sweep.name, "", len(students),
                                {**parent_tags(sweep, False), "kd.sweep_key": sweep_key(raw, False)})
    callback = make_callback(store, exp, parent, None, {"kd.smoke": "false"})
    for cfg in [*teachers.values(), *students]:
        epochs = cfg["train"]["epochs"]
        result = {"epoch": epochs, **{f"eval/{m}": fake_value(cfg, m) for p in cfg["eval"]
                                      for m in PROTOCOL_METRICS[p]}}
        trial = SimpleNamespace(config={"trial": cfg}, checkpoint=None, last_result=result)
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, result)
        callback.on_trial_complete(0, [], trial)
    teacher_runs = {c["weights_hash"]: store.find_teacher("config_hash", c["config_hash"]).info.run_id
                    for c in teachers.values()}
    store.client.set_tag(parent, "kd.teacher_runs", json.dumps(teacher_runs, sort_keys=True))
    store.finish(parent)


def printed_paper_numbers(text: str) -> int:
    """How many published numbers the md table prints: the filled cells of its `↳ paper` rows."""
    return sum(1 for line in text.splitlines() if line.startswith("| ↳ paper")
               for x in line.strip().strip("|").split("|")[1:] if x.strip())


@pytest.fixture(scope="module")
def reports():
    return readme_reports()


def test_every_paper_sweep_has_a_report_command_in_the_readme(reports):
    assert SWEEPS, "no sweep file declares `paper:`"
    missing = [p.stem for p in SWEEPS if p.stem not in reports or "--paper" not in reports[p.stem]]
    assert not missing, f"README's reproduction table has no `kd-sweep report NAME --paper` for {missing}"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_published_number_is_printed(path, reports, tmp_path):
    sweep = load_sweep(path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_sweep(sweep, uri)
    scope = json.loads(parent_tags(sweep, False)["kd.paper"])
    rows = in_scope(load_published(), scope, sweep.dataset.name)
    assert len(rows), f"{path.name}: no published row of {scope['tables']} for its pairs on {sweep.dataset.name}"
    # The papers' rows of methods kd-sweep does not implement (CoSS's ImageNet SEED, BINGO, DisCo) cannot be
    # run: the report must say so, and everything else must be printed.
    foreign = rows[~rows["method"].isin([*METHODS.names(), "teacher", "scratch"])]
    rows = rows.drop(foreign.index)
    args = list(reports[path.stem])
    if "--plot" in args:  # README's figure goes to this test's folder, not the working directory
        args[args.index("--plot") + 1] = str(tmp_path / "figure.png")
    metric = args[args.index("--metric") + 1] if "--metric" in args else "linear_top1"
    printed = 0
    for m in dict.fromkeys([metric, *rows["metric"]]):  # README's command, then any other metric of the table
        run = args if m == metric else _without_plot(args)  # README's figure is of its own metric
        res = CliRunner().invoke(app, ["report", *_with_metric(run, m), "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        printed += printed_paper_numbers(res.stdout)
        if m == metric:
            first = res.stdout
    total = len(rows) + len(foreign)
    assert f"Published numbers shown: {int((rows['metric'] == metric).sum())} of {total}" in first, first
    # A teacher's number stands beside every pair it teaches, a from-scratch student's beside every pair
    # it is the student of.
    pairs = json.loads(parent_tags(sweep, False)["kd.paper"])["pairs"]
    cells = sum(sum(p["teacher"] == r["pair"] for p in pairs) if r["method"] == "teacher" else
                len({p["pair"] for p in pairs if r["pair"] in (p["student"], p["pair"])}) if r["method"] == "scratch"
                else 1 for _, r in rows.iterrows())
    assert printed == cells, f"{path.name}: {printed} of {cells} published cells printed\n{first}"
    for _, row in foreign[foreign["metric"] == metric].iterrows():
        assert f"{row['method']} is not implemented in kd-sweep" in first
    for d in sweep.paper.deviations:
        assert f"- {d}" in first


def _without_plot(args: list[str]) -> list[str]:
    if "--plot" not in args:
        return args
    i = args.index("--plot")
    return args[:i] + args[i + 2:]


def _with_metric(args: list[str], metric: str) -> list[str]:
    args = list(args)
    if "--metric" in args:
        args[args.index("--metric") + 1] = metric
    else:
        args += ["--metric", metric]
    return args
