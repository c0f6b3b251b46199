"""`kd-sweep`: run a sweep file, print its paper table, list what can be swept."""
from __future__ import annotations

import atexit
import os
import sys
import threading
from enum import Enum
from typing import Optional

import typer

WIDTH = 100  # what kd-sweep prints fits a 100-column terminal

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Knowledge-distillation ablation grids: a YAML sweep -> Ray Tune trials -> MLflow -> paper tables.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"kd-sweep {version('kd-sweep')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                       help="print kd-sweep's version and exit")) -> None:
    """Knowledge-distillation ablation grids: a YAML sweep -> Ray Tune trials -> MLflow -> paper tables."""


def _fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def usable_store(uri: str) -> str:
    """URI, once it answers (tracking.store_problem); else the one-line reason, exit 1."""
    from .tracking import store_problem

    if (why := store_problem(uri)) is not None:
        _fail(why, 1)
    return uri


def existing_store(uri: str) -> str:
    """Commands that only read (report, status) never create a store: MLflow would make an empty
    sqlite file (and its folders) at the path and then find no runs in it."""
    from results.mlflow_schema import NoRuns

    from .tracking import local_store_path, store_exists

    usable_store(uri)
    if not store_exists(uri):
        raise NoRuns(f"no MLflow store at {local_store_path(uri)}: run `kd-sweep run SWEEP.yaml` here first, or point at the"
                     " store with --tracking-uri (or MLFLOW_TRACKING_URI)")
    return uri


@app.command()
def run(
    file: str = typer.Argument(..., metavar="FILE", help="the sweep YAML"),
    set_: list[str] = typer.Option([], "--set", "-s", metavar="FIELD=VALUE", help="override a field: --set train.epochs=1 (repeatable)"),
    address: Optional[str] = typer.Option(None, metavar="ADDRESS", help="join a running Ray cluster (default: RAY_ADDRESS, else local)"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", metavar="URI",
                                               help="MLflow store (default: sqlite:///mlflow.db here)"),
    storage: Optional[str] = typer.Option(None, metavar="PATH|URI", help="where trial checkpoints go (default: ./ray_results)"),
    smoke: bool = typer.Option(False, "--smoke", metavar="", help="the same sweep at a size a 2-core CPU runs in minutes:"
                               " 1 seed, 1 epoch, a few hundred images; the numbers are not results"),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="", help="print the trials, counts and an estimate from earlier"
                                 " runs of the same cells; run nothing"),
    rerun: bool = typer.Option(False, "--rerun", metavar="", help="run every student trial again, even those a sweep already"
                               " finished (by default they are linked into this sweep, not run)"),
    resume: bool = typer.Option(False, "--resume", metavar="", help="only continue a sweep whose driver died (exit 1 when there"
                                " is none); without it a plain run continues one too, or starts anew"),
) -> None:
    """Validate FILE, then run every trial of it and log them to MLflow.

    Run it again after the driver died (Ctrl-C, kill, a lost head node) and it continues: finished
    trials are not run again and unfinished ones resume from their last epoch checkpoint."""
    import os

    from .spec import SpecError, load_sweep

    try:
        sweep = load_sweep(file, set_)
        if smoke:
            from .smoke import smoke_sweep

            sweep, where = smoke_sweep(sweep, os.path.dirname(os.path.abspath(file)))
            typer.echo(f"SMOKE RUN of {file}: 1 seed, 1 epoch, {where}. These numbers are NOT results;"
                       f" they go to experiment {sweep.name!r}.")
    except SpecError as e:
        _fail(str(e), 2)
    from .runner import RunError, run_sweep
    from .tracking import resolve_tracking_uri

    uri = usable_store(resolve_tracking_uri(tracking_uri))
    if dry_run:
        from .dryrun import dry_run as show

        try:
            show(sweep, file, uri)
        except SpecError as e:
            _fail(str(e), 2)
        return
    try:
        if rerun and resume:
            _fail("--rerun starts the sweep anew and --resume continues one: give one of them", 2)
        code = run_sweep(sweep, file, address, uri, storage, smoke=smoke,
                         rerun=rerun, resume=resume)
    except SpecError as e:
        _fail(str(e), 2)
    except RunError as e:
        _fail(str(e), 1)
    if smoke:
        typer.echo("SMOKE RUN finished: the numbers above are a pipeline check, not results.")
    raise typer.Exit(code)


class Fmt(str, Enum):
    md = "md"
    latex = "latex"
    csv = "csv"
    html = "html"


@app.command()
def report(
    sweep: Optional[str] = typer.Argument(None, metavar="SWEEP", help="sweep name (default: the latest sweep in the store)"),
    table: bool = typer.Option(True, "--table/--no-table", metavar="", help="print the paper-style table"),
    metric: Optional[str] = typer.Option(None, metavar="METRIC", help="linear_top1 (default), knn_top1, classifier_top1, ...;"
                                         " a search sweep's default is its own metric"),
    fmt: Fmt = typer.Option(Fmt.md, "--format", metavar="FORMAT",
                            help="md, latex (booktabs), csv, or html (one self-contained page: the table, its"
                                 " notes, the plot, the cost, each cell linked to its MLflow runs)"),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="FILE",
                                      help="write the report to FILE (folders are made) instead of stdout"),
    best_over: Optional[str] = typer.Option(
        None, "--best-over", metavar="AXIS",
        help="per pair, other knobs and seed, take the best run over AXIS (e.g. scale), then average seeds"),
    paper: bool = typer.Option(False, "--paper", metavar="", help="the published number, Δ (ours − paper) and a verdict beside each"
                               " cell; under the table, how many of the sweep's published numbers are shown (and why"
                               " not the others) and its known deviations from the authors' runs"),
    cost: bool = typer.Option(False, "--cost", metavar="", help="GPU-hours (or CPU-hours) per cell and for the table"),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="FILE.png",
                                       help="draw the metric against the swept numeric knob, one line per pair"),
    axis: Optional[str] = typer.Option(None, "--axis", metavar="KNOB", help="the knob --plot draws against (default: the swept one)"),
    smoke: bool = typer.Option(False, "--smoke", metavar="", help="report the sweep's latest smoke run (kd.smoke) instead"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", metavar="URI",
                                               help="MLflow store (default: sqlite:///mlflow.db here)"),
) -> None:
    """Print the table of a sweep's latest run: pairs x swept values, mean ± std (n) over seeds."""
    from results.collect import sweep_runs
    from results.mlflow_schema import NoRuns
    from results.report import compose
    from results.table import ReportError

    from .tracking import resolve_tracking_uri
    from .ui import cells_link

    try:
        uri = existing_store(resolve_tracking_uri(tracking_uri))
        parent, runs = sweep_runs(uri, sweep, smoke)
    except NoRuns as e:
        _fail(str(e), 1)
    if not table and not plot:
        return
    if "kd.search" in parent.data.tags:  # not a grid: its best trials and what each knob mattered
        from results.search import render_search

        sys.stdout.write(render_search(parent.data.tags, runs, fmt.value,
                                       f"eval/{metric}" if metric and not metric.startswith("eval/") else metric)[0])
        return
    metric = metric or "linear_top1"
    smoke_run = parent.data.tags.get("kd.smoke") == "true"
    try:
        text, tab, col = compose(parent.data.tags, parent.info.run_id, runs, metric, fmt.value, best_over,
                                 paper, cost, link=cells_link(uri, parent.info.experiment_id), axis=axis)
        if plot:
            from results.plot import plot as draw

            draw(tab, col, plot, axis, smoke=smoke_run)
    except KeyError as e:
        _fail(e.args[0], 2)
    except ReportError as e:
        _fail(str(e), 2)
    if paper and not tab.attrs.get("paper_sources"):
        typer.echo(f"note: no published number matches these cells ({col.removeprefix('eval/')},"
                   f" dataset {parent.data.tags.get('kd.dataset', '?')}); see results/published/", err=True)
    if table and out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        typer.echo(f"wrote {out}", err=True)
    elif table:
        sys.stdout.write(text)
    if plot:
        typer.echo(f"wrote {plot}", err=True)
    _browse(uri, parent.info.experiment_id)


@app.command()
def record(
    sweeps: list[str] = typer.Argument(..., metavar="SWEEP...", help="the sweeps the record covers, in its order"),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="FILE",
                                      help="write the record to FILE (folders are made) instead of stdout"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", metavar="URI",
                                               help="MLflow store (default: sqlite:///mlflow.db here)"),
) -> None:
    """A reproduction record of SWEEPs' latest runs (markdown): per sweep the command, commit, versions,
    hardware, wall time and its `--paper` tables, and on top every published number against ours."""
    from results.collect import sweep_runs
    from results.mlflow_schema import NoRuns
    from results.published import load_published
    from results.record import SweepRun, render_record

    from .resume import command_line
    from .tracking import resolve_tracking_uri

    uri = existing_store(resolve_tracking_uri(tracking_uri))
    found = []
    for name in sweeps:
        try:
            parent, runs = sweep_runs(uri, name)
        except NoRuns as e:
            _fail(str(e), 1)
        found.append(SweepRun(name, parent.info.run_id, dict(parent.data.tags), parent.info.start_time,
                              parent.info.end_time, parent.info.status, runs))
    text = render_record(found, load_published(), command_line())
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        typer.echo(f"wrote {out}", err=True)
    else:
        sys.stdout.write(text)


def _browse(uri: str, exp_id: str) -> None:
    """The link to the runs, on stderr: stdout may be a table piped into a file."""
    from .tracking import Store
    from results.mlflow_schema import has_view

    from .ui import browse_hint

    from mlflow.exceptions import MlflowException

    try:
        view = has_view(Store(uri).client, exp_id)
    except MlflowException:  # a hint never fails the command that printed its table
        return
    typer.echo(browse_hint(uri, exp_id, view), err=True)


@app.command()
def status(
    sweep: Optional[str] = typer.Argument(None, metavar="SWEEP", help="sweep name (default: the latest sweep in the store)"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", metavar="URI",
                                               help="MLflow store (default: sqlite:///mlflow.db here)"),
) -> None:
    """Each trial of a sweep's latest run: done, reused, running (epoch, ETA), failed (why), pending."""
    from results.mlflow_schema import NoRuns

    from .status import show
    from .tracking import resolve_tracking_uri

    try:
        failed = show(existing_store(resolve_tracking_uri(tracking_uri)), sweep, typer.echo)
    except NoRuns as e:
        _fail(str(e), 1)
    raise typer.Exit(1 if failed else 0)


@app.command()
def ui(
    sweep: Optional[str] = typer.Argument(None, metavar="SWEEP", help="sweep to open on (default: the latest sweep in the store)"),
    port: int = typer.Option(5000, metavar="PORT", help="port on 127.0.0.1"),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", metavar="URI"),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for the store `run` logs to, and print the link that opens the
    sweep's runs (for a server store, print the link to its own UI). Ctrl-C stops it."""
    from results.mlflow_schema import NoRuns, has_view, latest_parent

    from .tracking import Store, resolve_tracking_uri
    from .ui import serve

    try:
        uri = existing_store(resolve_tracking_uri(tracking_uri))
        client = Store(uri).client
        exp_id = latest_parent(client, sweep).info.experiment_id
    except NoRuns as e:
        if sweep is not None or "no MLflow store" in str(e):
            _fail(str(e), 1)
        exp_id = None  # a store with no sweep yet: the list of experiments
    raise typer.Exit(serve(uri, exp_id, port, typer.echo, exp_id is not None and has_view(client, exp_id)))


@app.command()
def bench(
    steps: int = typer.Option(10, metavar="N", help="timed steps per measurement (after the warm-up)"),
    faiss_n: Optional[int] = typer.Option(None, "--faiss-n", metavar="N", help="images in the k-NN timing (default 50k on a"
                                          " GPU, 10k on CPU)"),
) -> None:
    """kd-sweep's images/s against the hand-written loop, the share of the matmul peak, the
    orchestration overhead and the faiss k-NN time, measured here in one run."""
    from .bench import run_bench

    run_bench(typer.echo, steps, faiss_n)


class Kind(str, Enum):
    methods = "methods"
    models = "models"
    datasets = "datasets"


@app.command("list")
def list_(kind: Kind = typer.Argument(..., metavar="KIND", help="methods, models or datasets")) -> None:
    """What a sweep can name: methods with their knobs and defaults, models with their options, datasets."""
    from trainables.datasets import DATASETS
    from trainables.methods import METHODS
    from trainables.models import MODELS, model_options

    if kind == Kind.methods:
        from trainables.methods import Knobs

        import textwrap

        def line(k, f):
            """A knob, its default and its description wrapped under it, within WIDTH columns."""
            head, text, indent = f"    {f.alias or k:<14} {f.default!r:<9} ", f.description or "", " " * 29
            if len(head) > len(indent):  # a long default: the description starts on the next line
                return head.rstrip() + "\n" + textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent)
            return textwrap.fill(text, WIDTH, initial_indent=head, subsequent_indent=indent)

        typer.echo("every method:")
        for k, f in Knobs.model_fields.items():
            typer.echo(line(k, f))
        for name in METHODS.names():
            cls = METHODS.get(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
            first = doc.splitlines()[0] if doc else ""
            typer.echo("\n" + textwrap.fill(f"{name}: {first}", WIDTH, subsequent_indent="    "))
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
    """The console script. A finished command leaves by os._exit after the exit handlers: the
    interpreter's own teardown of the torch, Ray and MLflow modules would add 2-4 s to every command
    (measured on 2 cores) and has nothing left to save."""
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what normal exit does first: wait for non-daemon threads
    atexit._run_exitfuncs()  # Ray's, MLflow's and logging's handlers still run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
