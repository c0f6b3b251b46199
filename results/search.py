"""The report of a search sweep (`search:` in the spec): its best trials, and how much each searched
knob mattered (Optuna's importance, on a study rebuilt from the MLflow runs alone)."""
from __future__ import annotations

import json
import math

import pandas as pd

from .mlflow_schema import Role, State, Status, Tag
from .table import latex_escape, markdown

TOP = 10


def trials_frame(runs: pd.DataFrame, spec: dict, metric: str) -> pd.DataFrame:
    """A row per searched trial: its knobs, the metric (NaN unless it finished), its state; best first."""
    space = list(spec["space"])
    students = runs[runs["role"] == Role.STUDENT]
    rows = []
    for _, r in students.iterrows():
        cell = r["cell"] if isinstance(r["cell"], dict) else {}
        value = r.get(metric)
        finished = r["status"] == Status.FINISHED and value is not None and not pd.isna(value)
        tag = r.get("state")
        if tag == State.INTERRUPTED:  # its driver died mid-search; the continued search sampled others
            continue
        state = {Status.FINISHED: "done", Status.KILLED: "stopped early", Status.FAILED: "failed"}.get(
            r["status"], r["status"].lower())
        if tag == State.REUSED:
            state = "reused"
        rows.append({**{k: cell.get(k) for k in space}, metric: value if finished else math.nan, "state": state,
                     "run": r["run_id"][:8]})
    frame = pd.DataFrame(rows, columns=[*space, metric, "state", "run"])
    return frame.sort_values(metric, ascending=spec.get("mode", "max") == "min", na_position="last",
                             ignore_index=True)


def importances(frame: pd.DataFrame, spec: dict, metric: str) -> dict[str, float]:
    """Optuna's parameter importances over the finished trials ({} with fewer than 3 of them)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    done = frame.dropna(subset=[metric])
    if len(done) < 3:
        return {}
    dists = {}
    for k, p in spec["space"].items():
        if p["type"] == "choice":
            dists[k] = CategoricalDistribution(p["values"])
        elif p["type"] == "int":
            dists[k] = IntDistribution(int(p["low"]), int(p["high"]), log=p.get("log", False))
        else:
            dists[k] = FloatDistribution(p["low"], p["high"], log=p.get("log", False))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if spec.get("mode", "max") == "max" else "minimize")
    for _, r in done.iterrows():
        params = {k: (int(r[k]) if spec["space"][k]["type"] == "int" else r[k]) for k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r[metric])))
    return optuna.importance.get_param_importances(study)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def render_search(tags: dict, runs: pd.DataFrame, fmt: str, metric: str | None = None) -> tuple[str, pd.DataFrame]:
    spec = json.loads(tags[Tag.SEARCH])
    metric = metric or spec["metric"]
    frame = trials_frame(runs, spec, metric)
    if metric not in runs.columns:
        frame[metric] = math.nan
    if fmt == "csv":
        return frame.to_csv(index=False), frame
    imp = importances(frame, spec, metric)
    n_done = int(frame[metric].notna().sum())
    top = frame.head(TOP)
    name = metric.removeprefix("eval/")
    header = ["rank", *spec["space"], name, "state", "run"]
    body = [[str(i + 1), *(_fmt(r[k]) for k in spec["space"]), _fmt(r[metric]), r["state"], r["run"]]
            for i, r in top.iterrows()]
    if body and frame[metric].notna().any():
        body[0][len(spec["space"]) + 1] = (rf"\textbf{{{body[0][len(spec['space']) + 1]}}}" if fmt == "latex"
                                           else f"**{body[0][len(spec['space']) + 1]}**")
    title = (f"{tags.get(Tag.SWEEP, '?')}: {spec.get('algorithm', 'optuna')} search, {len(frame)} of"
             f" {spec['n_trials']} trials ({n_done} finished), best {TOP} by {name} ({spec.get('mode', 'max')})")
    imp_line = ("importance (Optuna, PED-ANOVA over the finished trials): "
                + ", ".join(f"{k} {v:.2f}" for k, v in imp.items())) if imp else \
        "importance: needs at least 3 finished trials"
    if fmt == "latex":
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{'l' * len(header)}}}", r"\toprule",
                 " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(c if c.startswith(r"\textbf") else latex_escape(c) for c in r) + r" \\" for r in body]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(title + '. ' + imp_line)}}}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n", frame
    return "\n".join([*markdown(header, body), "", imp_line, title]) + "\n", frame
