"""Each training sample's nearest neighbours in the teacher's embedding (CoSS's `k`), computed once per
(teacher, dataset, pool size) and cached on disk for every later trial and sweep."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ImageData
from .evaluate import extract
from .models import Backbone

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("KD_SWEEP_CACHE", Path.home() / ".cache" / "kd-sweep")) / "neighbours"


def _torch_knn(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    out = []
    for i in range(0, len(x), chunk):
        sims = x[i:i + chunk] @ x.T
        sims[torch.arange(len(sims), device=x.device), torch.arange(i, i + len(sims), device=x.device)] = -2
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out).cpu()


def knn_indices(feats: torch.Tensor, k: int, backend: str = "auto", chunk: int = 4096) -> torch.Tensor:
    """Exact cosine top-k of every row among the other rows, best first (self excluded): (N, k) int64.

    `auto`: on a GPU, faiss-gpu's exact search when that build is installed (`pip install kd-sweep[gpu]`),
    else chunked matmul + top-k (exact too); on CPU, faiss's exact inner-product search."""
    x = F.normalize(feats.float(), dim=1)
    n = len(x)
    if k >= n:
        raise ValueError(f"k_pool {k} needs more than {n} training samples")
    on_gpu = backend == "faiss_gpu" or (backend == "auto" and x.is_cuda)
    if on_gpu and faiss.get_num_gpus() == 0:
        if backend == "faiss_gpu":
            raise RuntimeError("backend faiss_gpu: this faiss build sees no GPU (pip install faiss-gpu)")
        backend = "torch"
    if backend == "torch":
        return _torch_knn(x, k, chunk)
    xs = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    if on_gpu:
        _, idx = faiss.knn_gpu(faiss.StandardGpuResources(), xs, xs, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        _, idx = faiss.knn(xs, xs, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    # Drop each row's own index (normally first; with exact duplicates it can be anywhere).
    own = idx == np.arange(n)[:, None]
    own[~own.any(1), -1] = True
    return torch.from_numpy(idx[~own].reshape(n, k)).long()


def neighbour_pools(teacher: Backbone, data: ImageData, k_pool: int, key: str) -> torch.Tensor:
    """(N, k_pool) indices of each training sample's most similar others under the teacher."""
    path = cache_dir() / f"{key}_k{k_pool}.pt"
    if path.exists():
        pools = torch.load(path, weights_only=True)
        if pools.shape == (data.num_train, k_pool):
            return pools
    t0 = time.perf_counter()
    feats, _ = extract(teacher, data, "train")
    pools = knn_indices(feats, k_pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent trials may race to write the same pools: write aside, then rename atomically.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(pools, tmp)
    os.replace(tmp, path)
    log.info("neighbour pools %s: %d x %d in %.1fs", path.name, *pools.shape, time.perf_counter() - t0)
    return pools


def sample_neighbours(pools: torch.Tensor, idx: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """b anchors -> b*(1+k) indices: each anchor followed by k of its pool, drawn without replacement."""
    pool = pools[idx]
    pick = torch.rand(pool.shape, generator=gen, device=gen.device).to(pool.device).argsort(1)[:, :k]
    return torch.cat([idx[:, None], pool.gather(1, pick)], 1).flatten()
