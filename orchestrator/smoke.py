"""`kd-sweep run FILE --smoke`: the same sweep at a size a 2-core CPU finishes in minutes.

Every pair and every categorical value (methods, anchors, norms...) is kept, so each code path runs;
numeric axes keep their first and last values; one seed; one epoch; a few hundred images (the real
dataset when it is here, else one written in the real on-disk format). The numbers are not results:
runs go to the experiment `<name>-smoke`, tagged kd.smoke, and `report` never mixes them with real runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from trainables.datasets import DatasetMissing, load_dataset, smoke_of
from trainables.methods import method_class

from .spec import Sweep, SpecError, check_method_knobs, resolve_path


def smoke_root(name: str) -> Path:
    return Path(os.environ.get("KD_SWEEP_CACHE", Path.home() / ".cache" / "kd-sweep")) / "smoke-data" / name


def smoke_sweep(sweep: Sweep, base: str) -> tuple[Sweep, str]:
    """The smoke version of SWEEP, and a line saying what data it uses. What is particular to a dataset
    (its writer, image counts, batch) comes from its registration (`trainables.datasets.Smoke`), what is
    particular to a method from the method (`Method.smoke_knobs`)."""
    here = f"{sweep.name} (--smoke)"
    raw = sweep.model_dump(mode="json", by_alias=True)
    ds = raw["dataset"]
    facts = smoke_of(ds["name"])
    n_train, n_test = facts.images
    try:
        load_dataset(ds["name"], resolve_path(ds["root"], None), download=False,
                     verify_checksum=ds["verify_checksum"])
        where = f"the real {ds['name']} under {ds['root']}, {n_train}/{n_test} images"
    except DatasetMissing as e:
        if facts.write is None:
            raise SpecError(here, "dataset", f"{e}. Dataset {ds['name']!r} registers no smoke data writer"
                            " (`register_dataset(..., smoke=Smoke(write=...))`), so --smoke needs the real data"
                            " too") from None
        root = smoke_root(ds["name"])
        if not root.exists():
            facts.write(root, *facts.written)
        ds.update(root=str(root), verify_checksum=False, download=False)
        where = f"a generated {ds['name']} (random pixels, real on-disk format) under {root}"
    ds.update(max_train=n_train, max_test=n_test, train_fraction=1.0, val_split=0.0)
    if facts.image_size is not None:
        ds["image_size"] = facts.image_size

    raw["name"] = f"{sweep.name}-smoke"
    raw["seeds"] = raw["seeds"][:1]
    for sched in ("train", "teacher_train", "scratch_train"):
        if raw.get(sched):
            raw[sched].update(epochs=min(raw[sched]["epochs"], 1), milestones=[],
                              batch_size=min(raw[sched]["batch_size"], facts.batch_size))
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
    _method_knobs(raw, sweep, n_train)
    if raw.get("search"):
        raw["search"]["n_trials"] = min(raw["search"]["n_trials"], 2)
    if raw.get("scheduler"):
        raw["scheduler"]["grace_period"] = 1
    smoke = Sweep.model_validate(raw)
    # Not a repeat of load_sweep's check: building a Sweep checks no method knob, and the values set here
    # (a method's smoke_knobs) may break one (k beyond k_pool): a SpecError, not a trial's traceback.
    check_method_knobs(smoke, here)
    return smoke, where


def _method_knobs(raw: dict, sweep: Sweep, n_train: int) -> None:
    """Each method's `smoke_knobs`, on the knobs the sweep fixes for it, on the grid and on the cells."""
    knobs = raw["knobs"]
    shared = sweep.shared_knobs()
    several = len(sweep.methods) > 1
    for m in sweep.methods:
        own = knobs.get(m) if isinstance(knobs.get(m), dict) else None
        given = {**shared, **(own or {})}
        # Only what changes: a sweep the method leaves alone dumps as it was (its resume key stays).
        changed = {k: v for k, v in method_class(m).smoke_knobs(given, n_train).items()
                   if k not in given or given[k] != v}
        if changed:
            (knobs.setdefault(m, {}) if several or own is not None else knobs).update(changed)
    for axis, values in raw["grid"].items():
        if axis != "method":
            new = [_smoke_value(sweep.methods, axis, v, n_train) for v in values]
            if new != values:
                raw["grid"][axis] = _unique(new)
    grid_methods = raw["grid"].get("method") or [sweep.method]
    for cell in raw["cells"]:
        for k, v in cell.items():
            if k != "method":
                cell[k] = _smoke_value([cell["method"]] if "method" in cell else grid_methods, k, v, n_train)
    raw["cells"] = _unique(raw["cells"])


def _smoke_value(methods: list[str], knob: str, value, n_train: int):
    """One grid or cell value of KNOB as the methods that take it want it in a smoke run."""
    for m in methods:
        value = method_class(m).smoke_knobs({knob: value}, n_train).get(knob, value)
    return value


def _unique(values: list) -> list:
    """Without repeats (a smoke value may equal another: k 10 and 15 both held to 3), in order."""
    seen: dict[str, object] = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True), v)
    return list(seen.values())


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
