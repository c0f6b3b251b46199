"""End to end through the real CLI: trials run under Ray Tune, land in MLflow, come back as the table.
The module's store is the one README's first command writes on a machine that never ran kd-sweep."""
import io
import json
import os
import shlex
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from .conftest import REPO, SWEEPS, kd_sweep

# Later sweeps in the quickstart's folder: students of 2 epochs, the same teacher and evaluation.
SHRINK = ["--set", "train.epochs=2"]


def runs(uri: str, role: str | None = None):
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    filt = f"tags.`kd.role` = '{role}'" if role else ""
    return client.search_runs(exps, filter_string=filt, max_results=1000)


def readme_commands() -> list[str]:
    """The two commands README.md opens with: its first ```bash block."""
    block = (REPO / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """README's first command as a new user runs it: an empty home folder (no Ray token, no cache, no
    store), no RAY_/MLFLOW_/KD_SWEEP_ variable, a folder holding the repository's sweeps/. Its install
    half is what CI has just done in a fresh virtual environment; the rest runs as written."""
    install, run = (part.strip() for part in readme_commands()[0].split("&&"))
    assert install == "pip install -e ."
    cwd = tmp_path_factory.mktemp("quickstart")
    home = cwd / ".home"
    home.mkdir()
    (cwd / "sweeps").symlink_to(SWEEPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "KD_SWEEP_"))}
    env.update(HOME=str(home), PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    res = subprocess.run(shlex.split(run), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd, res


def test_readmes_first_command_prints_the_table_and_leaves_an_owner_only_ray_token(quickstart):
    """What the new user reads at the end is the table `kd-sweep report --table` prints; the Ray token
    made for the local cluster is theirs alone."""
    cwd, res = quickstart
    table = kd_sweep("report", "quickstart", "--table", cwd=cwd)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("| teacher/student ") and "| mlp-256-256/mlp-64 |" in table.stdout
    assert table.stdout in res.stdout
    token = cwd / ".home" / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o077 == 0 and len(token.read_text().strip()) == 64


def test_quickstart_trials_ran_and_logged(quickstart):
    cwd, res = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    assert (cwd / "mlflow.db").exists()  # MLflow's own default store, where `mlflow ui` looks
    parents = runs(uri, "sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = [r for r in runs(uri) if r.data.tags.get("mlflow.parentRunId") == parent]
    roles = pd.Series([r.data.tags["kd.role"] for r in children]).value_counts().to_dict()
    assert roles == {"student": 6, "scratch": 2, "teacher": 1}
    client = MlflowClient(uri)
    for r in children:
        assert r.info.status == "FINISHED"
        assert 0 <= r.data.metrics["eval/linear_top1"] <= 100 and "eval/knn_top1" in r.data.metrics
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, 31))
        if r.data.tags["kd.role"] != "teacher":  # eval.every: 5, a k-NN point every fifth epoch
            curve = client.get_metric_history(r.info.run_id, "curve/knn_top1")
            assert [m.step for m in curve] == [5, 10, 15, 20, 25, 30]
            # digits is smaller than the curve's slices: its last point is the final k-NN on every image
            assert curve[-1].value == pytest.approx(r.data.metrics["eval/knn_top1"])
        assert r.data.params["seed"] in {"0", "1"}
        role = r.data.tags["kd.role"]
        assert [a.path for a in client.list_artifacts(r.info.run_id, role)] == [f"{role}/model.pt"]
    students = [r for r in children if r.data.tags["kd.role"] == "student"]
    assert sorted(json.loads(r.data.tags["kd.cell"])["lambda"] for r in students) == [0, 0, 0.5, 0.5, 1.0, 1.0]
    assert all("train/ss" in r.data.metrics and "train/co" in r.data.metrics for r in students)
    assert [a.path for a in client.list_artifacts(parent)] == ["plot.png", "sweep.yaml", "table.md"]
    assert "all trials finished" in res.stdout


def test_every_run_records_the_versions_that_made_its_numbers(quickstart):
    """Each trial's run carries its worker's versions, the parent its driver's: here both are this
    environment's, and the commit is the checkout's."""
    import platform
    from importlib.metadata import version

    cwd, res = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    parent = quickstart_parent(uri, res)
    kids = [r for r in runs(uri) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    import torch

    want = {"kd-sweep": version("kd-sweep"), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": version("torchvision"), "ray": version("ray"), "mlflow": version("mlflow")}
    assert len(kids) == 9
    for r in [parent, *kids]:
        got = {k.removeprefix("kd.versions."): v for k, v in r.data.tags.items() if k.startswith("kd.versions.")}
        assert {k: got.get(k) for k in want} == want, r.info.run_name
        assert got["commit"] in (head, f"{head}-dirty")
        assert "cuda" not in got  # trained on the CPU: no CUDA or cuDNN said to have made it


def test_the_report_says_when_a_tables_runs_were_made_with_different_versions(quickstart, tmp_path):
    """One run of the table as if made with another torch: the report names the difference under the
    table, with how many runs each version made. Read from a copy of the store the README run wrote."""
    cwd, res = quickstart
    shutil.copy(cwd / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    same = kd_sweep("report", "quickstart", "--table", "--tracking-uri", uri, cwd=tmp_path)
    assert same.returncode == 0 and "Versions differ" not in same.stdout, same.stdout + same.stderr
    parent = max((r for r in runs(uri, "sweep") if r.data.tags["kd.sweep"] == "quickstart"),
                 key=lambda r: r.info.start_time)
    student = next(r for r in runs(uri, "student") if r.data.tags["mlflow.parentRunId"] == parent.info.run_id)
    MlflowClient(uri).set_tag(student.info.run_id, "kd.versions.torch", "2.13.0")
    csv = kd_sweep("report", "quickstart", "--format", "csv", "--tracking-uri", uri, cwd=tmp_path).stdout
    n = int(pd.read_csv(io.StringIO(csv))["n"].sum())  # the finished runs whose numbers the table shows
    out = kd_sweep("report", "quickstart", "--table", "--tracking-uri", uri, cwd=tmp_path).stdout
    torch_now = student.data.tags["kd.versions.torch"]
    assert (f"Versions differ between this table's runs: torch {torch_now} ({n - 1} runs), 2.13.0 (1 run)."
            in out), out


def test_each_loss_term_is_logged_weighted_and_raw(quickstart):
    """The weighted term is what the loss adds; the raw one is comparable across lambda. Read back from
    the store the quickstart wrote: at lambda 0 the weighted ss is 0 and the raw ss is not."""
    cwd, res = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    parent = quickstart_parent(uri, res).info.run_id
    students = [r for r in runs(uri) if r.data.tags.get("mlflow.parentRunId") == parent
                and r.data.tags["kd.role"] == "student"]
    assert len(students) == 6
    for r in students:
        lam, m = json.loads(r.data.tags["kd.cell"])["lambda"], r.data.metrics
        assert m["train/raw/ss"] < 0 and m["train/raw/co"] < 0  # -mean cosine, beta 1
        assert m["train/ss"] == pytest.approx(lam * m["train/raw/ss"], rel=1e-5, abs=1e-7)
        assert m["train/co"] == pytest.approx(m["train/raw/co"], rel=1e-5)


def test_runs_are_named_described_and_hold_only_what_decides_their_result(quickstart):
    """What a person sees of each run in the MLflow UI: a name that reads as the table does, a one-line
    description, params that are the knobs (not hashes, paths or resources: those are tags), and the
    whole resolved config as an artifact."""
    cwd, res = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    client = MlflowClient(uri)
    parent = quickstart_parent(uri, res)
    kids = {r.info.run_name: r for r in runs(uri) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(kids) == sorted(["teacher mlp-256-256", "scratch · mlp-64 · s0", "scratch · mlp-64 · s1",
                                   *(f"λ={v} · s{s}" for v in ("0", "0.5", "1") for s in (0, 1))])
    r = kids["λ=0.5 · s1"]
    assert r.data.tags["mlflow.note.content"].startswith(
        "coss student mlp-64 from teacher mlp-256-256 on digits: λ=0.5, seed 1, 30 epochs.")
    assert r.data.params["knobs.lambda"] == "0.5" and r.data.params["seed"] == "1"
    for bookkeeping in ("config_hash", "sweep", "role", "resources.gpu", "dataset.root", "dataset.fingerprint",
                        "teacher.hash"):
        assert bookkeeping not in r.data.params
    assert r.data.tags["kd.gpu"] == "0.0" and r.data.tags["kd.cell_label"] == "λ=0.5"
    config = json.loads(open(client.download_artifacts(r.info.run_id, "config.json")).read())
    assert config["config_hash"] == r.data.tags["kd.config_hash"] and config["dataset"]["root"]
    assert kids["teacher mlp-256-256"].data.tags["mlflow.note.content"].startswith(
        "Teacher mlp-256-256 trained for 30 epochs on digits.")


def test_the_printed_link_opens_the_sweeps_runs_in_kd_sweep_ui(quickstart):
    """`run` prints where to browse; the experiment holds the saved view the link names (this run's
    trials, flat, with λ, seed and scores as columns); `kd-sweep ui` serves the store and prints the link."""
    import socket
    import subprocess
    import sys
    import urllib.request

    cwd, res = quickstart
    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    parent = quickstart_parent(f"sqlite:///{cwd}/mlflow.db", res)
    exp = parent.info.experiment_id
    link = f"/#/experiments/{exp}/runs?viewStateShareKey=kd-sweep&workflowType=machine_learning"
    assert f"browse the runs: `kd-sweep ui`, then\n  http://127.0.0.1:5000{link}\n" in res.stdout
    view = json.loads(client.get_experiment(exp).tags["mlflow.sharedViewState.kd-sweep"])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    assert view["orderByKey"] != "attributes.start_time"  # sorted by start time, the UI folds them away
    assert {"params.`knobs.lambda`", "tags.`kd.seed`", "metrics.`eval/linear_top1`"} <= set(view["selectedColumns"])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = ui.stdout.readline()
        assert first.startswith("MLflow UI on sqlite:///") and first.strip().endswith(f"127.0.0.1:{port}{link}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        if shutil.which("chromium"):  # what a person sees at the link: the trials by name, not a collapsed parent
            dom = browse(f"http://127.0.0.1:{port}{link}", "mlflow_link")
            assert "λ=0.5 · s1" in dom and "scratch · mlp-64 · s0" in dom, dom[-2000:]
            # A cell link of the HTML report opens that cell's runs, listed by name (not folded under the parent).
            import html
            import re

            latest = max((r for r in runs(f"sqlite:///{cwd}/mlflow.db", "sweep") if r.data.tags["kd.sweep"] == "quickstart"),
                         key=lambda r: r.info.start_time)  # what `report quickstart` reports
            cell = [r for r in runs(f"sqlite:///{cwd}/mlflow.db") if r.data.tags.get("mlflow.parentRunId") ==
                    latest.info.run_id and r.data.tags.get("kd.cell_label") == "λ=0.5"]
            out = kd_sweep("report", "quickstart", "--format", "html", "-o", "cells.html", cwd=cwd)
            assert out.returncode == 0 and cell, out.stderr
            found = [html.unescape(a) for a in re.findall(r'<a href="([^"]+)"', (cwd / "cells.html").read_text())
                     if all(r.info.run_id in a for r in cell)]
            assert found and "orderByKey=" in found[0]
            dom = browse(found[0].replace("127.0.0.1:5000", f"127.0.0.1:{port}"), "mlflow_cell_link")
            assert all(r.info.run_name in dom for r in cell), dom[-2000:]
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
    with pytest.raises(OSError):  # `kill` on kd-sweep ui takes the MLflow server with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)



def test_finished_trials_keep_only_their_final_checkpoint_and_the_disk_use_is_told(quickstart):
    cwd, res = quickstart
    parent = quickstart_parent(f"sqlite:///{cwd}/mlflow.db", res)
    trials = [d for d in (cwd / "ray_results").glob(f"quickstart*{parent.info.run_id[:8]}-1/*") if d.is_dir()]
    assert len(trials) >= 5  # the teacher, the students (packed by three on 2 cores), two scratch students
    for d in trials:
        assert [c.name for c in d.glob("checkpoint_*")] == ["checkpoint_000029"], d  # 30 epochs: the last
    assert "epoch checkpoints: " in res.stdout and "MB under " in res.stdout and "(keep_checkpoints: last)" in res.stdout

def test_report_table_holds_the_numbers_mlflow_holds(quickstart):
    cwd, ran = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    res = kd_sweep("report", "--table", "--format", "csv", cwd=cwd)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(io.StringIO(res.stdout))
    assert list(table["pair"].unique()) == ["mlp-256-256/mlp-64"]
    assert list(table["column"]) == ["Teacher", "Scratch", "lambda=0", "lambda=0.5", "lambda=1.0"]
    by = {}
    for r in runs(uri):
        if r.data.tags.get("kd.role") in ("student", "scratch", "teacher"):
            role = r.data.tags["kd.role"]
            key = {"teacher": "Teacher", "scratch": "Scratch"}.get(role) or \
                f"lambda={json.loads(r.data.tags['kd.cell'])['lambda']}"
            by.setdefault(key, []).append(r.data.metrics["eval/linear_top1"])
    for _, row in table.iterrows():
        vals = pd.Series(by[row["column"]])
        assert row["n"] == len(vals)
        assert row["mean"] == pytest.approx(vals.mean(), abs=1e-3)
        if len(vals) > 1:
            assert row["std"] == pytest.approx(vals.std(ddof=1), abs=1e-3)
    # The parent run holds the same table, as an artifact and as one metric per cell.
    parent = quickstart_parent(uri, ran)
    md = kd_sweep("report", "--table", cwd=cwd).stdout
    assert open(MlflowClient(uri).download_artifacts(parent.info.run_id, "table.md")).read() == md
    for _, row in table.iterrows():
        name = f"table/{row['pair'].replace('/', '_')}/{row['column'].replace('=', '_')}"
        assert parent.data.metrics[f"{name}/mean"] == pytest.approx(row["mean"], abs=1e-3)
        assert parent.data.metrics[f"{name}/n"] == row["n"]
    students = table[table["column"] != "Teacher"]
    top = students["mean"].round(2).max()
    best = students.loc[students["mean"].round(2) == top, "column"].tolist()
    assert table.loc[table["best"], "column"].tolist() == best

    md = kd_sweep("report", cwd=cwd).stdout  # default: the latest sweep, markdown
    header = md.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == \
        ["teacher/student", "Teacher", "Scratch", "lambda=0", "lambda=0.5", "lambda=1.0"]
    assert md.count("**") == 2 * len(best)


def test_the_html_report_is_one_page_with_the_table_the_plot_and_links_to_each_cells_runs(quickstart):
    import base64
    import re

    cwd, _ = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    parent = max((r for r in runs(uri, "sweep") if r.data.tags["kd.sweep"] == "quickstart"),
                 key=lambda r: r.info.start_time)  # what `report quickstart` reports: its latest run
    res = kd_sweep("report", "quickstart", "--format", "html", "--cost", "-o", "site/report.html", cwd=cwd)
    assert res.returncode == 0 and "wrote site/report.html" in res.stderr, res.stderr
    page = (cwd / "site" / "report.html").read_text()
    csv = pd.read_csv(io.StringIO(kd_sweep("report", "quickstart", "--format", "csv", cwd=cwd).stdout))
    kids = [r for r in runs(uri) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for _, row in csv.iterrows():  # every cell's number, linked to exactly its runs
        assert f"{row['mean']:.2f} ± " in page
    cells: dict[str, list[str]] = {}
    for r in kids:
        if r.data.tags["kd.role"] == "student":
            cells.setdefault(r.data.tags["kd.cell_label"], []).append(r.info.run_id)
    links = re.findall(r'<a href="([^"]+)"', page)
    for ids in cells.values():
        assert any(all(i in link for i in ids) and "workflowType=machine_learning" in link for link in links)
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"  # the plot, inside the page
    assert "Cost per cell" in page and "<script" not in page and "http" not in page.split("<a href")[0]
    if shutil.which("chromium"):
        dom = browse((cwd / "site" / "report.html").as_uri(), "html_report")
        assert "mlp-256-256/mlp-64" in dom and "lambda=0.5" in dom

def test_second_sweep_reuses_the_trained_teacher(quickstart):
    cwd, _ = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    res = kd_sweep("run", str(SWEEPS / "quickstart.yaml"), *SHRINK, "--set", "grid.lambda=[0.25]",
                   "--set", "seeds=[0]", "--set", "scratch=false", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reusing run" in res.stdout and "training 1 teacher" not in res.stdout
    assert len(runs(uri, "teacher")) == 1
    assert len(runs(uri, "sweep")) == 2
    table = kd_sweep("report", "quickstart", "--format", "csv", cwd=cwd).stdout
    assert pd.read_csv(io.StringIO(table))["column"].tolist() == ["Teacher", "lambda=0.25"]


ONE_TRIAL = [*SHRINK, "--set", "grid.lambda=[0.5]", "--set", "seeds=[0]", "--set", "scratch=false"]


def test_teacher_from_a_repdistiller_checkpoint_is_evaluated_not_trained(quickstart):
    import torch

    cwd, _ = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    trained = runs(uri, "teacher")[0]
    local = mlflow.artifacts.download_artifacts(run_id=trained.info.run_id, artifact_path="teacher/model.pt",
                                                tracking_uri=uri)
    ckpt = cwd / "ckpt_epoch_240.pth"
    torch.save({"model": torch.load(local, weights_only=True), "epoch": 240, "accuracy": 0.0}, ckpt)
    res = kd_sweep("run", str(SWEEPS / "quickstart.yaml"), *ONE_TRIAL,
                   "--set", f"pairs.0.teacher.checkpoint={ckpt}", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 trials to run (+ scoring 1 teacher(s))" in res.stdout  # one Tuner: no phase for training
    given = [r for r in runs(uri, "teacher") if r.info.run_id != trained.info.run_id]
    assert len(given) == 1
    client = MlflowClient(uri)
    assert client.get_metric_history(given[0].info.run_id, "train/loss") == []  # not trained
    # Same weights, same test set: the same score.
    assert given[0].data.metrics["eval/classifier_top1"] == trained.data.metrics["eval/classifier_top1"]


def test_new_evaluation_rescores_the_teacher_without_retraining(quickstart):
    cwd, _ = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    before = len(runs(uri, "teacher"))
    res = kd_sweep("run", str(SWEEPS / "quickstart.yaml"), *ONE_TRIAL, "--set", "eval.knn.k=3", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "re-scoring the weights of run" in res.stdout
    new = runs(uri, "teacher")
    assert len(new) == before + 1
    rescored = max(new, key=lambda r: r.info.start_time)
    assert MlflowClient(uri).get_metric_history(rescored.info.run_id, "train/loss") == []
    assert rescored.data.params["eval.knn.k"] == "3"


def test_lambda_ablation_on_cifar100_format_data(cifar_root, tmp_path):
    res = kd_sweep("run", str(SWEEPS / "lambda_ablation.yaml"),
                   "--set", f"dataset.root={cifar_root}", "--set", "dataset.verify_checksum=false",
                   "--set", "resources.gpu=0", "--set", "resources.cpu=1", "--set", "seeds=[0]",
                   "--set", "train.batch_size=64", "--set", "teacher_train.batch_size=64",
                   "--set", "train.epochs=1", "--set", "teacher_train.epochs=1",
                   "--set", "eval.linear.epochs=2", "--set", "eval.linear.milestones=[1]", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert len(runs(uri, "teacher")) == 2 and len(runs(uri, "student")) == 8
    out = kd_sweep("report", "lambda_ablation", "--format", "csv", cwd=tmp_path)
    table = pd.read_csv(io.StringIO(out.stdout))
    assert list(table["pair"].unique()) == ["resnet32x4/resnet8x4", "resnet56/resnet20"]
    assert table.groupby("pair")["column"].apply(list).tolist() == \
        [["Teacher", "lambda=0", "lambda=0.25", "lambda=0.5", "lambda=1.0"]] * 2
    latex = kd_sweep("report", "lambda_ablation", "--format", "latex", cwd=tmp_path).stdout
    assert r"\toprule" in latex and "resnet32x4/resnet8x4" in latex
    assert latex.count(r"\textbf{") == table["best"].sum() >= 2  # ties on random pixels are all bold
    assert r"linear\_top1 (\%)" in latex and "±" not in latex


def test_a_teachers_sweep_trains_only_teachers(tmp_path):
    import yaml

    f = tmp_path / "teachers.yaml"
    f.write_text(yaml.safe_dump({
        "name": "teachers_digits", "dataset": {"name": "digits"},
        "pairs": [{"teacher": {"model": "mlp", "hidden": [32]}}, {"teacher": {"model": "mlp", "hidden": [16]}}],
        "teacher_train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "milestones": []},
        "eval": {"knn": {"k": 5}, "classifier": {}}, "resources": {"cpu": 1, "gpu": 0}}))
    res = kd_sweep("run", str(f), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "teachers ready" in res.stdout
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert len(runs(uri, "teacher")) == 2 and runs(uri, "student") == [] and runs(uri, "scratch") == []
    table = pd.read_csv(io.StringIO(kd_sweep("report", "--format", "csv", "--metric", "classifier_top1",
                                             cwd=tmp_path).stdout))
    assert sorted(table["pair"]) == ["mlp-16", "mlp-32"] and set(table["column"]) == {"Teacher"}
    assert (table["mean"] > 50).all()



def test_dry_run_lists_trials_and_runs_nothing(quickstart):
    cwd, _ = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    before = len(runs(uri))
    res = kd_sweep("run", str(SWEEPS / "quickstart.yaml"), "--dry-run", cwd=cwd)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("quickstart: 8 trials (1 pair(s) x 3 cell(s) x 2 seed(s), + from-scratch students)")
    # One line per cell (3 lambdas and scratch), not one per trial.
    assert sum(ln.endswith(": 2 finished earlier with the same config") for ln in lines) == 4
    assert "  λ=0.5 · mlp-256-256/mlp-64: 2 finished earlier with the same config" in lines
    assert any(ln.startswith("8 finished earlier, 0 estimated") for ln in lines)
    more = kd_sweep("run", str(SWEEPS / "quickstart.yaml"), "--dry-run", "--set", "seeds=[7]", cwd=cwd)
    assert sum(": 1 at ~" in ln and "earlier run(s))" in ln for ln in more.stdout.splitlines()) == 4  # estimates
    # Seed 7's three lambda cells may share a teacher forward (the from-scratch student has no teacher):
    # on 2 trial slots, as a pack of 2 beside a trial of 1, so neither slot idles.
    if (os.cpu_count() or 1) == 2:  # this machine and CI's
        assert "here (2 trial slot(s)) the 4 students would run as 3 trial(s), 1 of them packs of 2" in more.stdout
    assert len(runs(uri)) == before  # nothing ran, nothing logged


def quickstart_parent(uri: str, res):
    """The parent run the fixture's own `kd-sweep run` made (later tests of this module add others)."""
    return MlflowClient(uri).get_run(res.stdout.split(", parent run ", 1)[1].split()[0])


def browse(url: str, shot: str) -> str:
    """The page's DOM after headless Chromium ran its scripts, and a screenshot of it (kept under
    $KD_SWEEP_SHOTS when set, for a person to look at)."""
    import subprocess
    import tempfile

    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
            "--virtual-time-budget=20000"]
    folder = os.environ.get("KD_SWEEP_SHOTS") or tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    png = os.path.join(folder, f"{shot}.png")
    subprocess.run([*args, f"--screenshot={png}", url], capture_output=True, timeout=120)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    return subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def test_the_reproduction_record_of_a_run_says_how_it_was_made(quickstart):
    """`kd-sweep record` writes, from the store alone, the command the user typed, the commit and
    versions the runs recorded, the hardware, the wall time, and the same table `report` prints."""
    from importlib.metadata import version

    cwd, first = quickstart
    uri = f"sqlite:///{cwd}/mlflow.db"
    typed = readme_commands()[0].split("&&")[1].strip()
    assert quickstart_parent(uri, first).data.tags["kd.command"] == typed  # as the user typed it
    res = kd_sweep("record", "quickstart", "--out", "records/quickstart.md", cwd=cwd)
    assert res.returncode == 0, res.stderr
    text = (cwd / "records" / "quickstart.md").read_text()
    assert text.startswith("# Reproduction record: quickstart\n")
    assert "Written by `kd-sweep record quickstart --out records/quickstart.md`" in text
    # The sweep's latest run (other tests of this module may have run it again, shrunk).
    parent = MlflowClient(uri).get_run(text.split("- parent run: ", 1)[1].split()[0])
    assert parent.data.tags["kd.command"].startswith("kd-sweep run ")
    assert f"- command: `{parent.data.tags['kd.command']}`" in text
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    commit = next(ln for ln in text.splitlines() if ln.startswith("- commit: "))
    assert commit in (f"- commit: {head}", f"- commit: {head}-dirty")
    assert f"torch {parent.data.tags['kd.versions.torch']}" in text and f"mlflow {version('mlflow')}" in text
    assert f"- hardware: {parent.data.tags['kd.versions.cpu']}" in text and "trials ran on cpu" in text
    wall = (parent.info.end_time - parent.info.start_time) / 1000
    assert f"wall time {round(wall)} s" in text or f"({round(wall)} s)" in text
    table = kd_sweep("report", "quickstart", "--paper", cwd=cwd).stdout
    assert table.split("\n\n")[0] in text  # the table rows as `report --paper` prints them
