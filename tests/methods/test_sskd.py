"""SSKD: the error-level ranking by hand and as the authors' code ranked, the teacher head's stage,
the rotated views the trainer builds, and what the method needs. Its four terms against the authors'
code: test_authors_others.py (cases sskd_*)."""
import math

import pytest
import torch
import torch.nn.functional as F

from orchestrator.packing import pack_key
from trainables.datasets import load_dataset
from trainables.methods import method_class
from trainables.methods.base import Context
from trainables.methods.sskd import kept_rows, own_images, similarities, view_rows
from trainables.trial import _member, make_model, training_data

from ..method_helpers import make, step
from .test_authors_others import CASES, inputs

SSKD_CASES = [c for c in CASES if c["method"] == "sskd"]


def test_kept_rows_by_hand():
    # Row 0: its target first (kept). Row 1: its target third. Row 2: its target second.
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    target = torch.tensor([0, 2, 1])
    assert kept_rows(scores, target, 1.0).tolist() == [0, 1, 2]
    assert kept_rows(scores, target, 0.5).tolist() == [0, 2]    # of 2 wrong rows, int(1.0) = 1: the better
    assert kept_rows(scores, target, 0.0).tolist() == [0]
    assert kept_rows(scores, target, 0.99).tolist() == [0, 2]   # floored, as the authors' int()


@pytest.mark.parametrize("case", SSKD_CASES, ids=[c["id"] for c in SSKD_CASES])
def test_kept_rows_and_the_head_loss_are_the_authors(case):
    env = inputs(case)
    k = {"tf_T": 4.0, "ratio_tf": 1.0, "ratio_ss": 0.75, **case["knobs"]}
    b = len(env["y"])
    nor, rot = view_rows(4 * b, torch.device("cpu"))
    tf = kept_rows(F.softmax(env["t_logits"][rot] / k["tf_T"], 1), env["y"].repeat_interleave(3), k["ratio_tf"])
    assert tf.tolist() == case["expected_kept_rows"]["tf"]
    m = make("sskd", case["s_dim"], case["t_dim"], classes=case["classes"], **case["knobs"]).double()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in case["params"]:
                p.copy_(inputs({"inputs": {"v": case["params"][name]}})["v"])
        r_t = m.teacher_head(env["t_feat"])
        ss = kept_rows(similarities(r_t[rot], r_t[nor]), own_images(b, r_t.device), k["ratio_ss"])
        assert ss.tolist() == case["expected_kept_rows"]["ss"]
        assert m.head_loss(env["t_feat"]).item() == pytest.approx(case["expected_head_loss"], rel=1e-9)


def test_one_image_by_hand():
    """b = 1: the ss term compares each rotated view with the one unrotated view, a softmax over one
    column, so it is 0; tf is KD of the 3 rotated views, kd of the unrotated one."""
    s_logits = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]]))
    t_logits = torch.log(torch.tensor([[0.75, 0.25], [0.75, 0.25], [0.9, 0.1], [0.25, 0.75]]))
    m = make("sskd", 3, 3, classes=2, kd_T=1.0, tf_T=1.0, lambda_ce=1.0, lambda_kd=1.0, lambda_tf=1.0, lambda_ss=1.0)
    terms = m(step(torch.randn(4, 3), torch.randn(4, 3), y=torch.tensor([0]), s_logits=s_logits, t_logits=t_logits))
    kl = lambda p, q: sum(a * math.log(a / c) for a, c in zip(p, q))  # noqa: E731  KL(p || q)
    assert terms["ce"].item() == pytest.approx(math.log(2))
    assert terms["kd"].item() == pytest.approx(kl((0.75, 0.25), (0.5, 0.5)))
    want_tf = (kl((0.75, 0.25), (0.5, 0.5)) + 0.0 + kl((0.25, 0.75), (0.5, 0.5))) / 3
    assert terms["tf"].item() == pytest.approx(want_tf)
    assert terms["ss"].item() == pytest.approx(0.0, abs=1e-7)


def test_a_batch_without_its_views_is_refused():
    m = make("sskd", 3, 3, classes=2)
    with pytest.raises(ValueError, match="4 rotated views an image: got 4 outputs for 4 labels"):
        m(step(torch.randn(4, 3), torch.randn(4, 3), y=torch.zeros(4, dtype=torch.long),
               s_logits=torch.randn(4, 2), t_logits=torch.randn(4, 2)))


def test_gradients_reach_the_student_and_its_head_not_the_teachers_head():
    m = make("sskd", 3, 5, classes=4)
    s_feat, s_logits = torch.randn(16, 3, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    terms = m(step(s_feat, torch.randn(16, 5), y=torch.randint(0, 4, (4,)), s_logits=s_logits,
                   t_logits=torch.randn(16, 4)))
    sum(terms.values()).backward()
    assert s_feat.grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.student_head.parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.teacher_head.parameters())


def test_rotated_views_of_each_image():
    """Each image as 4 adjacent views rotated by 0, 90, 180, 270 degrees, sharing a flip (SSKD's
    cifar.py flips, then rotates), each cropped on its own; b labels for 4b images."""
    data = load_dataset("digits", "unused")
    x = data.train_x[:5]
    gen = torch.Generator().manual_seed(0)
    plain = data.with_augment("flip").with_rotations()  # no crop: the views are exact rotations
    views = plain.augment(x, gen)
    assert views.shape == (20, *x.shape[1:])
    for i in range(5):
        v = views[4 * i: 4 * i + 4]
        for k in range(1, 4):
            assert torch.equal(v[k], torch.rot90(v[0], k, (-2, -1)))
        assert torch.equal(v[0], plain.normalise(x[i:i + 1])[0]) or \
            torch.equal(v[0], plain.normalise(x[i:i + 1].flip(-1))[0])
    cropped = data.with_augment("crop_flip").with_rotations().augment(x, torch.Generator().manual_seed(0))
    assert cropped.shape == views.shape
    same = [torch.equal(cropped[4 * i + k], torch.rot90(cropped[4 * i], k, (-2, -1))) for i in range(5) for k in (1, 2, 3)]
    assert not all(same)  # each view its own crop
    with pytest.raises(ValueError, match="not randaugment"):
        data.with_augment("randaugment").with_rotations()


def test_the_trainer_gives_sskd_its_views_and_trains_the_teacher_head_first():
    cls = method_class("sskd")
    data = training_data(load_dataset("digits", "unused"), cls)
    cfg = {"method": "sskd", "seed": 0, "dataset": {"name": "digits"},
           "knobs": {"head_epochs": 2, "head_lr": 0.05, "head_milestones": [1]},
           "student": {"model": "mlp", "options": {"hidden": [16]}},
           "teacher": {"model": "mlp", "options": {"hidden": [32]}, "hash": "t"},
           "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                     "milestones": [], "gamma": 0.1}}
    torch.manual_seed(0)
    teacher = make_model(cfg["teacher"], data, with_head=True).eval()
    before = {n: p.clone() for n, p in torch.nn.Module.named_parameters(teacher)}
    m = _member(cfg, data, teacher, torch.device("cpu"), None, None, None, 0)
    head0 = m.method.teacher_head[0].weight
    assert m.pre["pretrain/sskd_head_loss"] < math.log(32)  # below chance among a batch's 32 images
    assert not any(p.requires_grad for p in m.method.teacher_head.parameters())
    optimised = {id(p) for p in m.opt.param_groups[0]["params"]}
    assert not any(id(p) in optimised for p in m.method.teacher_head.parameters())
    assert all(id(p) in optimised for p in m.method.student_head.parameters())
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())  # its backbone stays
    x, y, _ = next(Context(cfg, data, m.student, teacher, torch.device("cpu"), 0, 32).batches(1))
    assert x.shape[0] == 4 * len(y) == 128
    assert head0.abs().sum() > 0


def test_sskd_packs_only_with_sskd():
    base = {"role": "student", "teacher": {"model": "resnet56", "hash": "t"}, "dataset": {"name": "cifar100"},
            "seed": 0, "train": {"batch_size": 64, "epochs": 240}, "resources": {"cpu": 1, "gpu": 1}}
    sskd = [pack_key({**base, "method": "sskd", "knobs": {"lambda_ss": w}}) for w in (5.0, 10.0)]
    kd = pack_key({**base, "method": "kd", "knobs": {}})
    assert sskd[0] == sskd[1] and sskd[0] != kd


def test_needs():
    cls = method_class("sskd")
    assert cls.uses_labels(cls.Knobs()) and cls.uses_teacher_logits(cls.Knobs())
    label_free = cls.Knobs(lambda_ce=0)
    assert not cls.uses_labels(label_free)          # ratio_tf 1 keeps every row: no label is read
    assert cls.uses_labels(cls.Knobs(lambda_ce=0, ratio_tf=0.5))
    assert not cls.uses_teacher_logits(cls.Knobs(lambda_kd=0, lambda_tf=0))
