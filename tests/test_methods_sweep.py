"""Every registered method as one axis of a sweep: each trial runs through Ray Tune on tiny CIFAR-format
data, finishes, and logs each of its loss terms to MLflow."""
import yaml
from mlflow import MlflowClient

from trainables.methods import METHODS, method_class

from .conftest import kd_sweep

# Terms every trial logs whatever its method; the rest are the method's own.
COMMON = {"train/loss", "train/lr", "train/images_per_s", "train/epoch_s", "train/ce", "train/kd"}


def test_every_method_runs_in_one_sweep(cifar_root, tmp_path):
    methods = METHODS.names()
    own = {}
    for m in methods:  # the methods' own pre-training stages shortened, as --smoke does
        if method_class(m).smoke_limits:
            own[m] = dict(method_class(m).smoke_limits)
    sweep = {
        "name": "all_methods", "setting": "supervised",
        "dataset": {"name": "cifar100", "root": str(cifar_root), "verify_checksum": False},
        "pairs": [{"teacher": "resnet20", "student": "resnet8x4"}],  # dims and channels differ on purpose
        "method": "coss", "grid": {"method": methods}, "knobs": {"lambda_ce": 1.0, **own},
        "seeds": [0],
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "milestones": []},
        "teacher_train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "milestones": []},
        "eval": {"knn": {"k": 5}, "classifier": {}},
        "resources": {"cpu": 1, "gpu": 0},
    }
    f = tmp_path / "all.yaml"
    f.write_text(yaml.safe_dump(sweep))
    res = kd_sweep("run", str(f), cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("all_methods").experiment_id
    runs = client.search_runs([exp], "tags.`kd.role` = 'student'", max_results=500)
    by_method = {r.data.tags["kd.method"]: r for r in runs}
    assert sorted(by_method) == methods
    silent = []
    for m, r in by_method.items():
        assert r.info.status == "FINISHED", m
        assert "eval/knn_top1" in r.data.metrics and "eval/classifier_top1" in r.data.metrics, m
        terms = {k for k in r.data.metrics if k.startswith(("train/", "pretrain/"))} - COMMON
        if m != "none" and not terms:
            silent.append(m)
    assert not silent, f"methods that logged no loss term of their own: {silent}"
