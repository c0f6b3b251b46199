"""The report's paper options on a hand-made sweep (no Ray, no MLflow store): --best-over, the marks
for missing seeds and failed trials, --paper, --cost, --plot, --smoke, in md, LaTeX and CSV."""
import io
import json
import math
import statistics
from types import SimpleNamespace

import pandas as pd
import pytest

from results import collect, published
from results.plot import plot, series
from results.report import compose
from results.table import Cell, ReportError, build

TAGS = {"kd.seeds": "[0, 1, 2]", "kd.dataset": "cifar100", "kd.sweep": "scale_sweep", "kd.smoke": "false"}
H100 = "NVIDIA H100 80GB HBM3"
F = None  # a failed trial

# pair -> (lambda, scale) -> the metric of seeds 0, 1, 2 (F: failed; a short list: the seed never ran)
GRID = {
    "t/s": {(0, 1): [70.0, 71.0, 72.0], (0, 2): [71.0, 70.0, 73.0],
            (0.5, 1): [74.0, 75.0, 76.0], (0.5, 2): [73.0, 76.0, F]},
    "t2/s2": {(0, 1): [65.0, 66.0], (0, 2): [64.0, 67.0],
              (0.5, 1): [60.0, 61.0, 62.0], (0.5, 2): [63.0, 60.0, 61.0]},
}


def run(role, pair, cell, seed, value, student, teacher="", th=None, wh=None, wall=1800.0, gpu=1, cpu=4,
        device=H100, in_sweep=True, method="at"):
    failed = value is None
    return {"run_id": f"{role}:{pair}:{json.dumps(cell)}:{seed}", "status": "FAILED" if failed else "FINISHED",
            "role": role, "pair": pair, "teacher": teacher, "student": student, "method": method, "cell": cell,
            "seed": seed, "config_hash": f"h{pair}{cell}{seed}", "teacher_hash": th, "weights_hash": wh,
            "error": "RuntimeError: boom" if failed else None, "eval_split": "test", "dataset": "cifar100",
            "device": device, "gpu": gpu, "cpu": cpu, "in_sweep": in_sweep,
            "eval/linear_top1": value, "cost/wall_s": None if failed else wall}


@pytest.fixture
def runs():
    rows = [run("teacher", "t", {}, 0, 79.0, "t", wh="T1", wall=360.0, device="NVIDIA A100"),
            run("teacher", "t2", {}, 0, 72.0, "t2", wh="T2", in_sweep=False)]  # reused from an earlier sweep
    rows += [run("scratch", "s", {}, seed, v, "s", method="none") for seed, v in enumerate([70.0, 71.0, 72.0])]
    for pair, cells in GRID.items():
        t, s = pair.split("/")
        for (lam, scale), values in cells.items():
            rows += [run("student", pair, {"lambda": lam, "scale": scale}, seed, v, s, t, th={"t": "T1", "t2": "T2"}[t])
                     for seed, v in enumerate(values)]
    return pd.DataFrame(rows)


@pytest.fixture
def paper_csv(tmp_path, monkeypatch):
    """A published table in its own CSV, read by `load_published` as the real ones are."""
    (tmp_path / "mypaper.csv").write_text(
        "table,dataset,pair,method,cell,metric,value,note\n"
        'Table 9,cifar100,t/s,at,"{""lambda"": 0.5}",linear_top1,74.20,"best over scale ∈ {1, 2}"\n'
        'Table 9,cifar100,t/s,at,"{""lambda"": 0.5, ""scale"": 1}",linear_top1,74.90,\n'
        'Table 9,cifar100,t/s,at,"{""lambda"": 0}",linear_top1,50.00,\n'  # not a best-over row
        "Table 9,cifar100,t,teacher,{},linear_top1,78.50,\n"
        'Table 9,cifar10,t/s,at,"{""lambda"": 0}",linear_top1,40.00,best over scale\n'  # another dataset
        'Table 9,cifar100,t/s,at,"{""lambda"": 0}",knn_top1,41.00,best over scale\n'  # another metric
        'Table 9,cifar100,t2/s2,at,"{""lambda"": 0}",linear_top1,66.25,best of the scale sweep\n')
    monkeypatch.setattr(published, "HERE", tmp_path)
    return published.load_published("mypaper")


def md_cells(line: str) -> list[str]:
    return [x.strip() for x in line.strip("|").split("|")]


# --- best over an axis ---------------------------------------------------------------------------------

def test_best_over_scale_per_seed_then_mean_over_seeds(runs):
    table, _ = build(runs, "linear_top1", seeds=[0, 1, 2], best_over="scale")
    assert list(table.columns) == ["Teacher", "Scratch", "lambda=0", "lambda=0.5"]  # scale has left
    c = table.loc["t/s", "lambda=0"]  # seeds: max(70, 71), max(71, 70), max(72, 73)
    assert (c.n, c.asked, c.failed, c.chosen) == (3, 3, 0, (2.0, 1.0, 2.0))
    assert c.mean == pytest.approx(statistics.mean([71, 71, 73]))
    assert c.std == pytest.approx(statistics.stdev([71, 71, 73]))
    c = table.loc["t/s", "lambda=0.5"]  # seed 2 failed at scale 2: not a best over the sweep, left out
    assert (c.mean, c.n, c.asked, c.failed, c.chosen) == (75.0, 2, 3, 1, (1.0, 2.0))
    assert c.std == pytest.approx(math.sqrt(2))
    c = table.loc["t2/s2", "lambda=0"]  # seed 2 never ran: two of three, nothing failed
    assert (c.mean, c.n, c.asked, c.failed) == (66.0, 2, 3, 0)
    c = table.loc["t2/s2", "lambda=0.5"]
    assert (c.mean, c.std, c.n, c.chosen) == (62.0, 1.0, 3, (2.0, 1.0, 1.0))
    assert len(table.loc["t/s", "lambda=0.5"].run_ids) == 6  # the failed run belongs to the cell (its cost)
    assert table.attrs["best_over"] == {"axis": "scale", "values": [1.0, 2.0], "columns": ["lambda=0", "lambda=0.5"]}


def test_unknown_axis_lists_the_sweeps_axes(runs):
    with pytest.raises(ReportError, match=r"no axis 'alpha'.*axes: lambda, scale"):
        build(runs, "linear_top1", best_over="alpha")


# --- marks, md ---------------------------------------------------------------------------------------

def test_markdown_marks_missing_seeds_and_failed_trials(runs):
    text, _, _ = compose(TAGS, "0123456789ab", runs)
    lines = text.splitlines()
    assert md_cells(lines[0]) == ["teacher/student", "Teacher", "Scratch", "lambda=0 scale=1", "lambda=0 scale=2",
                                  "lambda=0.5 scale=1", "lambda=0.5 scale=2"]
    assert md_cells(lines[2]) == ["t/s", "79.00 ± – (1)", "71.00 ± 1.00 (3)", "71.00 ± 1.00 (3)",
                                  "71.33 ± 1.53 (3)", "**75.00 ± 1.00 (3)**", "74.50 ± 2.12 (2/3)†‡≈"]
    assert md_cells(lines[3]) == ["t2/s2", "72.00 ± – (1)", "–", "**65.50 ± 0.71 (2/3)†**",
                                  "**65.50 ± 2.12 (2/3)†**", "61.00 ± 1.00 (3)", "61.33 ± 1.53 (3)"]  # a tie
    assert lines[4:] == [
        "", "† fewer finished seeds than the sweep asked for, shown as (finished/asked).",
        "‡ the cell has failed trials; they are never averaged in.",
        "≈ not significantly below the row's best (Welch's t-test over seeds, p ≥ 0.05); an unmarked cell with two or"
        " more seeds is below it at p < 0.05.",
        "scale_sweep: linear_top1 (%) on the test split, mean ± std (seeds) over finished runs; best student"
        " per row in bold. Run 01234567."]


def test_a_cell_with_every_trial_failed_shows_no_mean(runs):
    runs.loc[runs["role"] == "scratch", ["status", "eval/linear_top1"]] = ["FAILED", None]
    table, _ = build(runs, "linear_top1", seeds=[0, 1, 2])
    c = table.loc["t/s", "Scratch"]
    assert (c.n, c.asked, c.failed) == (0, 3, 3) and math.isnan(c.mean)
    assert md_cells(compose(TAGS, "x" * 8, runs)[0].splitlines()[2])[2] == "– (0/3)†‡"


# --- --paper, --best-over in md, LaTeX, CSV ---------------------------------------------------------

def test_markdown_best_over_with_paper(runs, paper_csv):
    text, table, _ = compose(TAGS, "0123456789ab", runs, best_over="scale", paper=True, published=paper_csv)
    lines = text.splitlines()
    assert md_cells(lines[0]) == ["teacher/student", "Teacher", "Scratch", "lambda=0", "lambda=0.5"]
    assert [md_cells(x) for x in lines[2:8]] == [
        ["t/s", "79.00 ± – (1)", "71.00 ± 1.00 (3)≈", "71.67 ± 1.15 (3)≈", "**75.00 ± 1.41 (2/3)†‡**"],
        ["↳ paper", "78.50", "", "", "74.20"],
        ["↳ Δ", "+0.50", "", "", "+0.80 ✓"],  # the teacher is one run: its Δ has no verdict
        ["t2/s2", "72.00 ± – (1)", "–", "**66.00 ± 1.41 (2/3)†**", "62.00 ± 1.00 (3)≈"],
        ["↳ paper", "", "", "66.25", ""],
        ["↳ Δ", "", "", "−0.25 ✓", ""]]
    assert lines[8:17] == [
        "", "Best over scale ∈ {1, 2} per seed (the highest value among that seed's runs; a seed counts only"
            " when every scale finished), then mean ± std over seeds.",
        "† fewer finished seeds than the sweep asked for, shown as (finished/asked).",
        "‡ the cell has failed trials; they are never averaged in.",
        "≈ not significantly below the row's best (Welch's t-test over seeds, p ≥ 0.05); an unmarked cell with two or"
        " more seeds is below it at p < 0.05.",
        "paper: the published number (mypaper Table 9); Δ = ours − paper, on the means.",
        "✓ the published number lies where our seeds' spread allows it, the paper's own seed noise counted (95%,"
        " Student's t on our std s over n seeds: for a published single run our prediction interval,"
        " mean ± t·s·√(1 + 1/n); for a published mean of m runs the interval for a difference of means,"
        " mean ± t·s·√(1/n + 1/m)): reproduced; ✗ outside it: not reproduced, by Δ; ? one seed: too few to say.",
        "Where the paper does not say how many runs a number averages, it is judged as one run.",
        "This sweep's file names no published table (`paper:`): its cells were matched against every table of"
        " its dataset."]
    assert lines[-1].startswith("scale_sweep: linear_top1 (%)")
    assert table.loc["t/s", "lambda=0"].paper is None  # its row (50.00) is not a best over scale


def test_without_best_over_only_single_setting_rows_match(runs, paper_csv):
    table = compose(TAGS, "x" * 8, runs, fmt="csv", paper=True, published=paper_csv)[1]
    matched = {(p, n): c.paper for p, row in table.iterrows() for n, c in row.items()
               if isinstance(c, Cell) and c.paper is not None}
    assert matched == {("t/s", "Teacher"): 78.5, ("t/s", "lambda=0.5 scale=1"): 74.9}


def test_paper_needs_the_sweeps_dataset(runs, paper_csv):
    tags = {**TAGS, "kd.dataset": "svhn"}  # no published row for it: the columns stay, empty
    csv = pd.read_csv(io.StringIO(compose(tags, "x" * 8, runs, fmt="csv", paper=True, published=paper_csv)[0]))
    assert {"paper", "delta", "paper_source"} <= set(csv.columns) and csv["paper"].isna().all()
    text = compose(tags, "x" * 8, runs, paper=True, published=paper_csv)[0]
    assert "↳ paper" not in text and "published" not in text
    unknown = {k: v for k, v in TAGS.items() if k != "kd.dataset"}  # and the runs do not say either
    table = compose(unknown, "x" * 8, runs.drop(columns="dataset"), paper=True, published=paper_csv)[1]
    assert table.attrs["paper_sources"] == []


def test_latex_best_over_with_paper(runs, paper_csv):
    tex, _, _ = compose(TAGS, "0123456789ab", runs, fmt="latex", best_over="scale", paper=True, published=paper_csv)
    lines = tex.splitlines()
    start = lines.index(r"\midrule")
    assert lines[:start] == [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{lcccc}", r"\toprule",
                             r"teacher/student & Teacher & Scratch & lambda=0 & lambda=0.5 \\"]
    assert lines[start + 1:start + 9] == [
        r"t/s & 79.00 $\pm$ – (1) & 71.00 $\pm$ 1.00 (3)$^{\approx}$ & 71.67 $\pm$ 1.15 (3)$^{\approx}$"
        r" & \textbf{75.00 $\pm$ 1.41 (2/3)$^{\dagger\ddagger}$} \\",
        r"\quad paper & 78.50 &  &  & 74.20 \\",
        r"\quad $\Delta$ & $+0.50$ &  &  & $+0.80$ \checkmark \\",
        r"\addlinespace",
        r"t2/s2 & 72.00 $\pm$ – (1) & – & \textbf{66.00 $\pm$ 1.41 (2/3)$^{\dagger}$}"
        r" & 62.00 $\pm$ 1.00 (3)$^{\approx}$ \\",
        r"\quad paper &  &  & 66.25 &  \\",
        r"\quad $\Delta$ &  &  & $-0.25$ \checkmark &  \\",
        r"\bottomrule"]
    assert tex.count(r"\textbf") == 2 and "±" not in tex and "Δ" not in tex and "†" not in tex
    assert r"Best over scale $\in$ \{1, 2\} per seed" in tex
    assert r"paper: the published number (mypaper Table 9); $\Delta$ = ours $-$ paper, on the means. \\" in tex
    assert r"\checkmark{} the published number lies where our seeds' spread allows it" in tex
    assert r"mean $\pm$ t·s·√(1 + 1/n)" in tex
    assert lines[-2].startswith(r"\caption{scale\_sweep: linear\_top1 (\%)") and lines[-1] == r"\end{table}"


def test_csv_best_over_with_paper(runs, paper_csv):
    out, _, _ = compose(TAGS, "x" * 8, runs, fmt="csv", best_over="scale", paper=True, published=paper_csv)
    csv = pd.read_csv(io.StringIO(out), dtype={"best_scale": str}, keep_default_na=False, na_values=[""])
    assert list(csv.columns) == ["pair", "column", "mean", "std", "n", "n_asked", "n_failed", "best", "best_scale",
                                 "ci_low", "ci_high", "p_vs_best", "not_worse", "paper", "paper_runs", "delta",
                                 "paper_source", "verdict_low", "verdict_high", "verdict"]
    by = csv.set_index(["pair", "column"])
    assert by.loc[("t/s", "lambda=0"), ["mean", "std", "n", "n_asked", "n_failed", "best", "best_scale"]].tolist() \
        == [71.6667, 1.1547, 3, 3, 0, False, "2;1;2"]
    assert by.loc[("t/s", "lambda=0.5"), ["mean", "n", "n_asked", "n_failed", "best", "best_scale", "paper", "delta",
                                          "paper_source"]].tolist() == \
        [75.0, 2, 3, 1, True, "1;2", 74.2, 0.8, "mypaper Table 9"]
    assert by.loc[("t2/s2", "lambda=0"), ["n", "n_asked", "n_failed", "best", "paper", "delta"]].tolist() == \
        [2, 3, 0, True, 66.25, -0.25]
    assert by.loc[("t/s", "Teacher"), ["n", "n_asked", "paper", "delta"]].tolist() == [1, 1, 78.5, 0.5]
    assert math.isnan(by.loc[("t/s", "lambda=0"), "paper"])
    assert ("t2/s2", "Scratch") not in by.index


# --- --cost ------------------------------------------------------------------------------------------

def test_cost_per_cell_and_table(runs):
    text, _, _ = compose(TAGS, "x" * 8, runs, best_over="scale", cost=True)
    cost = text[text.index("Cost per cell"):].splitlines()
    assert cost[0] == "Cost per cell, GPU-hours (wall time × resources.gpu), summed over the cell's runs."
    assert md_cells(cost[2]) == ["teacher/student", "Teacher", "Scratch", "lambda=0", "lambda=0.5", "row total"]
    # t/s: teacher 360 s; 3 scratch and 6 + 5 finished students at 1800 s, one GPU each (the failed one
    # logged no wall time). t2/s2: its teacher is an earlier sweep's; 4 + 6 students.
    assert md_cells(cost[4]) == ["t/s", "0.10", "1.50", "3.00", "2.50", "7.10"]
    assert md_cells(cost[5]) == ["t2/s2", "–", "–", "2.00", "3.00", "5.00"]
    assert cost[7:] == [f"Total: 12.10 GPU-hours over 25 runs; devices (kd.device): {H100} (24 runs),"
                        " NVIDIA A100 (1 run).",
                        "Not counted: 1 run(s) that logged no wall time (failed or unfinished); 1 teacher run(s)"
                        " of an earlier sweep, reused here."]


def test_cost_with_cpu_runs_and_csv_total(runs):
    cpu = runs["role"] == "scratch"  # from-scratch students on CPU: 4 cores x 900 s = 1 CPU-hour each
    runs.loc[cpu, ["gpu", "cpu", "cost/wall_s", "device"]] = [0, 4, 900.0, "cpu (4 threads)"]
    text, _, _ = compose(TAGS, "x" * 8, runs, best_over="scale", cost=True)
    cost = text[text.index("Cost per cell"):].splitlines()
    assert cost[0].startswith("Cost per cell, device-hours (GPU-h: wall time × resources.gpu; CPU-h:")
    assert md_cells(cost[4]) == ["t/s", "0.10 GPU-h", "3.00 CPU-h", "3.00 GPU-h", "2.50 GPU-h",
                                 "5.60 GPU-h + 3.00 CPU-h"]
    assert cost[7].startswith("Total: 10.60 GPU-hours + 3.00 CPU-hours over 25 runs")
    csv = pd.read_csv(io.StringIO(compose(TAGS, "x" * 8, runs, fmt="csv", best_over="scale", cost=True)[0]))
    by = csv.set_index(["pair", "column"])
    assert by.loc[("t/s", "Scratch"), ["gpu_h", "cpu_h", "cost_runs"]].tolist() == [0.0, 3.0, 3]
    assert by.loc[("t/s", "lambda=0.5"), ["gpu_h", "cpu_h", "cost_runs"]].tolist() == [2.5, 0.0, 5]
    assert math.isnan(by.loc[("t2/s2", "Teacher"), "gpu_h"])  # reused: another sweep's cost
    assert by.loc[("(total)", "(total)"), ["gpu_h", "cpu_h", "cost_runs"]].tolist() == [10.6, 3.0, 25]


def test_a_shared_teacher_is_counted_once_in_the_total(runs):
    runs.loc[runs["pair"] == "t2/s2", "teacher_hash"] = "T1"  # both pairs distilled from T1
    text = compose(TAGS, "x" * 8, runs, best_over="scale", cost=True)[0]
    cost = text[text.index("Cost per cell"):].splitlines()
    assert md_cells(cost[5])[1] == "0.10"
    assert cost[7].startswith("Total: 12.10 GPU-hours over 25 runs")


# --- --plot -------------------------------------------------------------------------------------------

def _bars(container) -> tuple[list, list, list]:
    line, _, (bars, *_) = container.lines
    segs = bars.get_segments()
    return list(line.get_xdata()), list(line.get_ydata()), [(s[1][1] - s[0][1]) / 2 for s in segs]


def test_plot_writes_a_png_of_the_means_and_stds(runs, tmp_path):
    table, col = build(runs, "linear_top1", seeds=[0, 1, 2], best_over="scale")
    fig = plot(table, col, str(tmp_path / "figs" / "lambda.png"))  # the one numeric axis left: lambda; a new folder
    assert (tmp_path / "figs" / "lambda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = fig.axes
    assert len(ax.containers) == 2  # one line per pair
    got = {c.get_label(): _bars(c) for c in ax.containers}
    x, y, e = got["t/s"]
    assert x == [0.0, 0.5] and y == pytest.approx([table.loc["t/s", "lambda=0"].mean, 75.0])
    assert e == pytest.approx([statistics.stdev([71, 71, 73]), math.sqrt(2)])
    x, y, e = got["t2/s2"]
    assert x == [0.0, 0.5] and y == pytest.approx([66.0, 62.0]) and e == pytest.approx([math.sqrt(2), 1.0])
    assert ax.get_xlabel() == "λ (lambda)" and ax.get_ylabel() == "Linear-probe top-1 (%)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["t/s", "t2/s2"]
    # Each pair's Teacher (dashed) and Scratch (dotted) as horizontal lines in the pair's colour.
    refs = sorted((ln.get_linestyle(), ln.get_ydata()[0], ln.get_color()) for ln in ax.lines
                  if len(set(ln.get_ydata())) == 1 and ln.get_xdata()[0] == 0 and ln.get_xdata()[-1] == 1)
    colour = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    assert refs == sorted([("--", 79.0, colour["t/s"]), ("--", 72.0, colour["t2/s2"]), (":", 71.0, colour["t/s"])])
    assert fig._supxlabel.get_text() == "mean ± sample std over seeds; dashed: teacher; dotted: scratch"
    assert not any("SMOKE" in t.get_text() for t in fig.texts)
    smoke = plot(table, col, smoke=True)
    assert any(t.get_text() == "SMOKE RUN: not results" for t in smoke.texts)
    table.loc["t/s", "lambda=0.5"].paper = 74.2  # as `--paper` attaches it
    (ax,) = plot(table, col).axes
    (cross,) = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert list(cross.get_xdata()) == [0.5] and list(cross.get_ydata()) == [74.2]
    assert cross.get_color() == colour["t/s"]


def test_plot_named_axis_draws_a_line_per_pair_and_other_knobs(runs, tmp_path):
    table, col = build(runs, "linear_top1", seeds=[0, 1, 2])
    with pytest.raises(ReportError, match=r"several numeric axes \(lambda, scale\): name one with --axis"):
        plot(table, col)
    lines = series(table, "scale")
    assert list(lines) == ["t/s, lambda=0", "t/s, lambda=0.5", "t2/s2, lambda=0", "t2/s2, lambda=0.5"]
    assert lines["t/s, lambda=0.5"] == ([1.0, 2.0], [75.0, 74.5], [1.0, pytest.approx(2.1213, abs=1e-4)])
    fig = plot(table, col, str(tmp_path / "scale.png"), axis="scale")
    assert len(fig.axes[0].containers) == 4 and fig.axes[0].get_xlabel() == "scale"


def test_plot_refuses_a_non_numeric_axis(runs):
    runs["cell"] = runs["cell"].map(lambda c: {**c, "anchors": "random" if c.get("scale") == 1 else "in_batch"}
                                    if c else c)
    table, col = build(runs, "linear_top1")
    with pytest.raises(ReportError, match=r"axis 'anchors' is not numeric \(values: in_batch, random\)"):
        plot(table, col, axis="anchors")
    with pytest.raises(ReportError, match="no axis 'k'"):
        plot(table, col, axis="k")
    best, col = build(runs, "linear_top1", best_over="scale")
    with pytest.raises(ReportError, match="--best-over scale takes the best over it"):
        plot(best, col, axis="scale")


# --- --smoke: the parent run -----------------------------------------------------------------------

class FakeClient:
    """The three MLflow calls `latest_parent` makes; parents latest first, as the search orders them."""
    tracking_uri = "sqlite:///fake.db"

    def __init__(self, *parents):
        self.parents = parents

    def search_experiments(self):
        return [SimpleNamespace(experiment_id=e) for e in dict.fromkeys(p.info.experiment_id for p in self.parents)]

    def get_experiment_by_name(self, name):
        return SimpleNamespace(experiment_id=name) if any(p.info.experiment_id == name for p in self.parents) else None

    def search_runs(self, exps, filter_string="", order_by=None, max_results=1000, page_token=None):
        return type("Page", (list,), {"token": None})(p for p in self.parents if p.info.experiment_id in exps)


def parent(run_id, smoke=None, sweep="scale_sweep"):
    tags = {"kd.role": "sweep", "kd.sweep": sweep, **({"kd.smoke": smoke} if smoke else {})}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=sweep), data=SimpleNamespace(tags=tags))


def test_report_never_mixes_smoke_and_real_runs():
    smoke2, smoke1 = parent("smoke2", "true", "scale_sweep-smoke"), parent("smoke1", "true", "scale_sweep-smoke")
    client = FakeClient(smoke2, parent("real2", "false"), smoke1, parent("old"))  # old: from before kd.smoke
    assert collect.latest_parent(client, "scale_sweep").info.run_id == "real2"
    assert collect.latest_parent(client, None).info.run_id == "real2"
    assert collect.latest_parent(client, "scale_sweep", smoke=True).info.run_id == "smoke2"  # in <name>-smoke
    assert collect.latest_parent(client, None, smoke=True).info.run_id == "smoke2"
    assert collect.latest_parent(FakeClient(parent("old")), None).info.run_id == "old"
    with pytest.raises(collect.NoRuns, match="only smoke runs for sweep 'scale_sweep-smoke'.*--smoke"):
        collect.latest_parent(client, "scale_sweep-smoke")
    with pytest.raises(collect.NoRuns, match="no smoke run for sweep 'scale_sweep'"):
        collect.latest_parent(FakeClient(parent("real1", "false")), "scale_sweep", smoke=True)
    with pytest.raises(collect.NoRuns, match=r"no sweep named 'x'.*sweeps there: scale_sweep, scale_sweep-smoke"):
        collect.latest_parent(client, "x")


def test_cli_report_with_every_option(runs, paper_csv, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    asked = []

    def fake_sweep_runs(uri, sweep, smoke=False):
        asked.append((sweep, smoke))
        p = parent("abcdef0123456789")
        p.data.tags.update({**TAGS, "kd.smoke": "true" if smoke else "false"})
        return p, runs

    monkeypatch.setattr(collect, "sweep_runs", fake_sweep_runs)

    (tmp_path / "m.db").touch()  # the store must exist: report never creates one

    def report(*args):
        return CliRunner().invoke(app, ["report", *args, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])

    png = tmp_path / "fig.png"
    res = report("scale_sweep", "--best-over", "scale", "--paper", "--cost", "--plot", str(png))
    assert res.exit_code == 0, res.output
    assert asked == [("scale_sweep", False)] and png.read_bytes()[:4] == b"\x89PNG"
    assert "**75.00 ± 1.41 (2/3)†‡**" in res.stdout and "| ↳ Δ " in res.stdout
    assert "Total: 12.10 GPU-hours" in res.stdout
    res = report("--smoke")
    assert res.exit_code == 0 and asked[-1] == (None, True) and "SMOKE RUN" in res.stdout
    res = report("--no-table", "--plot", str(tmp_path / "scale.png"), "--axis", "scale")
    assert res.exit_code == 0 and res.stdout == "" and (tmp_path / "scale.png").exists()
    res = report("--plot", str(tmp_path / "no.png"))
    assert res.exit_code == 2 and "several numeric axes (lambda, scale)" in res.output
    res = report("--best-over", "alpha")
    assert res.exit_code == 2 and "no axis 'alpha'" in res.output and "lambda, scale" in res.output


# --- is a difference real: Welch's t-test against the row's best, the paper's number in our interval ---

def _cells(values_by_col: dict[str, list[float]]) -> pd.DataFrame:
    rows = [run("student", "t/s", {"lambda": lam}, seed, v, "s", "t", th="T1")
            for lam, vs in values_by_col.items() for seed, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_welch_test_against_the_rows_best_by_hand():
    table, _ = build(_cells({0.5: [75.0, 76.0, 77.0], 0: [70.0, 71.0, 72.0], 1: [74.0, 76.0, 75.5]}), "linear_top1")
    # lambda=0 (mean 71) against the best (mean 76), variance 1 each, 3 seeds: t = 5 / sqrt(1/3 + 1/3) = 6.124,
    # and Welch's df = (2/3)^2 / (2 (1/3)^2 / 2) = 4; two-sided p = 2 P(T_4 > 6.124).
    from scipy.stats import t

    c = table.loc["t/s", "lambda=0"]
    assert c.p_best == pytest.approx(2 * t.sf(5 / math.sqrt(2 / 3), 4), rel=1e-9) and c.p_best < 0.01
    assert not c.not_worse
    near = table.loc["t/s", "lambda=1"]  # 75.17 ± 1.04 against 76 ± 1: not significantly below
    assert near.p_best > 0.3 and near.not_worse
    assert table.loc["t/s", "lambda=0.5"].p_best == 1.0
    cells = md_cells(render_md(table).splitlines()[2])
    assert cells[1:] == ["71.00 ± 1.00 (3)", "**76.00 ± 1.00 (3)**", "75.17 ± 1.04 (3)≈"]


def render_md(table):
    from results.table import render

    return render(table, "md")


def test_one_seed_is_never_tested_and_equal_spreadless_cells_are_equal():
    table, _ = build(_cells({0: [70.0], 0.5: [71.0]}), "linear_top1")
    assert table.loc["t/s", "lambda=0"].p_best is None and "≈" not in render_md(table)
    table, _ = build(_cells({0: [70.0, 70.0], 0.5: [70.0, 70.0], 1: [69.0, 69.0]}), "linear_top1")
    assert table.loc["t/s", "lambda=0"].not_worse or table.loc["t/s", "lambda=0.5"].not_worse
    assert table.loc["t/s", "lambda=1"].p_best == 0.0


def test_the_verdict_counts_how_many_runs_the_published_number_averages(tmp_path, monkeypatch):
    # Each cell: 3 seeds 75, 76, 77 (mean 76, s 1, t_{0.975, 2} = 4.303). A published single run may lie
    # in 76 ± 4.303·√(1 + 1/3) = 76 ± 4.97 (the prediction interval); a published mean of 3 runs in
    # 76 ± 4.303·√(1/3 + 1/3) = 76 ± 3.51; the old interval for our mean alone, 76 ± 2.48, counted no
    # noise on the paper's side and called 72.00 not reproduced either way.
    (tmp_path / "p.csv").write_text(
        "table,dataset,pair,method,cell,metric,value,runs,note\n"
        'T,cifar100,t/s,at,"{""lambda"": 0.5}",linear_top1,72.00,1,\n'   # one run, inside ±4.97: reproduced
        'T,cifar100,t/s,at,"{""lambda"": 0}",linear_top1,72.00,3,\n'     # a mean of 3, outside ±3.51: not
        'T,cifar100,t/s,at,"{""lambda"": 1}",linear_top1,72.00,,\n'      # unstated: judged as one run
        'T,cifar100,t/s,at,"{""lambda"": 2}",linear_top1,72.00,1,\n')    # one seed: too few to say
    monkeypatch.setattr(published, "HERE", tmp_path)
    runs = _cells({0.5: [75.0, 76.0, 77.0], 0: [75.0, 76.0, 77.0], 1: [75.0, 76.0, 77.0], 2: [74.0]})
    text, table, _ = compose(TAGS, "x" * 8, runs, paper=True, published=published.load_published("p"))
    from scipy.stats import t

    q = t.ppf(0.975, 2)
    one, three = table.loc["t/s", "lambda=0.5"], table.loc["t/s", "lambda=0"]
    assert (one.paper_runs, three.paper_runs, table.loc["t/s", "lambda=1"].paper_runs) == (1, 3, None)
    assert one.paper_interval == pytest.approx((76 - q * math.sqrt(4 / 3), 76 + q * math.sqrt(4 / 3)))
    assert three.paper_interval == pytest.approx((76 - q * math.sqrt(2 / 3), 76 + q * math.sqrt(2 / 3)))
    assert one.ci == pytest.approx((76 - q / math.sqrt(3), 76 + q / math.sqrt(3)))  # our mean's own, unchanged
    assert [table.loc["t/s", f"lambda={v}"].verdict for v in (0.5, 0, 1, 2)] == ["✓", "✗", "✓", "?"]
    delta = [md_cells(x) for x in text.splitlines() if x.startswith("| ↳ Δ")][0]
    assert delta[1:] == ["+4.00 ✗", "+4.00 ✓", "+4.00 ✓", "+2.00 ?"]
    assert "Where the paper does not say how many runs a number averages, it is judged as one run." in text
    csv = pd.read_csv(io.StringIO(compose(TAGS, "x" * 8, runs, fmt="csv", paper=True,
                                          published=published.load_published("p"))[0])).set_index("column")
    assert csv.loc["lambda=0", "verdict_low"] == pytest.approx(76 - q * math.sqrt(2 / 3), abs=1e-4)
    assert csv.loc["lambda=0", "paper_runs"] == 3 and math.isnan(csv.loc["lambda=1", "paper_runs"])
    assert csv.loc[["lambda=0", "lambda=0.5", "lambda=1", "lambda=2"], "verdict"].tolist() == \
        ["not reproduced", "reproduced", "reproduced", "too few seeds"]


def test_every_published_number_says_how_many_runs_it_averages_where_its_source_does():
    pub = published.load_published()
    rrkd = pub[pub["paper"] == "rrkd"]
    # RRKD: Tables 1-2 are means of 3 runs (the paper); Tables 3 and 5 one run each (the notebook's cells).
    assert set(rrkd[rrkd["table"].isin(["Table 1", "Table 2"])]["runs"]) == {3}
    assert set(rrkd[rrkd["table"].isin(["Table 3", "Table 5"])]["runs"]) == {1}
    for _, r in pub.iterrows():  # the count and the note never disagree
        if "mean of 3 runs" in r["note"]:
            assert r["runs"] == 3, r.to_dict()
        if "one run" in r["note"]:
            assert r["runs"] == 1, r.to_dict()
    assert pub["runs"].map(lambda r: r is None or (isinstance(r, int) and r >= 1)).all()


def test_coverage_says_why_each_published_number_is_missing(tmp_path, monkeypatch):
    (tmp_path / "p.csv").write_text(
        "table,dataset,pair,method,cell,metric,value,note\n"
        'T,cifar100,t/s,at,"{""lambda"": 0.5}",linear_top1,74.00,"best over scale"\n'
        'T,cifar100,t/s,at,"{""lambda"": 0.5, ""scale"": 1}",linear_top1,73.00,\n'
        'T,cifar100,t/s,at,"{""lambda"": 9}",linear_top1,60.00,\n'
        'T,cifar100,t/s,kd,{},linear_top1,61.00,\n'
        'T,cifar100,t/s,at,"{""lambda"": 0.5, ""scale"": 1}",knn_top1,50.00,\n'
        'T,cifar100,t3/s3,at,"{""lambda"": 0.5, ""scale"": 1}",linear_top1,1.00,\n'  # not this sweep's pair
        'U,cifar100,t/s,at,"{""lambda"": 0, ""scale"": 1}",linear_top1,2.00,\n')  # not this sweep's table
    monkeypatch.setattr(published, "HERE", tmp_path)
    pub = published.load_published("p")
    runs = T_runs()
    scope = {"tables": ["p T"], "pairs": [{"pair": "t/s", "teacher": "t", "student": "s"}],
             "deviations": ["Teachers are our own."]}
    tags = {**TAGS, "kd.paper": json.dumps(scope)}
    text = compose(tags, "x" * 8, runs, paper=True, published=pub)[0]
    assert "Published numbers shown: 1 of 5 (p T, this sweep's pairs)." in text
    assert "Not shown: 1 published as another metric (knn_top1 ×1): `--metric knn_top1` shows it." in text
    assert "Not shown: t/s at lambda=0.5 (linear_top1 74.00): a best over scale: `--best-over scale` shows it." in text
    assert "Not shown: t/s at lambda=9 (linear_top1 60.00): that cell was not run" in text
    assert "Not shown: t/s kd (linear_top1 61.00): method kd was not run." in text
    assert "- Teachers are our own." in text
    papers = [md_cells(x)[1:] for x in text.splitlines() if x.startswith("| ↳ paper")]
    assert papers == [["", "", "", "", "73.00", ""]]  # neither another pair's nor another table's number
    text = compose(tags, "x" * 8, runs, paper=True, published=pub, best_over="scale")[0]
    assert "Published numbers shown: 1 of 5" in text  # now the best-over row, and the single setting is out
    assert "t/s at lambda=0.5 scale=1 (linear_top1 73.00): a single scale setting: shown without --best-over" in text


def T_runs():
    return runs.__wrapped__()


def test_a_row_with_a_teacher_per_seed_shows_their_mean_and_spread():
    """teacher_per_seed: the Teacher cell is mean ± std over the teachers the row's students learned from."""
    rows = [run("teacher", f"t{seed}", {}, seed, v, "t", wh=f"T{seed}") for seed, v in enumerate([86.0, 88.0, 90.0])]
    rows += [run("student", "t/s", {"lambda": 1}, seed, 70.0 + seed, "s", "t", th=f"T{seed}") for seed in range(3)]
    table, _ = build(pd.DataFrame(rows), "linear_top1", seeds=[0, 1, 2])
    c = table.loc["t/s", "Teacher"]
    assert (c.mean, c.std, c.n, c.values) == (88.0, 2.0, 3, (86.0, 88.0, 90.0))
    assert sorted(c.run_ids) == ["teacher:t0:{}:0", "teacher:t1:{}:1", "teacher:t2:{}:2"]
    assert md_cells(render_md(table).splitlines()[2])[1] == "88.00 ± 2.00 (3)"
