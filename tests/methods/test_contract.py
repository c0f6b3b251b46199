"""The contract every registered method keeps, checked for each one: registering a method file is all it
takes to be tested here. Method-specific behaviour (hand computations, invariances, pre-stages, module
shapes) stays in tests/methods/test_<method>.py.

(1) One step of the trainer on real models (resnet8 student, the 4x wider resnet8x4 teacher, so every
    projector and connector exists): every parameter the trainer's optimiser updates gets a finite,
    non-zero gradient from the method's own terms, unless declared out of the loss's reach; the teacher
    gets none even though, unlike in the trainer, it could take one.
(2) One real epoch through `fit`: every term is logged weighted and raw, finite, and the terms add up
    to the logged loss.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import pydantic
import pytest
import torch

from trainables.datasets import load_dataset
from trainables.methods import METHODS, Method, method_class
from trainables.methods.base import Context
from trainables.models import Backbone
from trainables.trial import _member, _step, make_model, training_data

from ..method_helpers import smoke_fit

NAMES = METHODS.names()
STUDENT, TEACHER = "resnet8", "resnet8x4"
BATCH = 16

# Student parameters a method's loss does not reach on resnet8 (maps: stem, layer1, layer2, layer3),
# by name prefix. FitNet's hint is the middle map (layer2, CRD's hint_layer 2): layer3 is past it.
UNREACHED = {"fitnet": ("layer3.",)}

# Methods that rely on the trainer's no-grad teacher forward instead of detaching the teacher's outputs
# themselves: strict, so the mark has to go once the method detaches.
NO_DETACH: dict[str, str] = {}  # method -> why its loss may reach the teacher (none may)

# The MLP pair of smoke_fit (student hidden [16]) has one stage map: FSP relates consecutive maps.
NOT_ON_MLP = {"fsp"}


def contract_knobs(name: str, pre_stage_epochs: int) -> dict:
    """The method's defaults, with its pre-stages (any `*_epochs` knob: AB/FSP's init, FT's paraphraser,
    30 epochs by default) cut short, and the main-stage weight on where it defaults to no loss at all
    (AB, FSP): the contract is about the main loss."""
    cls = method_class(name)
    knobs = {k: pre_stage_epochs for k in cls.Knobs.model_fields if k.endswith("_epochs")}
    if not cls.has_main_loss(cls.Knobs.model_validate(knobs)):
        knobs["weight"] = 1.0
    return knobs


def without_base_terms(name: str, knobs: dict) -> dict:
    """KNOBS with the base class's CE and KD off, so the student's gradient comes from the method's own
    terms (with CE on, a method that detached the student's feature would still train the student);
    `none`, which is CE alone, keeps its CE."""
    try:
        method_class(name).Knobs.model_validate({**knobs, "lambda_ce": 0.0, "lambda_kd": 0.0})
    except pydantic.ValidationError:
        return knobs
    return {**knobs, "lambda_ce": 0.0, "lambda_kd": 0.0}


@dataclass
class OneStep:
    terms: set[str]
    finite: bool
    student: Backbone
    method: Method
    teacher: Backbone | None
    optimised: list[torch.Tensor]


@functools.cache
def digits():
    return load_dataset("digits", "unused")  # in the package: no root, no download


@functools.cache
def one_step(name: str) -> OneStep:
    """One optimiser step of method NAME as the trainer takes it (`_member`, `_step`), on a batch of
    digits, with a teacher that could take a gradient (eval mode, parameters not frozen, its forward
    with autograd on)."""
    cls = method_class(name)
    data = training_data(digits(), cls)
    cfg = {"method": name, "seed": 0, "dataset": {"name": "digits"},
           "knobs": without_base_terms(name, contract_knobs(name, pre_stage_epochs=0)),
           "student": {"model": STUDENT, "options": {}}, "teacher": {"model": TEACHER, "options": {}, "hash": "t"},
           "train": {"epochs": 1, "batch_size": BATCH, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                     "milestones": [], "gamma": 0.1}}
    torch.manual_seed(0)
    teacher = make_model(cfg["teacher"], data, with_head=True).eval() if cls.needs_teacher else None
    m = _member(cfg, data, teacher, torch.device("cpu"), None, None, None, 0)
    x, y, idx = next(Context(cfg, data, m.student, teacher, torch.device("cpu"), 0, BATCH).batches(1))

    def run_teacher(x: torch.Tensor):
        return teacher(x, with_maps=m.method.needs_maps, preact=m.method.preact)

    out, finite = _step(m, x, y, idx, run_teacher(x) if teacher else None, run_teacher if teacher else None, 1,
                        contextlib.nullcontext)
    terms = {k for k in out if k != "loss" and not k.startswith("raw/")}
    return OneStep(terms, finite, m.student, m.method, teacher, m.opt.param_groups[0]["params"])


def unreached_by_design(name: str, student: Backbone) -> list[str]:
    prefixes = UNREACHED.get(name, ())
    return sorted(f"student.{n}" for n, _ in student.named_parameters() if n.startswith(prefixes))


@pytest.mark.parametrize("name", NAMES)
def test_the_loss_reaches_every_optimised_parameter(name):
    s = one_step(name)
    assert s.finite and s.terms
    named = {**{id(p): f"student.{n}" for n, p in s.student.named_parameters()},
             **{id(p): f"method.{n}" for n, p in s.method.named_parameters()}}
    # The whole student is optimised, so none of it escapes the checks below.
    assert {named[id(p)] for p in s.optimised} >= {n for n in named.values() if n.startswith("student.")}
    assert sorted(named[id(p)] for p in s.optimised if p.grad is None) == unreached_by_design(name, s.student)
    dead = [named[id(p)] for p in s.optimised
            if p.grad is not None and not (torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0)]
    assert dead == []  # a zero or non-finite gradient on a path the loss takes


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NO_DETACH[n]))
                                  if n in NO_DETACH else n for n in NAMES if method_class(n).needs_teacher])
def test_the_teacher_gets_no_gradient(name):
    s = one_step(name)
    assert [n for n, p in s.teacher.named_parameters() if p.grad is not None] == []


def expected_terms(name: str, knobs: dict) -> set[str]:
    """The method's own terms (as one_step saw them), and the base class's CE and KD where on."""
    k = method_class(name).Knobs.model_validate(knobs)
    base = {t for t, weight in (("ce", k.lambda_ce), ("kd", k.lambda_kd)) if weight > 0}
    return one_step(name).terms | base


EPOCHS = [(n, "mlp") for n in NAMES if n not in NOT_ON_MLP] + \
         [(n, "resnet") for n in NAMES if method_class(n).needs_maps]  # an MLP's maps have one position


@pytest.mark.parametrize("name, arch", EPOCHS)
def test_one_real_epoch_logs_finite_terms_that_add_up_to_the_loss(name, arch, tmp_path, one_thread):
    knobs = contract_knobs(name, pre_stage_epochs=1)
    (metrics,) = smoke_fit(name, tmp_path, arch=arch, **knobs)
    terms = expected_terms(name, knobs)
    assert {k for k in metrics if k.startswith("train/raw/")} == {f"train/raw/{t}" for t in terms}
    assert all(f"train/{t}" in metrics for t in terms)
    assert [k for k, v in metrics.items() if not math.isfinite(v)] == []
    assert metrics["train/loss"] == pytest.approx(sum(metrics[f"train/{t}"] for t in terms), rel=1e-5)
    if any(k.endswith("_epochs") for k in knobs):
        assert any(k.startswith("pretrain/") for k in metrics)
