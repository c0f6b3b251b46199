"""Build a method and a training step from tiny hand-made tensors, without models or data."""
from __future__ import annotations

import torch

from trainables.methods import method_class
from trainables.methods.base import DataInfo, ModelInfo, Step
from trainables.models import Output


def make(name: str, s_dim: int, t_dim: int | None, s_maps=(), t_maps=(), classes: int = 0,
         dataset: str = "cifar100", num_train: int = 100, **knobs):
    cls = method_class(name)
    s = ModelInfo(s_dim, [tuple(m) for m in s_maps], classes)
    t = ModelInfo(t_dim, [tuple(m) for m in t_maps], classes) if t_dim is not None else None
    return cls(cls.Knobs.model_validate(knobs), s, t, DataInfo(dataset, max(classes, 1), num_train))


def step(s_feat, t_feat=None, y=None, s_logits=None, t_logits=None, s_maps=(), t_maps=(), idx=None, x=None,
         student=None, teacher=None, epoch: int = 1) -> Step:
    b = s_feat.shape[0]
    y = torch.zeros(b, dtype=torch.long) if y is None else y
    idx = torch.arange(b) if idx is None else idx
    t = Output(t_feat, t_logits, list(t_maps)) if t_feat is not None else None
    return Step(x if x is not None else torch.zeros(b, 1), y, idx, Output(s_feat, s_logits, list(s_maps)), t,
                student, teacher, epoch)


def smoke_fit(name: str, tmp_path, arch: str = "mlp", epochs: int = 1, **knobs) -> list[dict]:
    """One short real trial of method NAME (random-init teacher with a head), through the real trainer.

    arch "mlp": digits, MLP 64->32->32 teacher, 64->16 student. arch "resnet": a 96-image CIFAR-100 in
    torchvision's format under tmp_path, resnet20 teacher -> resnet8 student (4 stage maps each).
    Returns the reported metrics of each epoch.
    """
    import torch as _torch

    from trainables.datasets import load_dataset
    from trainables.trial import fit, make_model

    from .conftest import write_cifar100

    if arch == "mlp":
        dataset = {"name": "digits", "root": str(tmp_path), "download": False, "verify_checksum": True}
        teacher = {"model": "mlp", "options": {"hidden": [32, 32]}}
        student = {"model": "mlp", "options": {"hidden": [16]}}
    else:
        write_cifar100(tmp_path, 96, 32)
        dataset = {"name": "cifar100", "root": str(tmp_path), "download": False, "verify_checksum": False}
        teacher, student = {"model": "resnet20", "options": {}}, {"model": "resnet8", "options": {}}
    cls = method_class(name)
    cfg = {
        "role": "student", "dataset": dataset, "student": student, "teacher": {**teacher, "hash": "t"},
        "method": name, "knobs": cls.Knobs.model_validate(knobs).model_dump(by_alias=True),
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                  "milestones": [], "gamma": 0.1},
        "eval": {"knn": {"k": 5, "temperature": 0.07}}, "seed": 0,
        "resources": {"cpu": 1, "gpu": 0},
    }
    data = load_dataset(dataset["name"], dataset["root"], False, dataset["verify_checksum"])
    _torch.manual_seed(0)
    teacher_state = make_model(teacher, data, with_head=True).state_dict()
    got = []
    fit(cfg, lambda m, s, f: got.append(m), teacher_state if cls.needs_teacher else None)
    return got
