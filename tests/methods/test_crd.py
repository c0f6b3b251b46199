"""CRD against a hand computation, its memory-bank update rule, where its gradients go (one real epoch:
test_contract.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.methods.crd import bank_scores, contrast_indices

from ..method_helpers import make, step

E = math.e


def crd(d_s=2, d_t=2, num_train=2, identity=True, **knobs):
    m = make("crd", d_s, d_t, num_train=num_train, **knobs)
    if identity:
        with torch.no_grad():
            for embed in (m.embed_s, m.embed_t):
                embed.linear.weight.copy_(torch.eye(*embed.linear.weight.shape))
                embed.linear.bias.zero_()
    return m


# --- (1) the loss against a hand computation ------------------------------------------------------

def test_loss_equals_hand_computation():
    # Two training images, so K = 1 and each sample's one negative is the other image. Embeddings = the
    # L2-normalised features, T = 1, both banks the identity.
    m = crd(feat_dim=2, nce_t=1.0, weight=1.0)
    with torch.no_grad():
        m.memory_s.copy_(torch.eye(2))
        m.memory_t.copy_(torch.eye(2))
    s = torch.eye(2)                              # embeds to (1, 0), (0, 1)
    t = torch.tensor([[3.0, 4.0], [0.0, 2.0]])    # embeds to (.6, .8), (0, 1)
    terms = m(step(s, t, idx=torch.tensor([0, 1])))
    assert set(terms) == {"crd_s", "crd_t"}
    noise = 1 / 2  # K / N

    def nce(pos, neg):  # CRD Eq. 18 summed over rows, averaged over the batch of 2
        return -sum(math.log(p / (p + noise + 1e-7)) + math.log(noise / (q + noise + 1e-7))
                    for p, q in zip(pos, neg)) / 2

    # Student vs teacher bank: positives <(1,0),(1,0)> = <(0,1),(0,1)> = 1, negatives 0 -> exp: (e, 1) per row.
    z_s = (E + 1 + E + 1) / 4 * 2
    assert m.z_s.item() == pytest.approx(z_s)
    assert terms["crd_s"].item() == pytest.approx(nce([E / z_s] * 2, [1 / z_s] * 2), rel=1e-6)
    # Teacher vs student bank: row 0 pos .6, neg .8; row 1 pos 1, neg 0.
    z_t = (math.exp(0.6) + math.exp(0.8) + E + 1) / 4 * 2
    assert m.z_t.item() == pytest.approx(z_t)
    assert terms["crd_t"].item() == pytest.approx(
        nce([math.exp(0.6) / z_t, E / z_t], [math.exp(0.8) / z_t, 1 / z_t]), rel=1e-6)
    # Z is estimated once, from the first batch, and then kept.
    m(step(torch.randn(2, 2), torch.randn(2, 2), idx=torch.tensor([1, 0])))
    assert (m.z_s.item(), m.z_t.item()) == pytest.approx((z_s, z_t))


def test_weight_default_and_negative_count():
    m = make("crd", 3, 4, num_train=100)
    assert m.knobs.weight == 0.8 and m.knobs.nce_k == 16384 and m.k == 99  # capped at num_train - 1
    torch.manual_seed(0)
    pos = torch.tensor([0, 5, 99])
    idx = contrast_indices(pos, 100, 500)
    assert idx.shape == (3, 501) and torch.equal(idx[:, 0], pos)
    assert not (idx[:, 1:] == pos[:, None]).any()       # a positive is never its own negative
    assert idx.min() >= 0 and idx.max() <= 99


@pytest.mark.parametrize("n", [10, 40])  # whole-bank scoring, then gathering rows
def test_bank_scores_both_ways(n):
    torch.manual_seed(0)
    bank, v = torch.randn(n, 4), torch.randn(3, 4)
    idx = torch.randint(0, n, (3, 2))
    expected = torch.stack([torch.stack([bank[j] @ v[i] for j in idx[i]]) for i in range(3)])
    assert torch.allclose(bank_scores(v, bank, idx), expected, atol=1e-6)


# --- (2) the banks follow the momentum rule on the batch's rows only ------------------------------

@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_bank_update_follows_momentum_rule_on_indexed_rows_only(momentum):
    torch.manual_seed(0)
    m = crd(3, 5, num_train=10, identity=False, feat_dim=4, nce_m=momentum)
    s, t, idx = torch.randn(3, 3), torch.randn(3, 5), torch.tensor([2, 5, 7])
    old_s, old_t = m.memory_s.clone(), m.memory_t.clone()
    with torch.no_grad():
        e_s, e_t = m.embed_s(s), m.embed_t(t)
    m(step(s, t, idx=idx))
    rest = torch.tensor([i for i in range(10) if i not in (2, 5, 7)])
    for bank, old, e in ((m.memory_s, old_s, e_s), (m.memory_t, old_t, e_t)):
        expected = F.normalize(momentum * old[idx] + (1 - momentum) * e, dim=1)
        assert torch.allclose(bank[idx], expected, atol=1e-6)
        assert torch.equal(bank[rest], old[rest])


def test_banks_and_z_checkpoint_with_the_method():
    torch.manual_seed(0)
    m = crd(3, 5, num_train=10, identity=False, feat_dim=4)
    m(step(torch.randn(4, 3), torch.randn(4, 5), idx=torch.tensor([0, 3, 4, 9])))
    state = m.state_dict()
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(state)
    fresh = crd(3, 5, num_train=10, identity=False, feat_dim=4)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory_s, m.memory_s) and fresh.z_t.item() == m.z_t.item()


# --- (3) gradients --------------------------------------------------------------------------------

def test_gradients_reach_student_and_both_heads_not_teacher():
    torch.manual_seed(0)
    m = crd(3, 5, num_train=20, identity=False, feat_dim=4)
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)  # even a teacher tensor that could take a gradient gets none
    sum(m(step(s, t, idx=torch.arange(6) * 3)).values()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    params = list(m.embed_s.parameters()) + list(m.embed_t.parameters())
    assert params == list(m.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert t.grad is None
    assert not m.memory_s.requires_grad and not m.memory_t.requires_grad
