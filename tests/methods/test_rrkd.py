"""RRKD against hand computations, its invariances, where its gradients go, and its anchor sets."""
import math

import pytest
import torch
from torch import nn

from trainables.datasets import ImageData
from trainables.methods import method_class
from trainables.methods.rrkd import best_per_class_anchors
from trainables.models import Output
from trainables.trial import Context

from ..method_helpers import make, smoke_fit, step

ANCHORS = ["in_batch", "random", "per_class", "best_per_class"]


def rrkd(s_dim=2, t_dim=2, **knobs):
    return make("rrkd", s_dim, t_dim, classes=3, **{"lambda_ce": 0.0, **knobs})


def encoder(matrix=None):
    """A stand-in network: its feature is its input (times `matrix`)."""
    return lambda x: Output(x if matrix is None else x @ matrix, None)


# --- (1) the loss against hand computations ---------------------------------------------------

def test_in_batch_loss_equals_hand_computation():
    # Teacher rows (1,0), (0,1): V_t = I. Student rows (1,0), (1,1)/sqrt2: V_s = [[1, r], [r, 1]], r = 1/sqrt2.
    # Each row: cos(V_t,i, V_s,i) = 1 / sqrt(1 + 1/2).
    z_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cos = 1 / math.sqrt(1.5)
    terms = rrkd()(step(z_s, z_t))
    assert set(terms) == {"rrkd"}
    assert terms["rrkd"].item() == pytest.approx(-math.log((cos + 1) / 2 + 1e-8), rel=1e-6)
    # weight multiplies L_D; the default lambda_ce 1 adds the labels' cross-entropy.
    assert rrkd(weight=3.0)(step(z_s, z_t))["rrkd"].item() == pytest.approx(-3 * math.log((cos + 1) / 2), rel=1e-6)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    terms = make("rrkd", 2, 2, classes=3)(step(z_s, z_t, y=torch.tensor([0, 1]), s_logits=logits))
    ce = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)


def test_mse_and_sce_distances_equal_hand_computation():
    # Same batch: V_t = I, V_s = [[1, r], [r, 1]], r = 1/sqrt2 (anchors in batch, diagonal kept).
    z_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    # mse (the notebook's F.mse_loss): the mean over the 2 x 2 entries, (0 + r^2 + r^2 + 0) / 4.
    assert rrkd(distance="mse")(step(z_s, z_t))["rrkd"].item() == pytest.approx(2 * r * r / 4, rel=1e-6)
    # sce (F.cross_entropy(V_s / 2, softmax(V_t / 2))): both rows mirror each other, so the mean is row 0's
    # -sum_j p_j log q_j, p = softmax(1/2, 0), q = softmax(1/2, r/2).
    p = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    zq = math.exp(0.5) + math.exp(r / 2)
    q = [math.exp(0.5) / zq, math.exp(r / 2) / zq]
    sce = -(p[0] * math.log(q[0]) + p[1] * math.log(q[1]))
    assert rrkd(distance="sce")(step(z_s, z_t))["rrkd"].item() == pytest.approx(sce, rel=1e-6)
    assert rrkd(distance="sce", weight=2.0)(step(z_s, z_t))["rrkd"].item() == pytest.approx(2 * sce, rel=1e-6)
    # Equal relative representations: mse 0, sce the entropy of softmax(V_t,i / 2), cos -log(1 + 1e-8).
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert rrkd(distance="mse")(step(same, z_t))["rrkd"].item() == pytest.approx(0.0, abs=1e-12)
    entropy = -(p[0] * math.log(p[0]) + p[1] * math.log(p[1]))
    assert rrkd(distance="sce")(step(same, z_t))["rrkd"].item() == pytest.approx(entropy, rel=1e-6)
    assert rrkd()(step(same, z_t))["rrkd"].item() == pytest.approx(0.0, abs=1e-7)


# Golden values: the authors' notebook code (rrkd.ipynb, LitDistiller.step with d_type cos / mse / sce) on
# z_s = arange(12).view(4, 3) / 5 - 1 and z_t = cos(arange(16).view(4, 4)), anchors in batch (float64).
GOLDEN = {"cos": 0.5838858262738735, "mse": 1.1228857775288528, "sce": 1.4430528528213278}


@pytest.mark.parametrize("distance", ["cos", "mse", "sce"])
def test_golden_value_of_each_distance(distance):
    z_s = torch.arange(12, dtype=torch.float64).view(4, 3) / 5 - 1
    z_t = torch.cos(torch.arange(16, dtype=torch.float64).view(4, 4))
    m = make("rrkd", 3, 4, classes=3, lambda_ce=0.0, distance=distance).double()
    assert m(step(z_s, z_t))["rrkd"].item() == pytest.approx(GOLDEN[distance], rel=1e-9)


def test_default_distance_is_the_papers_cosine_and_others_are_refused():
    assert method_class("rrkd").Knobs().distance == "cos"
    with pytest.raises(ValueError, match="distance"):
        rrkd(distance="l1")


def test_fixed_anchors_are_re_encoded_by_each_network():
    m = rrkd(anchors="random")
    m.anchor_x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two anchor "images"
    z_s, z_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # Both networks the identity: V_s = (1, 0), V_t = (0, 1); cosine 0, so L_D = -log(1/2).
    same = m(step(z_s, z_t, student=encoder(), teacher=encoder()))["rrkd"]
    assert same.item() == pytest.approx(math.log(2), rel=1e-6)
    # A teacher that rotates by 90 degrees maps the anchors to (0, 1), (-1, 0): V_t = (1, 0) = V_s, L_D = 0.
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    turned = m(step(z_s, z_t, student=encoder(), teacher=encoder(rot)))["rrkd"]
    assert turned.item() == pytest.approx(0.0, abs=1e-6)


# --- (2) invariances --------------------------------------------------------------------------

def orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


def test_in_batch_invariant_to_rotation_and_per_sample_rescaling():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(8, 5), torch.randn(8, 7)
    m = rrkd(5, 7)
    base = m(step(z_s, z_t))["rrkd"].item()
    scale = torch.rand(8, 1) * 10 + 0.1
    for s, t in ((z_s @ orthogonal(5, 1), z_t), (z_s, z_t @ orthogonal(7, 2)), (z_s * scale, z_t / scale)):
        assert m(step(s, t))["rrkd"].item() == pytest.approx(base, rel=1e-5)
    # ...a general linear map is not a symmetry: the test can tell.
    assert m(step(z_s @ torch.randn(5, 5), z_t))["rrkd"].item() != pytest.approx(base, rel=1e-3)


def test_fixed_anchors_invariant_to_rotating_either_network():
    torch.manual_seed(0)
    x, anchors = torch.randn(6, 4), torch.randn(5, 4)
    w_s, w_t = torch.randn(4, 3), torch.randn(4, 6)
    m = rrkd(3, 6, anchors="per_class")
    m.anchor_x = anchors

    def loss(ws, wt):
        return m(step(x @ ws, x @ wt, student=encoder(ws), teacher=encoder(wt)))["rrkd"].item()

    base = loss(w_s, w_t)
    assert loss(w_s @ orthogonal(3, 3), w_t) == pytest.approx(base, rel=1e-5)
    assert loss(w_s, w_t @ orthogonal(6, 4)) == pytest.approx(base, rel=1e-5)


# --- (3) gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["cos", "mse", "sce"])
def test_in_batch_gradients_reach_student_not_teacher(distance):
    torch.manual_seed(0)
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)  # even a teacher tensor that could take a gradient gets none
    sum(rrkd(3, 4, distance=distance)(step(s, t)).values()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()
    assert t.grad is None


@pytest.mark.parametrize("distance", ["cos", "mse", "sce"])
def test_fixed_anchor_gradients_reach_student_network_not_teacher(distance):
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 5)
    x = torch.randn(6, 4)
    m = rrkd(3, 5, anchors="random", distance=distance)
    m.anchor_x = torch.randn(7, 4)
    s = student(x)
    t = teacher(x)
    terms = m(step(s, t, student=lambda a: Output(student(a), None), teacher=lambda a: Output(teacher(a), None)))
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert list(m.parameters()) == []  # no projector: nothing of its own to learn


# --- anchor sets ------------------------------------------------------------------------------

class PixelTeacher(nn.Module):
    """Feature = logits = the (normalised) pixel values, so the test knows the teacher's confidences."""

    def __init__(self, head: bool = True):
        super().__init__()
        self.head = head

    def forward(self, x, with_maps=False, preact=False):
        f = x.flatten(1)
        return Output(f, f.clone() if self.head else None)


def pixel_data(logits: torch.Tensor, y: torch.Tensor) -> ImageData:
    """Images of 3 channels × 1 × 1 whose normalised values are `logits` (uint8 pixels, std 1/255)."""
    x = logits.to(torch.uint8)[:, :, None, None]
    return ImageData(x, y, x[:3], y[:3], num_classes=3, mean=(0.0,) * 3, std=(1 / 255,) * 3)


def context(data: ImageData, teacher: nn.Module, seed: int = 0) -> Context:
    return Context({}, data, None, teacher, torch.device("cpu"), seed, 8)


def confusable_data():
    """60 images, 20 per class; logits 0..8 drawn at random, so about a third are misclassified."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    return pixel_data(torch.randint(0, 9, (60, 3), generator=g), y)


def anchors_of(strategy, data, teacher=None, seed=0, **knobs):
    m = rrkd(anchors=strategy, **knobs)
    m.setup(context(data, teacher or PixelTeacher(), seed))
    return m


def test_best_per_class_by_hand():
    # Class 0: samples 0, 1, 2 (sample 2 misclassified); class 1: samples 3, 4, 5 (5 misclassified).
    probs = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.45, 0.55], [0.99, 0.01]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert best_per_class_anchors(probs, y, 1).tolist() == [1, 3]
    assert best_per_class_anchors(probs, y, 5).tolist() == [0, 1, 3, 4]  # only the correct ones, however many asked


def test_random_anchors_are_seeded_and_distinct():
    data = confusable_data()
    a = anchors_of("random", data, n_anchors=10).anchor_idx
    assert len(a) == 10 and len(set(a.tolist())) == 10
    assert torch.equal(a, anchors_of("random", data, n_anchors=10).anchor_idx)
    assert not torch.equal(a, anchors_of("random", data, seed=1, n_anchors=10).anchor_idx)
    assert len(anchors_of("random", data).anchor_idx) == 60  # 128 asked, capped at the training set


def test_per_class_anchors_are_13_of_each_class_and_seeded():
    data = confusable_data()
    m = anchors_of("per_class", data)
    idx = m.anchor_idx
    assert torch.bincount(data.train_y[idx], minlength=3).tolist() == [13, 13, 13]
    assert len(set(idx.tolist())) == 39
    assert torch.equal(idx, anchors_of("per_class", data).anchor_idx)
    assert not torch.equal(idx, anchors_of("per_class", data, seed=1).anchor_idx)
    # The anchor images are the chosen training images under the evaluation transform.
    assert torch.equal(m.anchor_x, data.normalise(data.train_x[idx]))


def test_best_per_class_anchors_are_correct_and_most_confident():
    data = confusable_data()
    probs = data.normalise(data.train_x).flatten(1).softmax(1)
    correct = probs.argmax(1) == data.train_y
    idx = anchors_of("best_per_class", data).anchor_idx
    chosen = torch.zeros(60, dtype=torch.bool)
    chosen[idx] = True
    assert correct[idx].all()
    for c in range(3):
        conf = probs[:, c]
        mine, left = chosen & (data.train_y == c), ~chosen & correct & (data.train_y == c)
        assert mine.sum() == min(13, int((correct & (data.train_y == c)).sum()))
        if left.any():
            assert conf[mine].min() >= conf[left].max()
    assert torch.equal(idx, anchors_of("best_per_class", data, seed=5).anchor_idx)  # no randomness in it


def test_headless_teacher_scores_anchors_with_a_linear_probe():
    # Separable features (the true class's pixel is large): the probe gets every image right.
    y = torch.arange(45) % 3
    logits = torch.randint(0, 3, (45, 3), generator=torch.Generator().manual_seed(0))
    logits[torch.arange(45), y] += 10
    data = pixel_data(logits, y)
    for teacher, knobs in ((PixelTeacher(head=False), {}), (PixelTeacher(), {"anchor_scorer": "probe"})):
        idx = anchors_of("best_per_class", data, teacher, **knobs).anchor_idx
        assert torch.bincount(data.train_y[idx], minlength=3).tolist() == [13, 13, 13]


def test_what_it_needs():
    cls = method_class("rrkd")
    assert cls.uses_labels(cls.Knobs()) and cls.student_needs_head(cls.Knobs())  # lambda_ce 1 by default
    assert not cls.uses_teacher_logits(cls.Knobs())
    # Scoring anchors with the teacher's head reads its logits: refused where the head is removed.
    assert cls.uses_teacher_logits(cls.Knobs(anchors="best_per_class"))
    probe = cls.Knobs(anchors="best_per_class", anchor_scorer="probe", lambda_ce=0.0)
    assert not cls.uses_teacher_logits(probe) and not cls.student_needs_head(probe)


def test_unknown_anchor_strategy_is_a_validation_error():
    with pytest.raises(ValueError, match="anchors"):
        rrkd(anchors="nearest")


# --- (4) one real epoch per anchor strategy -----------------------------------------------------

@pytest.mark.parametrize("anchors", ANCHORS)
def test_smoke_fit(tmp_path, anchors, one_thread):
    (metrics,) = smoke_fit("rrkd", tmp_path, arch="mlp", anchors=anchors)
    for key in ("train/rrkd", "train/ce", "train/loss"):
        assert math.isfinite(metrics[key]), key


def test_a_fixed_head_keeps_its_initial_weights_while_the_encoder_learns(tmp_path):
    """`train_head: false` is the authors' LitDistiller, which optimises `student.parameters()` and not the
    head it builds itself: through the real trainer, the head ends as it started, the encoder does not."""
    from trainables.datasets import load_dataset
    from trainables.trial import fit, make_model

    from ..conftest import collect

    data = load_dataset("digits", str(tmp_path))
    student, teacher = {"model": "mlp", "options": {"hidden": [16]}}, {"model": "mlp", "options": {"hidden": [32]}}
    cfg = {"role": "student", "dataset": {"name": "digits", "root": str(tmp_path), "download": False,
                                          "verify_checksum": True},
           "student": student, "teacher": {**teacher, "hash": "t"}, "method": "rrkd",
           "knobs": method_class("rrkd").Knobs(lambda_ce=1.0, train_head=False).model_dump(by_alias=True),
           "train": {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                     "milestones": [], "gamma": 0.1},
           "eval": {"knn": {"k": 5, "temperature": 0.07}}, "seed": 0, "resources": {"cpu": 1, "gpu": 0}}
    assert cfg["knobs"]["train_head"] is False
    torch.manual_seed(0)
    teacher_state = make_model(teacher, data, with_head=True).state_dict()
    init = make_model(student, data, with_head=True).state_dict()
    got, report = collect()
    fit(cfg, report, teacher_state, init_state=init)
    heads = [k for k in init if k.startswith("fc.")]
    assert heads and all(torch.equal(got["model"][k], init[k]) for k in heads)
    assert any(not torch.equal(got["model"][k], v) for k, v in init.items() if k not in heads)
    assert got["metrics"][-1]["train/ce"] > 0  # the cross-entropy was there, through the fixed head
    # Left at its default, the knob is not in the config: earlier runs' hashes are unchanged.
    assert "train_head" not in method_class("rrkd").Knobs().model_dump(by_alias=True)
