"""Published numbers, as data: one CSV per paper under results/published/, keyed like our runs.

Columns: table (as the paper names it), dataset (our dataset name), pair (our row label,
`teacher/student` with our model names; the teacher's own number has pair = the teacher's label and
method `teacher`), method (our method name, `teacher` or `scratch` for those columns), cell (JSON of
the grid knobs, as our runs' `kd.cell` tag: {"lambda": 0.5}), metric (our metric name without
`eval/`: linear_top1, classifier_top1, knn_top1, linear_top5...), value (%), runs (how many runs the
value averages, as the paper or the authors' code says; empty where neither says), note.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent / "published"
COLUMNS = ["paper", "table", "dataset", "pair", "method", "cell", "metric", "value", "runs", "note"]


def load_published(paper: str | None = None) -> pd.DataFrame:
    """Every published number (or one paper's: coss, rrkd, miles), `cell` parsed to a dict."""
    files = sorted(HERE.glob("*.csv")) if paper is None else [HERE / f"{paper}.csv"]
    frames = []
    for f in files:
        df = pd.read_csv(f, dtype={"note": str}, keep_default_na=False)
        df.insert(0, "paper", f.stem)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out["cell"] = out["cell"].map(lambda s: json.loads(s) if s else {})
    out["value"] = out["value"].astype(float)
    runs = out["runs"] if "runs" in out else pd.Series("", index=out.index)
    out["runs"] = pd.Series([None if pd.isna(r) or not str(r).strip() else int(float(r)) for r in runs.astype(object)],
                            index=out.index, dtype=object)
    return out[COLUMNS]


def table_refs() -> set[str]:
    """Every published table as a sweep's `paper.tables` names it: "<paper> <table>"."""
    df = load_published()
    return set(df["paper"] + " " + df["table"])
