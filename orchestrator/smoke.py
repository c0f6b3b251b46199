"""`kd-sweep run FILE --smoke`: the same sweep at a size a 2-core CPU finishes in minutes.

Every pair and every categorical value (methods, anchors, norms...) is kept, so each code path runs;
numeric axes keep their first and last values; one seed; one epoch; a few hundred images (the real
dataset when it is here, else one written in the real on-disk format). The numbers are not results:
runs go to the experiment `<name>-smoke`, tagged kd.smoke, and `report` never mixes them with real runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from trainables.datasets import DatasetMissing, load_dataset
from trainables.datasets.synthetic import SMOKE
from trainables.methods import method_class

from .spec import Sweep, check_method_knobs, resolve_path

# Per split; ImageNet-sized models on 224-pixel images need fewer.
SMOKE_IMAGES = {"imagenet": (12, 6)}
DEFAULT_IMAGES = (128, 64)
SMOKE_BATCH = {"imagenet": 4}  # else 32
# ImageNet-sized models at 224 pixels outgrow a 24 GB machine two trials at a time; 64 still runs every
# layer (ViT-B/16: 4 x 4 patches) at a twelfth of the memory and time.
SMOKE_IMAGE_SIZE = {"imagenet": 64}
FAST_KNOBS = {"init_epochs": 1, "paraphraser_epochs": 1}  # the methods' own pre-stages


def smoke_root(name: str) -> Path:
    return Path(os.environ.get("KD_SWEEP_CACHE", Path.home() / ".cache" / "kd-sweep")) / "smoke-data" / name


def smoke_sweep(sweep: Sweep, base: str) -> tuple[Sweep, str]:
    """The smoke version of SWEEP, and a line saying what data it uses."""
    raw = sweep.model_dump(mode="json", by_alias=True)
    ds = raw["dataset"]
    n_train, n_test = SMOKE_IMAGES.get(ds["name"], DEFAULT_IMAGES)
    try:
        load_dataset(ds["name"], resolve_path(ds["root"], None), download=False,
                     verify_checksum=ds["verify_checksum"])
        where = f"the real {ds['name']} under {ds['root']}, {n_train}/{n_test} images"
    except DatasetMissing:
        root = smoke_root(ds["name"])
        if not root.exists():
            writer, w_train, w_test = SMOKE[ds["name"]]
            writer(root, w_train, w_test)
        ds.update(root=str(root), verify_checksum=False, download=False)
        where = f"a generated {ds['name']} (random pixels, real on-disk format) under {root}"
    ds.update(max_train=n_train, max_test=n_test, train_fraction=1.0, val_split=0.0)
    if ds["name"] in SMOKE_IMAGE_SIZE:
        ds["image_size"] = SMOKE_IMAGE_SIZE[ds["name"]]

    raw["name"] = f"{sweep.name}-smoke"
    raw["seeds"] = raw["seeds"][:1]
    for sched in ("train", "teacher_train"):
        if raw.get(sched):
            # Small batches too: two ImageNet-sized trials at batch 256 outgrow a 24 GB machine.
            raw[sched].update(epochs=min(raw[sched]["epochs"], 1), milestones=[],
                              batch_size=min(raw[sched]["batch_size"], SMOKE_BATCH.get(ds["name"], 32)))
    # A teacher trained for a few steps keeps BatchNorm statistics near their initial values, and its
    # features blow up in eval mode (FT's paraphraser then overflows): re-estimate them.
    raw["teacher_train"] = {**(raw.get("teacher_train") or raw["train"]), "bn_recalibrate": True}
    if raw["eval"].get("linear"):
        raw["eval"]["linear"].update(epochs=2, milestones=[])
    raw["resources"] = {"cpu": 1.0, "gpu": 0.0}
    raw["grid"] = {axis: _ends(values) for axis, values in raw["grid"].items()}
    raw["cells"] = _cell_ends(raw["cells"])
    for pair in raw["pairs"]:
        ckpt = pair["teacher"].get("checkpoint")
        if ckpt and not os.path.isfile(resolve_path(ckpt, Path(base))):
            pair["teacher"]["checkpoint"] = None  # trained for one epoch instead
        for role in ("teacher", "student"):
            if pair.get(role) and not _weights_here(pair[role]):
                pair[role]["options"].pop("weights")  # pretrained weights not here: random init
    _cap_neighbours(raw, sweep, pool=max(1, n_train // 4))
    for m in sweep.methods:
        fields = method_class(m).Knobs.model_fields
        fast = {k: v for k, v in FAST_KNOBS.items() if k in fields}
        if fast:
            if len(sweep.methods) > 1 or m in raw["knobs"]:
                raw["knobs"].setdefault(m, {}).update(fast)
            else:
                raw["knobs"].update(fast)
    if raw.get("search"):
        raw["search"]["n_trials"] = min(raw["search"]["n_trials"], 2)
    if raw.get("scheduler"):
        raw["scheduler"]["grace_period"] = 1
    smoke = Sweep.model_validate(raw)
    check_method_knobs(smoke, f"{sweep.name} (--smoke)")
    return smoke, where


def _cap_neighbours(raw: dict, sweep: Sweep, pool: int) -> None:
    """CoSS's neighbour pools need more images than a smoke set has: cap k_pool, and k to it."""
    for m in sweep.methods:
        if "k_pool" not in method_class(m).Knobs.model_fields:
            continue
        own = raw["knobs"] if len(sweep.methods) == 1 else raw["knobs"].setdefault(m, {})
        shared = raw["knobs"]
        own["k_pool"] = min(own.get("k_pool", shared.get("k_pool", 31)), pool)
        for knobs in (shared, own):
            if "k" in knobs:
                knobs["k"] = min(knobs["k"], pool)
        if len(sweep.methods) > 1:
            shared.pop("k_pool", None)
    if "k" in raw["grid"]:
        raw["grid"]["k"] = list(dict.fromkeys(min(k, pool) for k in raw["grid"]["k"]))
    for cell in raw["cells"]:
        if "k" in cell:
            cell["k"] = min(cell["k"], pool)


def _weights_here(spec: dict) -> bool:
    """False when the model names pretrained weights that are neither a file nor in torch's cache."""
    weights = spec.get("options", {}).get("weights")
    if not weights or os.path.isfile(weights):
        return True
    from trainables.models.imagenet import cached_torchvision_weights

    try:
        cached_torchvision_weights(spec["model"], weights)
        return True
    except (FileNotFoundError, ValueError):
        return False


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell_ends(cells: list[dict]) -> list[dict]:
    """Explicit cells: of the cells that differ only in numeric knobs, the first and the last."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        key = repr(sorted((k, v) for k, v in c.items() if not _numeric(v)))
        groups.setdefault(key, []).append(c)
    kept = {id(g[0]) for g in groups.values()} | {id(g[-1]) for g in groups.values()}
    return [c for c in cells if id(c) in kept]


def _ends(values: list) -> list:
    """Numeric axes: the first and last value (the range's ends); other axes: every value."""
    if len(values) > 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [values[0], values[-1]]
    return values
