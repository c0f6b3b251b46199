"""A validated sweep becomes a list of trial configs (`trainables.config.TrialConfig`), one per teacher,
cell x pair x seed.

Each config carries a content hash of everything that decides its result (`config_hash`). Teachers
are keyed by theirs, so every later sweep with the same teacher config reuses the trained one.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from trainables.config import RESULT_VERSION, cell_label, config_hash, digest, trial_members

if TYPE_CHECKING:
    from .spec import Pair, Sweep, TeacherSpec

TEACHER_SEED = 0


def method_class(name: str):
    # The methods import torch: only planning needs them, not the commands that read the store.
    from trainables.methods import method_class as find

    return find(name)


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def run_label(role: str, method: str, cell: dict, pair: str, student: str, seed: int, with_pair: bool) -> str:
    """The MLflow run name: `λ=0.5 · s1`, `kd · resnet56→resnet20 · s0` (the pair only when the sweep has
    several), `scratch · resnet20 · s0`. Tune's trial folders keep the file-safe `name`."""
    if role == "scratch":
        return f"scratch · {student} · s{seed}"
    parts = [cell_label(cell) or method, *([pair.replace("/", "→")] if with_pair else []), f"s{seed}"]
    return " · ".join(parts)


def _model(spec) -> dict:
    return {"model": spec.model, "options": dict(spec.options)}


def _eval(sweep: Sweep, with_classifier: bool = False) -> dict:
    protocols = {p: getattr(sweep.eval, p).model_dump() for p in sweep.eval.protocols()}
    if with_classifier:
        protocols.setdefault("classifier", {})
    return protocols


def _dataset(sweep: Sweep, root: str, fingerprint: str) -> dict:
    return {"name": sweep.dataset.name, "root": root, **sweep.dataset.loader_args(), "fingerprint": fingerprint}


def _precision(sweep: Sweep) -> dict:
    """Only when forced: "auto" (the default) leaves the content hashes of earlier runs as they were."""
    return {} if sweep.precision == "auto" else {"precision": sweep.precision}


def _compile(sweep: Sweep) -> dict:
    return {"compile": sweep.compile} if sweep.compile else {}  # true or a mode (reduce-overhead)


def _curve(sweep: Sweep) -> dict:
    """`eval.every`: the k-NN curve's period and settings; only when asked (it changes no result)."""
    if not sweep.eval.every:
        return {}
    knn = sweep.eval.knn.model_dump() if sweep.eval.knn else {"k": 10, "temperature": 0.07}
    return {"eval_every": sweep.eval.every, "eval_every_knn": knn}


def teacher_trial(sweep: Sweep, spec: TeacherSpec, dataset: dict, checkpoint_digest: str | None,
                  head: bool = True, seed: int = TEACHER_SEED) -> dict:
    """A teacher has two keys. `weights_hash` names its weights (model, data, schedule and seed, or the
    file it came from): students refer to it, and trained weights are reused by it. `config_hash` adds
    the evaluation, so a sweep with another probe re-scores the same weights instead of retraining."""
    sched = sweep.teacher_schedule.model_dump()
    if checkpoint_digest is not None:
        sched = {"from_checkpoint": checkpoint_digest}
    ds = {k: v for k, v in dataset.items() if k not in ("root", "download")}
    # A teacher trained label-free (teacher_method: autoencoder) has no classifier either.
    trainer = method_class(sweep.teacher_method)
    head = head and trainer.student_needs_head(trainer.Knobs())
    model = _model(spec) if head else {**_model(spec), "head": False}
    weights_hash = digest({"model": model, "dataset": ds, "train": sched, "seed": seed,
                           "result_version": RESULT_VERSION, **_precision(sweep),
                           **({"method": sweep.teacher_method} if sweep.teacher_method != "none" else {})})
    cfg = {
        "role": "teacher", "sweep": sweep.name, "dataset": dataset, "student": model,
        "teacher": None, "method": sweep.teacher_method, "knobs": trainer.Knobs().model_dump(by_alias=True),
        "train": sweep.teacher_schedule.model_dump(), "eval": _eval(sweep, with_classifier=True),
        "seed": seed, "weights_hash": weights_hash, "deterministic": sweep.deterministic, **_compile(sweep),
        "resources": sweep.resources.model_dump(), **_precision(sweep),
    }
    cfg["config_hash"] = config_hash(cfg)
    cfg["init"] = None
    cfg["labels"] = {"teacher": spec.label, "student": spec.label, "pair": spec.label, "cell": {},
                     "run": f"teacher {spec.label}" + (f" · s{seed}" if seed != TEACHER_SEED else "")}
    cfg["name"] = f"teacher_{spec.label}_{weights_hash[:6]}"
    if checkpoint_digest is not None:
        cfg = evaluate_only(cfg)
    return cfg


def evaluate_only(teacher: dict) -> dict:
    """The same teacher trial, scoring weights that exist (a checkpoint, or an earlier training run)."""
    cfg = {**teacher, "train": {**teacher["train"], "epochs": 0}, "init": teacher["weights_hash"]}
    return cfg


def student_trials(sweep: Sweep, dataset: dict, teacher_hash: dict[int, str] | dict[tuple[int, int], str],
                   headless: frozenset[int] = frozenset()) -> list[dict]:
    """One per grid cell x pair x seed, then the from-scratch students (one per student and seed).
    TEACHER_HASH: pair index -> the pair's teacher, or with `teacher_per_seed` (pair index, seed) -> the
    teacher of that seed."""
    trials = []
    with_pair = sum(p.student is not None for p in sweep.pairs) > 1
    for i, pair in enumerate(sweep.pairs):
        if pair.student is None:
            continue
        for cell in sweep.all_cells():
            method = cell.get("method", sweep.method)
            knobs = method_class(method).Knobs.model_validate(sweep.knobs_for(method, cell)).model_dump(by_alias=True)
            for seed in sweep.seeds:
                needs_teacher = method_class(method).needs_teacher
                teacher = teacher_hash.get((i, seed), teacher_hash.get(i))
                cfg = _student(sweep, pair, dataset, method, knobs, seed, "student",
                               teacher if needs_teacher else None, cell, i not in headless, i, with_pair)
                trials.append(cfg)
    if sweep.scratch:
        seen = set()
        for i, pair in enumerate(sweep.pairs):
            if pair.student is None or pair.student.label in seen:
                continue
            seen.add(pair.student.label)
            knobs = method_class("none").Knobs().model_dump(by_alias=True)
            for seed in sweep.seeds:
                trials.append(_student(sweep, pair, dataset, "none", knobs, seed, "scratch", None, {}, index=i))
    return trials


def _student(sweep: Sweep, pair: Pair, dataset: dict, method: str, knobs: dict, seed: int, role: str,
             teacher_hash: str | None, cell: dict, teacher_head: bool = True, index: int = 0,
             with_pair: bool = False) -> dict:
    teacher = None
    if teacher_hash:
        teacher = {**_model(pair.teacher), "hash": teacher_hash, **({} if teacher_head else {"head": False})}
    cfg = {
        "role": role, "sweep": sweep.name, "dataset": dataset, "student": _model(pair.student),
        "teacher": teacher,
        "method": method, "knobs": knobs,
        "train": (sweep.scratch_schedule if role == "scratch" else sweep.train).model_dump(),
        "eval": _eval(sweep, with_classifier=role == "scratch"), "seed": seed,
        "deterministic": sweep.deterministic, "resources": sweep.resources.model_dump(), **_precision(sweep),
        **_compile(sweep), **_curve(sweep),
    }
    cfg["config_hash"] = config_hash(cfg)
    cfg["labels"] = {"teacher": pair.teacher.label if teacher_hash else "", "student": pair.student.label,
                     "pair": pair.label if role == "student" else pair.student.label, "cell": cell,
                     "pair_index": index,  # the table's rows follow the file, not the runs' order
                     "run": run_label(role, method, cell, pair.label, pair.student.label, seed, with_pair)}
    cell_name = "_".join(f"{k}={v}" for k, v in cell.items()) or method
    cfg["name"] = f"{role}_{cell_name}_s{seed}_{cfg['config_hash'][:6]}"
    return cfg


def trial_name(config: dict) -> str:
    """Tune's name (and folder) for a trial: a lone student's own, a searched one's after the knobs it
    sampled; the pack's when several students share the trial."""
    members = trial_members(config)
    return members[0]["name"] if len(members) == 1 else config["trial"]["name"]


# Not params: they do not decide the result (the run's tags and its config.json artifact hold them).
BOOKKEEPING = ("labels", "name", "resume_from", "sweep", "role", "config_hash", "weights_hash", "resources",
               "init", "compile")
DATA_BOOKKEEPING = ("root", "download", "verify_checksum", "fingerprint")


def flat_params(cfg: dict) -> dict[str, str]:
    """What decides a trial's result, as MLflow params: one dotted name per value, as named in the YAML.
    Where files lie, hashes and resources are tags, so the Compare view's axes are the knobs."""
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif v is not None:
            out[prefix] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    keep = {k: v for k, v in cfg.items() if k not in BOOKKEEPING}
    keep["dataset"] = {k: v for k, v in cfg["dataset"].items() if k not in DATA_BOOKKEEPING}
    if keep.get("teacher"):
        keep["teacher"] = {k: v for k, v in keep["teacher"].items() if k != "hash"}
    walk("", keep)
    return out


def describe(cfg: dict) -> str:
    """The run's description (MLflow's note): what this trial is, in a sentence."""
    lab, data, epochs = cfg["labels"], cfg["dataset"]["name"], cfg["train"]["epochs"]
    if cfg["role"] == "teacher":
        what = f"scoring the weights of teacher {lab['student']}" if epochs == 0 else \
            f"teacher {lab['student']} trained for {epochs} epochs"
        return (f"{what[0].upper()}{what[1:]} on {data}. Every sweep with the same teacher model, data and"
                " schedule reuses it.")
    if cfg["role"] == "scratch":
        return (f"Student {lab['student']} trained without a teacher on {data} (the Scratch column): seed"
                f" {cfg['seed']}, {epochs} epochs.")
    knobs = cell_label(lab["cell"])
    teacher = f" from teacher {lab['teacher']}" if lab.get("teacher") else ""
    return (f"{cfg['method']} student {lab['student']}{teacher} on {data}: {knobs + ', ' if knobs else ''}seed"
            f" {cfg['seed']}, {epochs} epochs. Sweep {cfg['sweep']}.")
