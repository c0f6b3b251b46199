"""The published numbers (results/published/*.csv) and the sweep files that reproduce them.

Every CSV loads; a few numbers per table are checked against values typed here from the papers (not
read back from the CSVs); every row names models of our registry and is keyed the way a run of its
sweep file will be (pair label, method, grid/cells knobs, metric, dataset); every sweep file validates.
"""
import re
from pathlib import Path

import pytest

from orchestrator.spec import Sweep, load_sweep
from results.published import COLUMNS, HERE, load_published
from trainables.methods import METHODS
from trainables.models import MODELS

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

# (paper, table) -> the sweep files that reproduce it
TABLES = {
    ("coss", "supp. Table 1"): ["coss_table1_baselines"],
    ("coss", "supp. Table 2"): ["coss_table2_components"],
    ("coss", "supp. Table 3"): ["lambda_ablation"],
    ("coss", "supp. Table 4"): ["coss_table4_bn"],
    ("coss", "ImageNet table"): ["coss_imagenet"],
    ("coss", "supp. §3"): ["coss_imagenet"],  # SEED + SS: no kd-sweep method; coss_imagenet names its pair
    ("rrkd", "Table 1"): ["rrkd_tables12_mnist_ssl"],
    ("rrkd", "Table 2"): ["rrkd_tables12_mnist_supervised"],
    ("rrkd", "Table 3"): ["rrkd_table3_cifar10", "rrkd_table3_cifar100", "rrkd_table3_svhn"],
    ("rrkd", "Table 5"): ["rrkd_table5_anchors"],
    ("miles", "Table 1"): ["miles_table1_norm"],
    ("miles", "Table 2"): ["miles_table2_alpha"],
    ("miles", "Table 3"): ["miles_table3_logsum_subset", "miles_table3_logsum_full"],
    ("miles", "Table 4"): ["miles_table4_cifar100", "miles_table4_cifar100_lightweight"],
    ("miles", "Table 4 (RandAugment)"): ["miles_table4_cifar100_randaugment",
                                         "miles_table4_cifar100_randaugment_lightweight"],
    ("miles", "Table 6"): ["miles_table6_imagenet"],
    ("crd", "Table 1"): ["teachers_cifar100", "lambda_ablation", "coss_table1_baselines", "coss_table2_components",
                         "coss_table4_bn"],
    ("crd", "Table 2"): ["teachers_cifar100"],
}
# Published tables no sweep file runs yet, and why.
PENDING: dict = {}
# what each metric needs the sweep's `eval` to run
PROTOCOL = {"linear_top1": "linear", "linear_top5": "linear", "knn_top1": "knn", "classifier_top1": "classifier"}
_sweeps: dict[str, Sweep] = {}


def sweep(name: str) -> Sweep:
    if name not in _sweeps:
        _sweeps[name] = load_sweep(SWEEPS / f"{name}.yaml")
    return _sweeps[name]


@pytest.fixture(scope="module")
def published():
    return load_published()


def value(df, paper, table, dataset, pair, method, cell=None, metric=None):
    rows = df[(df.paper == paper) & (df.table == table) & (df.dataset == dataset) & (df.pair == pair)
              & (df.method == method)]
    rows = rows[rows.cell.map(lambda c: c == (cell or {}))]
    if metric is not None:
        rows = rows[rows.metric == metric]
    assert len(rows) == 1, (paper, table, pair, method, cell, metric, len(rows))
    return rows.value.iloc[0]


# --- the files -----------------------------------------------------------------------------------

def test_every_csv_loads_with_the_schema():
    files = sorted(HERE.glob("*.csv"))
    assert {f.stem for f in files} >= {"coss", "rrkd", "miles"}
    for f in files:
        df = load_published(f.stem)
        assert list(df.columns) == COLUMNS and len(df) > 0, f
        assert (df.paper == f.stem).all()
        assert df.value.between(0, 100).all() and df.cell.map(lambda c: isinstance(c, dict)).all()
        assert df[["table", "dataset", "pair", "method", "metric"]].map(bool).all().all(), f
        keys = df[["table", "dataset", "pair", "method", "metric"]].astype(str).agg("|".join, axis=1)
        keys = keys + "|" + df.cell.map(lambda c: repr(sorted(c.items())))
        assert not keys.duplicated().any(), f"{f.name}: a key repeats: {list(keys[keys.duplicated()])}"
    assert len(load_published()) == sum(len(load_published(f.stem)) for f in files)


def test_row_counts(published):
    counts = published.groupby("paper").size().to_dict()
    # CoSS: supp. T1 33 + T2 6 + T3 8 + T4 6 + supp. §3 2 + ImageNet 22; RRKD: T1 3 + T2 3 + T3 12 + T5 4;
    # Miles: T1 12 + T2 14 + T3 6 + T4 73 (first block: KD, FitNet, AT, CRD, SSKD, Our Method x 10 pairs, 5
    # teachers, 8 students) + T4 RandAugment block 45
    # (KD, CRD, DKD, Our Method x 10 pairs, 5 teachers) + T6 8 (teacher, student, 5 methods, ReviewKD)
    # CRD: the five teachers of its Tables 1-2 that kd-sweep's CIFAR-100 sweeps use.
    assert counts == {"coss": 77, "rrkd": 22, "miles": 158, "crd": 5}
    by_table = published.groupby(["paper", "table"]).size().to_dict()
    assert by_table[("miles", "Table 4 (RandAugment)")] == 45 and by_table[("miles", "Table 6")] == 8
    assert by_table[("miles", "Table 4")] == 73
    assert by_table[("coss", "supp. §3")] == 2


# --- numbers against the papers, typed by hand ----------------------------------------------------

def test_coss_spot_checks(published):
    v = lambda *a, **k: value(published, "coss", *a, **k)  # noqa: E731
    assert v("supp. Table 1", "cifar100", "resnet56/resnet20", "at") == 49.00
    assert v("supp. Table 1", "cifar100", "vgg13/vgg8", "vid") == 73.65
    assert v("supp. Table 1", "cifar100", "resnet32x4/resnet8x4", "rkd") == 32.33
    assert v("supp. Table 1", "cifar100", "resnet56/resnet20", "nst") == 25.62
    assert v("supp. Table 1", "cifar100", "vgg13/vgg8", "ft") == 39.71
    assert v("supp. Table 1", "cifar100", "resnet32x4/resnet8x4", "dist") == 67.67
    assert v("supp. Table 1", "cifar100", "vgg13/vgg8", "coss") == 74.58
    assert v("supp. Table 2", "cifar100", "resnet32x4/resnet8x4", "coss", {"lambda": 1, "lambda_co": 0}) == 73.53
    assert v("supp. Table 2", "cifar100", "resnet56/resnet20", "coss", {"lambda": 0, "lambda_co": 1}) == 70.58
    assert v("supp. Table 3", "cifar100", "resnet56/resnet20", "coss", {"lambda": 0.25}) == 71.34
    assert v("supp. Table 3", "cifar100", "resnet32x4/resnet8x4", "coss", {"lambda": 1.0}) == 73.91
    assert v("supp. Table 4", "cifar100", "wrn_40_2/wrn_16_2", "coss_bn") == 73.42
    assert v("supp. Table 4", "cifar100", "resnet32x4/resnet8x4", "coss") == 73.90
    assert v("ImageNet table", "imagenet", "resnet50", "teacher", metric="linear_top1") == 67.40
    assert v("ImageNet table", "imagenet", "resnet50/resnet18", "coss", metric="linear_top5") == 84.81
    assert v("ImageNet table", "imagenet", "resnet50/resnet34", "coss", metric="knn_top1") == 54.80
    assert v("ImageNet table", "imagenet", "resnet50/efficientnet_b0", "coss", metric="linear_top1") == 67.36
    assert v("ImageNet table", "imagenet", "resnet50/resnet18", "bingo", metric="knn_top1") == 54.16
    assert v("ImageNet table", "imagenet", "resnet18", "mocov2", metric="linear_top1") == 52.20
    assert v("supp. §3", "imagenet", "resnet50/resnet18", "seed_ss") == 58.30
    assert v("supp. §3", "imagenet", "resnet50/resnet18", "seed") == 57.60


def test_rrkd_spot_checks(published):
    v = lambda *a, **k: value(published, "rrkd", *a, **k)  # noqa: E731
    assert v("Table 1", "mnist", "ae_encoder-128", "teacher") == 87.99
    assert v("Table 1", "mnist", "ae_encoder-128/ae_encoder-64", "autoencoder", {"weight": 1e-7}) == 74.14
    assert v("Table 1", "mnist", "ae_encoder-128/ae_encoder-64", "rrkd") == 80.88
    assert v("Table 2", "mnist", "ae_encoder-1200", "teacher") == 95.64
    assert v("Table 2", "mnist", "ae_encoder-32", "scratch") == 90.87
    assert v("Table 2", "mnist", "ae_encoder-1200/ae_encoder-32", "rrkd") == 92.94
    assert v("Table 3", "cifar10", "ResNet18", "teacher") == 88.13
    assert v("Table 3", "cifar10", "ResNet18/resnet9x0.5", "rrkd") == 86.21
    assert v("Table 3", "cifar100", "ResNet18/resnet9x0.5", "lpkd") == 57.04
    assert v("Table 3", "svhn", "ResNet18/resnet9x0.5", "sp") == 94.56
    assert v("Table 3", "svhn", "ResNet18/resnet9x0.5", "rrkd") == 94.55
    assert v("Table 5", "mnist", "ae_encoder-128/ae_encoder-64", "rrkd", {"anchors": "in_batch"}) == 81.42
    assert v("Table 5", "mnist", "ae_encoder-128/ae_encoder-64", "rrkd", {"anchors": "best_per_class"}) == 80.52
    assert set(published[published.paper == "rrkd"].metric) == {"linear_top1", "classifier_top1"}


def test_miles_spot_checks(published):
    v = lambda *a, **k: value(published, "miles", *a, **k)  # noqa: E731
    assert v("Table 1", "imagenet", "mobilenet_v2", "scratch") == 50.89
    assert v("Table 1", "imagenet", "efficientnet_b0", "scratch") == 64.48
    assert v("Table 1", "imagenet", "vit_b_16/mobilenet_v3_large", "recipe", {"norm": "l2"}) == 54.65
    assert v("Table 1", "imagenet", "regnet_y_16gf/mobilenet_v2", "recipe", {"norm": "groupnorm"}) == 55.63
    assert v("Table 1", "imagenet", "convnext_tiny/efficientnet_b0", "recipe", {"norm": "batchnorm"}) == 67.95
    assert v("Table 2", "imagenet", "resnet50/resnet18", "recipe", {"alpha": 1}) == 61.74
    assert v("Table 2", "imagenet", "resnet50/resnet18", "recipe", {"alpha": 2.5}) == 62.84
    assert v("Table 2", "imagenet", "resnet50/resnet18", "recipe", {"alpha": 5}) == 63.40
    assert v("Table 3", "imagenet", "vit_b_16/mobilenet_v3_large", "recipe", {"distance": "logsum"}) == 59.80
    assert v("Table 3", "imagenet", "resnet50/resnet18", "recipe", {"distance": "l2"}) == 70.03
    assert v("Table 4", "cifar100", "wrn_40_2/wrn_40_1", "recipe") == 75.42
    assert v("Table 4", "cifar100", "ResNet50/MobileNetV2", "recipe") == 72.81
    assert v("Table 4", "cifar100", "wrn_40_2/ShuffleV1", "recipe") == 79.22
    assert v("Table 4", "cifar100", "resnet32x4", "teacher") == 79.63
    assert v("Table 4", "cifar100", "vgg8", "scratch") == 70.68
    # the first block's baselines and SSKD (printed beside Our Method)
    assert v("Table 4", "cifar100", "wrn_40_2/wrn_16_2", "kd") == 74.92
    assert v("Table 4", "cifar100", "resnet56/resnet20", "fitnet") == 71.60
    assert v("Table 4", "cifar100", "vgg13/MobileNetV2", "at") == 69.34
    assert v("Table 4", "cifar100", "ResNet50/MobileNetV2", "crd") == 70.32
    assert v("Table 4", "cifar100", "resnet32x4/ShuffleV2", "sskd") == 78.61
    assert v("Table 4", "cifar100", "wrn_40_2/ShuffleV1", "sskd") == 77.40
    # the RandAugment block (KD†, CRD†, DKD†, Our Method)
    ra = "Table 4 (RandAugment)"
    assert v(ra, "cifar100", "wrn_40_2/wrn_16_2", "kd") == 75.94
    assert v(ra, "cifar100", "resnet32x4/resnet8x4", "crd") == 77.69
    assert v(ra, "cifar100", "resnet32x4/ShuffleV2", "dkd") == 80.08
    assert v(ra, "cifar100", "ResNet50/vgg8", "recipe") == 77.08
    assert v(ra, "cifar100", "wrn_40_2/ShuffleV1", "recipe") == 78.79
    assert v(ra, "cifar100", "vgg13", "teacher") == 75.38
    # Table 6 prints top-1 *error*: the CSV keys accuracy, 100 - error
    assert v("Table 6", "imagenet", "resnet34", "teacher") == round(100 - 26.69, 2)
    assert v("Table 6", "imagenet", "resnet18", "scratch") == round(100 - 30.25, 2)
    assert v("Table 6", "imagenet", "resnet34/resnet18", "cc") == round(100 - 30.04, 2)
    assert v("Table 6", "imagenet", "resnet34/resnet18", "crd") == round(100 - 28.62, 2)
    assert v("Table 6", "imagenet", "resnet34/resnet18", "reviewkd") == round(100 - 28.39, 2)
    assert v("Table 6", "imagenet", "resnet34/resnet18", "recipe") == round(100 - 28.37, 2)


def test_the_same_run_is_one_number_across_tables(published):
    """Cells that two tables share carry the same published number."""
    v = lambda *a, **k: value(published, *a, **k)  # noqa: E731
    assert v("coss", "supp. Table 2", "cifar100", "resnet32x4/resnet8x4", "coss", {"lambda": 0, "lambda_co": 1}) \
        == v("coss", "supp. Table 3", "cifar100", "resnet32x4/resnet8x4", "coss", {"lambda": 0}) == 72.05
    assert v("miles", "Table 1", "imagenet", "vit_b_16/mobilenet_v3_large", "recipe", {"norm": "batchnorm"}) \
        == v("miles", "Table 3", "imagenet", "vit_b_16/mobilenet_v3_large", "recipe", {"distance": "l2"}) == 59.28
    assert v("miles", "Table 2", "imagenet", "convnext_tiny/efficientnet_b0", "recipe", {"alpha": 4}) \
        == v("miles", "Table 3", "imagenet", "convnext_tiny/efficientnet_b0", "recipe", {"distance": "logsum"}) == 68.51
    for teacher in ("wrn_40_2", "resnet56", "resnet32x4", "vgg13", "ResNet50"):  # one Teacher row for both blocks
        assert v("miles", "Table 4", "cifar100", teacher, "teacher") \
            == v("miles", "Table 4 (RandAugment)", "cifar100", teacher, "teacher")
    assert v("coss", "supp. §3", "imagenet", "resnet50/resnet18", "seed") \
        == v("coss", "ImageNet table", "imagenet", "resnet50/resnet18", "seed", metric="linear_top1") == 57.60


# --- keys: our models, our methods, our sweep files ---------------------------------------------------

def model_of(label: str) -> str:
    """`mlp-1200-1200` -> `mlp`, `resnet8x4` -> `resnet8x4` (ModelSpec.label appends the hidden sizes)."""
    return label if label in MODELS else re.sub(r"(-\d+)+$", "", label)


def test_every_key_names_our_models_and_methods(published):
    for _, r in published.iterrows():
        for label in r.pair.split("/"):
            assert model_of(label) in MODELS, f"{r.paper} {r.table}: {label!r} is no model of ours"
        assert r.method in METHODS or r.method in ("teacher", "scratch") or "not a kd-sweep method" in r.note, r
        assert ("/" in r.pair) == (r.method not in ("teacher", "scratch", "mocov2")), r
        assert r.metric in PROTOCOL, r


def knob_cells(s: Sweep, method: str) -> list[dict]:
    """The grid/cells knobs of each column of METHOD in sweep S, as a published `cell` gives them."""
    return [{k: v for k, v in c.items() if k != "method"} for c in s.all_cells()
            if c.get("method", s.method) == method]


def test_every_published_table_has_a_sweep_that_keys_its_rows(published):
    assert set(zip(published.paper, published.table)) <= set(TABLES) | set(PENDING)
    assert not set(TABLES) & set(PENDING)
    for _, r in published.iterrows():
        if (r.paper, r.table) in PENDING:
            continue
        files = [n for n in TABLES[(r.paper, r.table)] if sweep(n).dataset.name == r.dataset]
        assert files, f"{r.paper} {r.table}: no sweep file on {r.dataset}"
        if r.dataset == "imagenet" and r.paper == "miles":  # the 20% subset or the full set, as the note says
            subset = "20% subset" in r.note
            files = [n for n in files if (sweep(n).dataset.train_fraction == 0.2) == subset]
        matches = []
        for n in files:
            s = sweep(n)
            if r.method == "teacher":
                ok = r.pair in {p.teacher.label for p in s.pairs}
            elif r.method == "scratch":
                ok = s.scratch and r.pair in {p.student.label for p in s.pairs if p.student}
            elif r.method in METHODS:
                cells = knob_cells(s, r.method)
                if "best over" in r.note:  # the best of several columns: its cell names what is fixed
                    ok = any(r.cell.items() <= c.items() for c in cells)
                else:
                    ok = r.cell in cells
                ok = ok and r.pair in {p.label for p in s.pairs}
            else:  # a method kd-sweep lacks: the sweep at least names the pair (or the student)
                ok = r.pair in {p.label for p in s.pairs} | {p.student.label for p in s.pairs if p.student}
            protocols = s.eval.protocols() + (["classifier"] if r.method == "scratch" else [])
            if ok and PROTOCOL[r.metric] in protocols:
                matches.append(n)
        assert matches, f"{r.paper} {r.table} {r.dataset} {r.pair} {r.method} {r.cell} {r.metric}: no sweep keys it"


def test_table6_runs_the_papers_imagenet_setting():
    s = sweep("miles_table6_imagenet")
    assert s.paper.tables == ["miles Table 6"] and s.dataset.name == "imagenet" and s.dataset.train_fraction == 1
    assert [(p.teacher.model, p.teacher.options, p.student.model) for p in s.pairs] \
        == [("resnet34", {"weights": "IMAGENET1K_V1"}, "resnet18")]
    assert s.teacher_schedule.epochs == 0  # torchvision's weights, evaluated only
    t = s.train
    assert (t.epochs, t.lr, t.milestones, t.gamma, t.batch_size, t.lr_schedule) == (100, 0.1, [30, 60, 90], 0.1,
                                                                                    256, "step")
    assert s.dataset.augment == "crop_flip" and s.scratch and s.methods == ["recipe", "kd", "at", "cc", "crd"]


def test_best_over_scale_rows_match_a_scale_sweep(published):
    rows = published[published.note.str.contains("best over scale")]
    assert len(rows) == 30  # 10 baselines x 3 pairs
    s = sweep("coss_table1_baselines")
    for m in set(rows.method):
        assert sorted(c["scale"] for c in knob_cells(s, m)) == [0.5, 1, 2, 4, 8, 16, 32], m
    assert knob_cells(s, "coss") == [{}]  # CoSS once, at scale 1


# --- the sweep files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_sweep_file_validates(path):
    load_sweep(path)


def test_the_table_sweeps_exist_and_reuse_the_crd_teachers():
    for files in TABLES.values():
        for n in files:
            text = (SWEEPS / f"{n}.yaml").read_text()
            assert text.startswith("#") and "Hardware" in text, f"{n}: no header comment with the hardware"
            assert sweep(n).name == n
    crd = sweep("teachers_cifar100").teacher_schedule
    for n in {n for files in TABLES.values() for n in files} | {"coss_k_ablation", "miles_projector_ablation"}:
        s = sweep(n)
        if s.dataset.name == "cifar100" and not n.startswith("rrkd_"):  # RRKD trains its own 50-epoch ResNet-18
            assert s.teacher_schedule == crd, f"{n}: its teachers would not be reused"
    # the two MNIST self-supervised sweeps share one autoencoder teacher
    a, b = sweep("rrkd_tables12_mnist_ssl"), sweep("rrkd_table5_anchors")
    assert a.teacher_schedule == b.teacher_schedule and a.pairs[0].teacher == b.pairs[0].teacher
    assert a.teacher_method == b.teacher_method == "autoencoder"
