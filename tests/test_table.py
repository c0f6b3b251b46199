"""The paper table from known runs: cells, bold, Teacher/Scratch columns, and the three formats."""
import io
import math

import pandas as pd
import pytest

from results.table import Cell, build, render


def run(role, pair, method, cell, seed, value, status="FINISHED", student="s", th="T1", ch=None):
    return {"run_id": f"{role}{pair}{cell}{seed}", "status": status, "role": role, "pair": pair,
            "teacher": "t", "student": student, "method": method, "cell": cell, "seed": seed,
            "config_hash": f"h{role}{pair}{cell}{seed}", "teacher_hash": th if role == "student" else None,
            "weights_hash": ch if role == "teacher" else None,
            "error": None, "eval/linear_top1": value}


@pytest.fixture
def runs():
    rows = [
        run("teacher", "t", "none", {}, 0, 79.0, ch="T1"),
        run("teacher", "t2", "none", {}, 0, 72.0, ch="T2"),
        run("scratch", "s", "none", {}, 0, 70.0), run("scratch", "s", "none", {}, 1, 72.0),
        run("student", "t/s", "coss", {"lambda": 0.5}, 0, 74.0), run("student", "t/s", "coss", {"lambda": 0.5}, 1, 76.0),
        run("student", "t/s", "coss", {"lambda": 0}, 0, 71.0), run("student", "t/s", "coss", {"lambda": 0}, 1, 73.0),
        run("student", "t/s", "coss", {"lambda": 0}, 2, 10.0, status="FAILED"),  # never averaged in
        run("student", "t2/s2", "coss", {"lambda": 0}, 0, 65.0, student="s2", th="T2"),
        run("student", "t2/s2", "coss", {"lambda": 0.5}, 0, 64.0, student="s2", th="T2"),
    ]
    return pd.DataFrame(rows)


def test_cells_columns_and_best(runs):
    table, col = build(runs, "linear_top1")
    assert col == "eval/linear_top1"
    assert list(table.index) == ["t/s", "t2/s2"]
    assert list(table.columns) == ["Teacher", "Scratch", "lambda=0", "lambda=0.5"]  # numeric order
    c = table.loc["t/s", "lambda=0.5"]
    assert (c.mean, c.n) == (75.0, 2) and c.std == pytest.approx(math.sqrt(2))
    assert table.loc["t/s", "lambda=0"].mean == 72.0  # the failed seed is not in it
    assert table.loc["t/s", "Teacher"].mean == 79.0 and table.loc["t2/s2", "Teacher"].mean == 72.0
    assert table.loc["t/s", "Scratch"].mean == 71.0
    assert not isinstance(table.loc["t2/s2", "Scratch"], Cell)  # no scratch run for s2


def test_markdown(runs):
    md = render(build(runs, "linear_top1")[0], "md", caption="cap")
    lines = md.splitlines()
    cells = lambda i: [x.strip() for x in lines[i].strip("|").split("|")]  # noqa: E731
    assert cells(0) == ["teacher/student", "Teacher", "Scratch", "lambda=0", "lambda=0.5"]
    # lambda=0: seed 2 failed, so 2 of the 3 seeds its runs name finished (†) and it has a failure (‡)
    assert cells(2) == ["t/s", "79.00 ± – (1)", "71.00 ± 1.41 (2)≈", "72.00 ± 1.41 (2/3)†‡≈",
                        "**75.00 ± 1.41 (2)**"]  # 2 seeds each: not significantly below the best
    assert cells(3) == ["t2/s2", "72.00 ± – (1)", "–", "**65.00 ± – (1)**", "64.00 ± – (1)"]
    assert lines[-1] == "cap"


def test_latex_and_csv(runs):
    table = build(runs, "linear_top1")[0]
    tex = render(table, "latex", caption="linear_top1 (%)")
    assert (r"t/s & 79.00 $\pm$ – (1) & 71.00 $\pm$ 1.41 (2)$^{\approx}$"
            r" & 72.00 $\pm$ 1.41 (2/3)$^{\dagger\ddagger\approx}$"
            r" & \textbf{75.00 $\pm$ 1.41 (2)} \\") in tex
    assert r"\caption{linear\_top1 (\%)}" in tex and tex.count(r"\textbf") == 2
    csv = pd.read_csv(io.StringIO(render(table, "csv")))
    assert csv[csv["best"]][["pair", "column"]].values.tolist() == [["t/s", "lambda=0.5"], ["t2/s2", "lambda=0"]]
    assert csv.set_index(["pair", "column"]).loc[("t/s", "Scratch"), "std"] == pytest.approx(1.4142, abs=1e-4)


def test_unknown_metric_lists_the_known_ones(runs):
    with pytest.raises(KeyError, match="no metric 'knn_top1'.*linear_top1"):
        build(runs, "knn_top1")


def test_a_metric_the_students_do_not_score_leaves_only_the_runs_that_do(runs):
    """Headless students (CoSS) score no classifier: under --metric classifier_top1 their columns go, rather
    than showing every seed as missing, and the teachers (who do) stay."""
    runs["eval/classifier_top1"] = runs["role"].map({"teacher": 80.0, "scratch": 70.0}).astype(float)
    table, _ = build(runs, "classifier_top1", seeds=[0, 1])
    assert list(table.columns) == ["Teacher", "Scratch"]
    assert table.loc["t/s", "Teacher"].mean == 80.0 and table.loc["t/s", "Scratch"].n == 2
