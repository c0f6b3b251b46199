"""CoSS's neighbour pools: exact (equal to brute force), cached once, sampled without replacement."""
import torch
import torch.nn.functional as F

import trainables.neighbours as nb
from trainables.datasets import load_dataset
from trainables.models import build_model

from .method_helpers import smoke_fit


def brute_force(feats, k):
    x = F.normalize(feats, dim=1)
    sims = x @ x.T
    sims.fill_diagonal_(-2)
    return sims.topk(k, dim=1).indices


def test_faiss_and_chunked_torch_equal_brute_force():
    torch.manual_seed(0)
    feats = torch.randn(300, 12)
    expect = brute_force(feats, 7)
    assert torch.equal(nb.knn_indices(feats, 7, backend="faiss"), expect)
    assert torch.equal(nb.knn_indices(feats, 7, backend="torch", chunk=64), expect)


def test_own_index_is_dropped_even_with_duplicates():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pools = nb.knn_indices(feats, 2, backend="faiss")
    assert all(i not in pools[i].tolist() for i in range(4))
    assert pools[0, 0].item() == 1 and pools[1, 0].item() == 0


def test_pools_are_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path))
    data = load_dataset("digits", "x")
    torch.manual_seed(0)
    teacher = build_model("mlp", 10, 1, 8, hidden=[32]).eval()
    calls = []
    real = nb.extract
    monkeypatch.setattr(nb, "extract", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = nb.neighbour_pools(teacher, data, 5, "teacherA_data1")
    second = nb.neighbour_pools(teacher, data, 5, "teacherA_data1")
    assert len(calls) == 1 and torch.equal(first, second)
    assert first.shape == (len(data.train_x), 5)
    feats, _ = real(teacher, data, "train")
    assert torch.equal(first, brute_force(feats, 5))
    nb.neighbour_pools(teacher, data, 5, "teacherB_data1")  # another teacher: computed anew
    assert len(calls) == 2 and len(list((tmp_path / "neighbours").glob("*.pt"))) == 2


def test_each_anchor_is_followed_by_k_distinct_pool_members():
    pools = torch.arange(40).view(10, 4) + 100
    idx = torch.tensor([3, 7, 1])
    gen = torch.Generator().manual_seed(0)
    batch = nb.sample_neighbours(pools, idx, 3, gen).view(3, 4)
    assert batch[:, 0].tolist() == [3, 7, 1]
    for row in batch:
        nbrs = row[1:].tolist()
        assert len(set(nbrs)) == 3 and set(nbrs) <= set(pools[row[0]].tolist())


def test_coss_with_neighbours_trains_on_b_times_1_plus_k(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path / "cache"))
    plain = smoke_fit("coss", tmp_path, "mlp", beta=1.0)
    ext = smoke_fit("coss", tmp_path, "mlp", beta=1.0, k=2, k_pool=4)
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in ext)
    # Same number of steps (an epoch is one pass over the anchors), three times the images each.
    ratio = (ext[0]["train/images_per_s"] * ext[0]["train/epoch_s"]) / (
        plain[0]["train/images_per_s"] * plain[0]["train/epoch_s"])
    assert abs(ratio - 3.0) < 1e-6
    assert len(list((tmp_path / "cache" / "neighbours").glob("*_k4.pt"))) == 1


def test_faiss_gpu_backend_says_what_is_missing_on_a_cpu_build():
    import faiss
    import pytest
    import torch

    from trainables.neighbours import knn_indices

    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU build of faiss with a GPU: the path runs for real")
    with pytest.raises(RuntimeError, match="pip install faiss-gpu"):
        knn_indices(torch.randn(10, 4), 3, backend="faiss_gpu")
    # auto on CPU tensors is faiss's CPU search, equal to the torch path
    x = torch.randn(50, 8)
    assert torch.equal(knn_indices(x, 5), knn_indices(x, 5, backend="torch"))
