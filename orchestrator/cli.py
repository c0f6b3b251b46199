"""`kd-sweep`: run a sweep file, print its paper table, list what can be swept."""
from __future__ import annotations

import sys
from enum import Enum
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knowledge-distillation ablation grids: a YAML sweep -> Ray Tune trials -> MLflow -> paper tables.")


def _fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    file: str = typer.Argument(..., help="the sweep YAML"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override a field: --set train.epochs=1 (repeatable)"),
    address: Optional[str] = typer.Option(None, help="join a running Ray cluster (default: RAY_ADDRESS, else local)"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                               help="MLflow store (default: sqlite:///mlflow.db here)"),
    storage: Optional[str] = typer.Option(None, help="where trial checkpoints go (default: ./ray_results)"),
) -> None:
    """Validate FILE, then run every trial of it and log them to MLflow."""
    from .spec import SpecError, load_sweep

    try:
        sweep = load_sweep(file, set_)
    except SpecError as e:
        _fail(str(e), 2)
    from .runner import RunError, run_sweep
    from .tracking import resolve_tracking_uri

    try:
        code = run_sweep(sweep, file, address, resolve_tracking_uri(tracking_uri), storage)
    except SpecError as e:
        _fail(str(e), 2)
    except RunError as e:
        _fail(str(e), 1)
    raise typer.Exit(code)


class Fmt(str, Enum):
    md = "md"
    latex = "latex"
    csv = "csv"


@app.command()
def report(
    sweep: Optional[str] = typer.Argument(None, help="sweep name (default: the latest sweep in the store)"),
    table: bool = typer.Option(True, "--table/--no-table", help="print the paper-style table"),
    metric: str = typer.Option("linear_top1", help="linear_top1, knn_top1, classifier_top1, ..."),
    fmt: Fmt = typer.Option(Fmt.md, "--format", help="md, latex or csv"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI"),
) -> None:
    """Print the table of a sweep's latest run: pairs x swept values, mean ± std (n) over seeds."""
    from results.collect import NoRuns, sweep_runs
    from results.table import build, render

    from .tracking import resolve_tracking_uri

    try:
        parent, runs = sweep_runs(resolve_tracking_uri(tracking_uri), sweep)
    except NoRuns as e:
        _fail(str(e), 1)
    if not table:
        return
    try:
        tab, col = build(runs, metric)
    except KeyError as e:
        _fail(e.args[0], 2)
    name = parent.data.tags.get("kd.sweep", "")
    split = "held-out validation split" if (runs["eval_split"] == "val").any() else "test split"
    caption = (f"{name}: {col.removeprefix('eval/')} (%) on the {split}, mean ± std (seeds) over finished runs;"
               f" best student per row in bold. Run {parent.info.run_id[:8]}.")
    sys.stdout.write(render(tab, fmt.value, caption if fmt != Fmt.csv else ""))


class Kind(str, Enum):
    methods = "methods"
    models = "models"
    datasets = "datasets"


@app.command("list")
def list_(kind: Kind = typer.Argument(..., help="methods, models or datasets")) -> None:
    """What a sweep can name: methods with their knobs and defaults, models with their options, datasets."""
    from trainables.datasets import DATASETS
    from trainables.methods import METHODS
    from trainables.models import MODELS, model_options

    if kind == Kind.methods:
        from trainables.methods import Knobs

        def line(k, f):
            return f"    {f.alias or k:<14} {f.default!r:<9} {f.description or ''}"

        typer.echo("every method:")
        for k, f in Knobs.model_fields.items():
            typer.echo(line(k, f))
        for name in METHODS.names():
            cls = METHODS.get(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
            typer.echo(f"\n{name}: {doc.splitlines()[0] if doc else ''}")
            for k, f in cls.Knobs.model_fields.items():
                base = Knobs.model_fields.get(k)
                if base is None or base.default != f.default:
                    typer.echo(line(k, f))
    elif kind == Kind.models:
        for name in MODELS.names():
            opts = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
            typer.echo(f"{name}{'  (' + opts + ')' if opts else ''}")
    else:
        for name in DATASETS.names():
            typer.echo(name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
