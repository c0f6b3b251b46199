"""Pre-flight: everything that can be wrong with a sweep's inputs, found before Ray or MLflow start
(the data loads, the models build, teacher checkpoints read), and the plan of the trials it makes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from trainables.checkpoints import CheckpointError, load_into, read_state_dict
from trainables.datasets import DatasetMissing, load_dataset
from trainables.models import build_model

from .spec import SpecError, Sweep, resolve_path
from .trials import _dataset, file_digest, student_trials, teacher_trial


@dataclass
class Plan:
    dataset: dict
    teachers: list[dict]                                  # one per distinct teacher config
    pair_teacher: dict                                    # pair index (and seed, teacher_per_seed) -> teacher weights hash
    students: list[dict]
    given: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # weights hash -> checkpoint
    data: object = None  # the loaded dataset: packing measures the students on it


def preflight(sweep: Sweep, file: str, base: str) -> Plan:
    """Everything that can be wrong with the inputs, found before Ray or MLflow start."""
    root = resolve_path(sweep.dataset.root, None)
    try:
        data = load_dataset(sweep.dataset.name, root, **sweep.dataset.loader_args())
    except DatasetMissing as e:
        raise SpecError(file, "dataset", str(e)) from None
    except ValueError as e:  # an option this dataset cannot take (a per-channel list of the wrong length)
        raise SpecError(file, "dataset", str(e)) from None
    dataset = _dataset(sweep, root, data.fingerprint())
    teachers: dict[str, dict] = {}
    pair_teacher: dict[int, str] = {}
    given: dict[str, dict[str, torch.Tensor]] = {}
    headless: set[int] = set()
    for i, pair in enumerate(sweep.pairs):
        for role in ("teacher", "student"):
            spec = getattr(pair, role)
            if spec is None or (role == "teacher" and spec.checkpoint):
                continue
            try:  # the models build here: a missing weights file or a bad option fails now, not in a trial
                build_model(spec.model, data.num_classes, data.in_channels, data.image_size, **spec.options)
            except (FileNotFoundError, ValueError, TypeError, RuntimeError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise SpecError(file, f"pairs.{i}.{role}", f"model {spec.model!r} does not build with"
                                f" {spec.options or 'its defaults'}: {first}") from None
        spec = pair.teacher
        digest, state, head = None, None, True
        if spec.checkpoint:
            path = resolve_path(spec.checkpoint, base)
            if os.path.isdir(path):
                raise SpecError(file, f"pairs.{i}.teacher.checkpoint", f"{path} is a folder: give the checkpoint file")
            if not os.path.isfile(path):
                raise SpecError(file, f"pairs.{i}.teacher.checkpoint",
                                f"{path} does not exist (give a RepDistiller/mdistiller file or a state dict,"
                                " or drop `checkpoint:` and kd-sweep trains the teacher)")
            try:
                state, head = read_teacher(spec, data, path)
            except CheckpointError as e:
                raise SpecError(file, f"pairs.{i}.teacher.checkpoint", str(e)) from None
            digest = file_digest(path)
            if not head:
                check_headless_teacher(sweep, i, file)
        # A given checkpoint is one teacher whatever the seeds; a trained one, one per seed when asked.
        seeds = sweep.seeds if sweep.teacher_per_seed and not spec.checkpoint and pair.student is not None else [None]
        for seed in seeds:
            cfg = teacher_trial(sweep, spec, dataset, digest, head, *([] if seed is None else [seed]))
            teachers.setdefault(cfg["config_hash"], cfg)
            pair_teacher[i if seed is None else (i, seed)] = cfg["weights_hash"]
        if state is not None:
            given[cfg["weights_hash"]] = state
        if not cfg["student"].get("head", True):
            headless.add(i)
            if head:  # trained label-free: no classifier to give the students' methods
                check_headless_teacher(sweep, i, file)
    students = student_trials(sweep, dataset, pair_teacher, frozenset(headless))
    return Plan(dataset, list(teachers.values()), pair_teacher, students, given, data)


def read_teacher(spec, data, path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The checkpoint's weights, loaded into the model to check them, and whether it has a classifier.
    A file without `fc.weight` (a MoCo encoder, whose `fc` is a projection MLP) is a headless teacher:
    its pooled feature is the target, as in CoSS's ImageNet runs."""
    state = read_state_dict(path)
    model = build_model(spec.model, data.num_classes, data.in_channels, data.image_size, **spec.options)
    if hasattr(model, "adapt_state_dict"):
        state = model.adapt_state_dict(state)
    if "fc.weight" in state:
        return load_into(model, state, path), True
    headless = build_model(spec.model, 0, data.in_channels, data.image_size, **spec.options)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return load_into(headless, state, path), False


def check_headless_teacher(sweep: Sweep, i: int, file: str) -> None:
    from trainables.methods import method_class


    for cell in sweep.all_cells():
        method = cell.get("method", sweep.method)
        cls = method_class(method)
        if cls.uses_teacher_logits(cls.Knobs.model_validate(sweep.knobs_for(method, cell))):
            raise SpecError(file, f"pairs.{i}.teacher.checkpoint",
                            f"this teacher has no classifier (a file without fc.weight, or trained label-free), and method {method!r}"
                            " needs the teacher's logits with these knobs")
