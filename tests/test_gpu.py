"""The CUDA paths on a real GPU (`pytest -m gpu`; scripts/gpu_check.sh runs them on a GPU machine).

Skipped wherever torch sees no GPU. On one, each test runs the real trainer (`fit`, `fit_pack`), the real
k-NN or the real CLI, and compares with what the CPU path, eager mode or an uninterrupted run gives:
bf16 against fp32, the data resident on the GPU (no host copy in a step, read off the profiler), two
half-GPU trials each held to its half (an overrun is an OOM naming the trial), packing, k-NN against
CPU faiss, `compile: true` and `compile: reduce-overhead` (CUDA graphs) against eager, and resume.
"""
from __future__ import annotations

import contextlib
import gc
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from trainables.trial import fit, make_model

from .conftest import SWEEPS, collect, kd_sweep, write_cifar100

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

HOG_SHARE = 0.72  # of the GPU's memory, for the trial that overruns: more than a half share, less than the whole


@pytest.fixture(autouse=True)
def _gpu_as_found():
    """Each test leaves the process as it found it: fits set these process-wide."""
    yield
    torch.use_deterministic_algorithms(False)
    torch.cuda.set_per_process_memory_fraction(1.0)
    gc.collect()
    torch.cuda.empty_cache()


def preflight_of(path: Path, sets: list[str] | None = None):
    """The trial configs `kd-sweep run PATH` builds (orchestrator.runner imports MLflow)."""
    pytest.importorskip("mlflow", reason="orchestrator.runner imports mlflow, which is not installed here")
    from orchestrator.runner import preflight
    from orchestrator.spec import load_sweep

    return preflight(load_sweep(path, sets or []), str(path), str(path.parent))


def write_sweep(folder: Path, raw: dict) -> Path:
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def random_teacher(cfg: dict, data) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    return make_model(cfg["teacher"], data, with_head=True).state_dict()


@contextlib.contextmanager
def profiled_epoch(at: int):
    """Profiles (CPU and CUDA activity) the AT-th call of the trainer's `train_epoch` in the block; yields
    a dict that then holds `events` (profiler key -> count) and that call's `data`."""
    import trainables.trial as trial

    real = trial.train_epoch
    got = {"calls": 0}

    def spy(*a, **k):
        got["calls"] += 1
        if got["calls"] != at:
            return real(*a, **k)
        got["data"] = a[2]
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            out = real(*a, **k)
            torch.cuda.synchronize()
        got["events"] = {e.key: e.count for e in prof.key_averages()}
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trial, "train_epoch", spy)
        yield got


def host_to_device(events: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in events.items() if "HtoD" in k}


def graph_launches(events: dict[str, int]) -> int:
    return sum(n for k, n in events.items() if k.startswith("cudaGraphLaunch"))


# --- precision --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_plan():
    return preflight_of(SWEEPS / "quickstart.yaml", ["resources.gpu=1", "train.epochs=4", "teacher_train.epochs=3",
                                                    "eval.linear.epochs=5", "eval.linear.milestones=[4]"])


def test_a_trial_in_bf16_and_in_fp32_on_cuda_is_finite_and_scores_alike(digits_plan, monkeypatch):
    import trainables.trial as trial

    teacher, rep = collect()
    fit(digits_plan.teachers[0], rep)
    base = digits_plan.students[-3]
    assert base["method"] == "coss" and base["knobs"]["lambda"] == 1.0
    seen = []
    real = trial.make_model

    def spy(*a, **k):
        m = real(*a, **k)
        m.register_forward_hook(
            lambda mod, inp, out: seen.append((out.feature.dtype, out.feature.device.type)) if mod.training else None)
        return m

    monkeypatch.setattr(trial, "make_model", spy)
    scores = {}
    for precision in ("fp32", "bf16"):
        seen.clear()
        got, rep = collect()
        fit({**base, "precision": precision}, rep, teacher["model"])
        assert set(seen) == {(torch.bfloat16 if precision == "bf16" else torch.float32, "cuda")}
        assert all(math.isfinite(m["train/loss"]) for m in got["metrics"]), precision
        weights = [v for v in got["model"].values() if v.is_floating_point()]
        assert all(v.is_cuda and v.dtype == torch.float32 for v in weights)  # bf16 is autocast, the weights stay fp32
        scores[precision] = got["metrics"][-1]
    for k in ("eval/knn_top1", "eval/linear_top1"):  # 359 test digits: 3 points is ~11 images
        assert abs(scores["bf16"][k] - scores["fp32"][k]) < 3.0, (k, scores["bf16"][k], scores["fp32"][k])


# --- the data on the device ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CoSS student (ResNet-8 from a ResNet-8x4, neighbours drawn per anchor) on a generated CIFAR-100 of
    640 images: 10 steps an epoch, the augmentation and the neighbour draw on the GPU."""
    root = write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=640, n_test=128)
    raw = {"name": "gpu-cifar", "dataset": {"name": "cifar100", "root": str(root), "verify_checksum": False},
           "pairs": [{"teacher": "resnet8x4", "student": "resnet8"}], "setting": "unsupervised", "method": "coss",
           "knobs": {"k": 3}, "seeds": [0], "deterministic": True,
           "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": [2]},
           "eval": {"knn": {"k": 10}}, "resources": {"cpu": 4, "gpu": 1}}
    plan = preflight_of(write_sweep(tmp_path_factory.mktemp("cifar-sweep"), raw))
    return plan.students[0], random_teacher(plan.students[0], plan.data)


def test_the_data_stays_on_the_gpu_no_step_copies_from_the_host(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path))
    cfg, teacher = cifar
    # The profiler sees a host copy on this machine: the check below can fail.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.ones(1 << 16).to("cuda")
        torch.cuda.synchronize()
    assert host_to_device({e.key: e.count for e in prof.key_averages()}), "the profiler records no host copy here"
    with profiled_epoch(at=2) as got:  # the second epoch: cuDNN's and the allocator's warm-up are behind
        fit(cfg, lambda *a: None, teacher)
    data = got["data"]
    assert data.train_x.is_cuda and data.train_y.is_cuda
    steps = data.num_train // cfg["train"]["batch_size"]
    copies = host_to_device(got["events"])
    from_host = got["events"].get("aten::lift_fresh", 0)  # torch.tensor(<host data>, device=...) calls
    # Fewer than one a step: a step copies nothing from the host (an epoch may, once: its shuffle, say).
    assert sum(copies.values()) < steps, \
        f"host-to-device copies in one epoch of {steps} steps: {copies}; torch.tensor of host data: {from_host}"


# --- a GPU shared by trials ---------------------------------------------------------------------------

def share_sweep(width: int, gpu: float) -> dict:
    """Two students of one MLP teacher on digits, one step an epoch (batch 1024): an MLP of 32 and one of
    WIDTH, whose step's memory grows with WIDTH."""
    def pair(hidden):
        return {"teacher": {"model": "mlp", "hidden": [64]}, "student": {"model": "mlp", "hidden": [hidden]}}
    return {"name": "gpu-share", "dataset": {"name": "digits"}, "pairs": [pair(32), pair(width)],
            "method": "kd", "seeds": [0], "pack": "off", "max_failures": 0,
            "train": {"epochs": 1, "batch_size": 1024, "lr": 0.05, "milestones": []},
            "teacher_train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "milestones": []},
            "eval": {"classifier": {}}, "resources": {"cpu": 1, "gpu": gpu}}


def student_of(plan, width: int) -> dict:
    (cfg,) = [c for c in plan.students if c["student"]["options"]["hidden"] == [width]]
    return cfg


def peak_bytes(cfg: dict, teacher: dict) -> int:
    """Device memory a fit of CFG allocates at its peak, beyond what was allocated before it."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fit(cfg, lambda *a: None, teacher)
    return torch.cuda.max_memory_allocated() - before


@pytest.fixture(scope="module")
def hog(tmp_path_factory):
    """(width, teacher weights): the width of an MLP student whose step needs about HOG_SHARE of this GPU's
    memory, from a narrow one's measured peak (its activations, weights and gradients all grow with it)."""
    probe = 1 << 18
    plan = preflight_of(write_sweep(tmp_path_factory.mktemp("probe"), share_sweep(probe, 1)))
    cfg = student_of(plan, probe)
    teacher = random_teacher(cfg, plan.data)
    total = torch.cuda.get_device_properties(0).total_memory
    return int(probe * HOG_SHARE * total / peak_bytes(cfg, teacher)), teacher


def test_a_trial_is_held_to_its_gpu_share_and_one_that_overruns_it_fails_naming_itself(hog, tmp_path):
    width, teacher = hog
    total = torch.cuda.get_device_properties(0).total_memory
    whole = student_of(preflight_of(write_sweep(tmp_path, share_sweep(width, 1))), width)
    used = peak_bytes(whole, teacher)  # trains, given the whole GPU
    assert 0.55 * total < used < 0.9 * total, f"the wide student's step needs {used / total:.0%} of the GPU"
    half = student_of(preflight_of(write_sweep(tmp_path, share_sweep(width, 0.5))), width)
    gc.collect()
    torch.cuda.empty_cache()
    with pytest.raises(RuntimeError) as e:
        fit(half, lambda *a: None, teacher)
    msg, oom = str(e.value), isinstance(e.value.__cause__, torch.cuda.OutOfMemoryError)
    del e  # its traceback holds the step's tensors
    assert oom, msg
    assert f"GPU out of memory in trial {half['name']} at batch size 1024" in msg
    assert "resources.gpu 0.5" in msg


def test_two_half_gpu_trials_run_on_one_gpu_and_the_one_that_overruns_its_half_fails_naming_itself(hog, tmp_path):
    """Through `kd-sweep run` (Ray places both at gpu 0.5 on the one GPU): the wide student, which trains
    on a whole GPU (test above), fails with the OOM that names it; the small one finishes on the GPU."""
    pytest.importorskip("ray", reason="`kd-sweep run` needs Ray, which is not installed here")
    from mlflow import MlflowClient

    from results.mlflow_schema import Tag

    width, _ = hog
    path = write_sweep(tmp_path, share_sweep(width, 0.5))
    plan = preflight_of(path)
    small, wide = student_of(plan, 32), student_of(plan, width)
    res = kd_sweep("run", path.name, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = {r.data.tags[Tag.CONFIG_HASH]: r for r in client.search_runs(ids) if Tag.CONFIG_HASH in r.data.tags}
    failed, done = runs[wide["config_hash"]], runs[small["config_hash"]]
    assert failed.info.status == "FAILED"
    assert f"GPU out of memory in trial {wide['name']}" in failed.data.tags[Tag.ERROR], failed.data.tags
    assert "resources.gpu 0.5" in failed.data.tags[Tag.ERROR]
    assert done.info.status == "FINISHED" and done.data.tags[Tag.DEVICE] == torch.cuda.get_device_name()
    assert f"GPU out of memory in trial {wide['name']}" in out  # and the driver says so


# --- packing ------------------------------------------------------------------------------------------

def test_packing_on_cuda_gives_each_student_its_numbers_alone(tmp_path):
    """test_packing's four methods (an MLP with dropout: the CUDA RNG is drawn every step), deterministic."""
    pytest.importorskip("mlflow", reason="orchestrator.runner imports mlflow, which is not installed here")
    from .test_packing import _plan, alone, assert_same, packed

    plan = _plan(tmp_path, resources={"cpu": 1, "gpu": 1}, deterministic=True)
    cfgs = plan.students
    teacher = random_teacher(cfgs[0], plan.data)
    solo = {c["config_hash"]: alone(c, teacher) for c in cfgs}
    pack = packed(cfgs, teacher)
    assert [e for e, _ in pack] == [1, 2, 3]
    for epoch, out in pack:
        assert set(out) == set(solo)
        for key, r in out.items():
            assert r.failed is None, r.failed
            assert_same(r.metrics, solo[key][epoch - 1][0])
    for key, r in pack[-1][1].items():
        final = solo[key][-1][2]
        for name, w in final.items():
            assert w.is_cuda and torch.equal(r.final_model[name], w), (key, name)


# --- k-NN ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["auto", "torch", "faiss_gpu"])
def test_knn_on_the_gpu_finds_what_cpu_faiss_finds(backend):
    import faiss

    from trainables.neighbours import knn_indices

    if backend == "faiss_gpu" and faiss.get_num_gpus() == 0:
        pytest.skip("this faiss build sees no GPU (faiss-cpu): on CUDA the matmul fallback runs, tested as 'torch'")
    n, k = 8192, 31
    feats = torch.randn(n, 512, generator=torch.Generator().manual_seed(0))
    want = knn_indices(feats, k)  # faiss's exact search on the CPU
    got = knn_indices(feats.cuda(), k, backend=backend)
    assert got.shape == want.shape == (n, k) and got.dtype == torch.int64 and not got.is_cuda
    assert not (got == torch.arange(n)[:, None]).any(), "a row is its own neighbour"
    x = F.normalize(feats.double().cuda(), dim=1)
    sims = x @ x.T
    # Exact search: the same similarities rank for rank (near-ties may swap two indices, not the values).
    gap = (sims.gather(1, got.cuda()) - sims.gather(1, want.cuda())).abs().max().item()
    assert gap < 1e-5, gap
    same = (got.sort(1).values == want.sort(1).values).all(1).double().mean().item()
    assert same > 0.99, same


# --- compile ------------------------------------------------------------------------------------------

def test_compile_and_reduce_overhead_train_as_eager_does_and_reduce_overhead_replays_cuda_graphs(tmp_path):
    import torch._dynamo

    raw = share_sweep(16, 1)
    raw.update(name="gpu-compile", pairs=raw["pairs"][:1], precision="fp32",
               train={"epochs": 1, "batch_size": 64, "lr": 0.05, "milestones": []})
    plan = preflight_of(write_sweep(tmp_path, raw))
    cfg = plan.students[0]
    teacher = random_teacher(cfg, plan.data)
    steps = plan.data.num_train // 64
    got = {}
    for mode in (False, True, "reduce-overhead"):
        torch._dynamo.reset()
        rows = []
        with profiled_epoch(at=1) as prof:
            fit({**cfg, "compile": mode}, lambda m, s, f: rows.append(m), teacher)
        got[mode] = rows[-1], graph_launches(prof["events"])
    torch._dynamo.reset()  # lets the graphs' memory pool go
    eager, launches = got[False]
    assert launches == 0
    assert got[True][1] == 0  # compiled, not graphed
    # Teacher forward, student forward and backward: replayed every step once warmed up and recorded.
    assert got["reduce-overhead"][1] >= steps, (got["reduce-overhead"][1], steps)
    for mode in (True, "reduce-overhead"):
        for k in ("train/loss", "eval/classifier_top1"):
            assert got[mode][0][k] == pytest.approx(eager[k], rel=1e-3, abs=0.5), (mode, k)


# --- resume -------------------------------------------------------------------------------------------

def test_a_trial_resumed_on_cuda_ends_bit_identical_to_the_uninterrupted_one(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path))
    cfg, teacher = cifar
    full, rep = collect()
    fit(cfg, rep, teacher)
    torch.save(full["states"][0], tmp_path / "state.pt")  # killed after epoch 1; read back as Tune's retry does
    state = torch.load(tmp_path / "state.pt", weights_only=True, map_location="cpu")
    resumed, rep = collect()
    fit(cfg, rep, teacher, resume=state)
    assert [m["epoch"] for m in resumed["metrics"]] == [2, 3]
    for name, w in full["model"].items():
        assert w.is_cuda and torch.equal(w, resumed["model"][name]), name
    assert resumed["metrics"][-1]["eval/knn_top1"] == full["metrics"][-1]["eval/knn_top1"]
    assert resumed["metrics"][-1]["train/loss"] == full["metrics"][-1]["train/loss"]
