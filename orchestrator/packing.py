"""Packing: students of a grid that share a teacher forward train in one Ray trial.

The cells of a λ ablation are students of one teacher on one data order: run apart, every trial
pays for the same teacher forward and the same augmentation of every batch. Packed, one trial
computes those once a batch and steps G students (`trainables.trial.fit_pack`). Each student keeps
its own MLflow run, checkpoint, failure and resume, and its own RNG state, so it gets the numbers
it gets alone.

`pack: auto` (the default) sizes packs to fill the cluster's trial slots first (a pack's students
take turns on one device, so packing idle slots away would only make the sweep longer), then to
what fits in a trial's share of device memory, at most MAX_AUTO. `pack: N` packs up to N whatever
the cluster; `pack: off` runs one trial per student.

Every Tune trial is a pack (`trainables.config.PackConfig`): a student that trains alone, or a
teacher, is a pack of one, so the trainable, its checkpoints and the driver's callback have one shape
to know.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

from trainables.config import PackConfig, digest, knobs_of
from trainables.methods import method_class


MAX_AUTO = 8
MEMORY_USE = 0.7  # of a trial's device share: the teacher, the allocator's slack and the data live there too


def pack_key(cfg: dict) -> str | None:
    """Students with equal keys may share a trial: same teacher, data, seed, batch size, epochs,
    precision, resources and batch composition (what decides the batches and the teacher's output).
    None: this trial trains alone (a teacher, a student without one)."""
    if cfg["role"] != "student" or not cfg.get("teacher"):
        return None
    cls = method_class(cfg["method"])
    knobs = knobs_of(cfg)
    return digest({
        "teacher": cfg["teacher"], "dataset": cfg["dataset"], "seed": cfg["seed"],
        "batch_size": cfg["train"]["batch_size"], "epochs": cfg["train"]["epochs"],
        "precision": cfg.get("precision"), "deterministic": cfg.get("deterministic"), "compile": cfg.get("compile"),
        "resources": cfg["resources"], "preact": cls.preact if cls.needs_maps else None,
        "batches": cls.batch_key(knobs),
        # Students an earlier driver left mid-way resume together, from one checkpoint.
        "resume_from": cfg.get("resume_from")})


def trials(configs: list[dict], pack: str | int, slots: int,
           room: Callable[[dict], int] | None = None) -> list[PackConfig]:
    """Tune's "trial" values for CONFIGS, in the grid's order (a pack where its first student was):
    students that may share a teacher forward packed together, every other config a pack of one.
    `slots`: trials the cluster runs at once; `room(cfg)`: how many students like CFG fit in a trial's
    device share (pack: auto)."""
    if pack in ("off", 1):
        return alone(configs)
    groups: dict[str, list[dict]] = {}
    for cfg in configs:
        if (key := pack_key(cfg)) is not None:
            groups.setdefault(key, []).append(cfg)
    packable = sum(len(g) for g in groups.values())
    first: dict[str, PackConfig] = {}  # config hash of a pack's first student -> the pack
    for members in groups.values():
        if isinstance(pack, int):
            size = pack
        else:
            size = min(MAX_AUTO, math.ceil(packable / max(1, slots)))
            if room is not None and size > 1:
                size = min(size, min(room(c) for c in members))
        n = math.ceil(len(members) / max(1, size))
        for i in range(n):  # n packs of near-equal size
            chunk = members[i * len(members) // n:(i + 1) * len(members) // n]
            first[chunk[0]["config_hash"]] = make_pack(chunk)
    return [first[c["config_hash"]] if pack_key(c) is not None else make_pack([c]) for c in configs
            if pack_key(c) is None or c["config_hash"] in first]


def plan(configs: list[dict], pack: str | int, slots: int,
         room: Callable[[dict], int] | None = None) -> list[dict]:
    """`trials` with a lone student as its bare config: the grouping at a glance (the planner's tests)."""
    return [t["pack"][0] if len(t["pack"]) == 1 else t for t in trials(configs, pack, slots, room)]


def alone(configs: list[dict]) -> list[PackConfig]:
    """Every config a trial of its own (teachers; a search or a scheduler decides on each student alone)."""
    return [make_pack([c]) for c in configs]


def make_pack(members: list[dict]) -> PackConfig:
    """The trial of MEMBERS: alone, a student keeps its own name (its Tune trial and folder read as before
    packing); several share one that says how many, of which method and seed."""
    lead = members[0]
    if len(members) == 1:
        return {"pack": members, "name": lead["name"]}
    methods = sorted({c["method"] for c in members})
    tag = methods[0] if len(methods) == 1 else "mixed"
    name = f"pack{len(members)}_{tag}_s{lead['seed']}_{digest([c['config_hash'] for c in members])[:6]}"
    return {"pack": members, "name": name}


def slots(cluster: dict[str, float], cpu: float, gpu: float) -> int:
    """How many trials of (cpu, gpu) the cluster runs at once."""
    n = cluster.get("CPU", 0) // max(cpu, 1e-9)
    if gpu > 0:
        n = min(n, cluster.get("GPU", 0) // gpu)
    return max(1, int(n))


def student_bytes(cfg: dict, data) -> int:
    """Device memory one packed student needs at its batch size: its weights, gradients and momentum,
    and the activations its forward saves for the backward pass, measured on a 2-image forward here
    (on the CPU, fp32: a bound for bf16 on CUDA)."""
    import torch

    from trainables.trial import make_model

    cls = method_class(cfg["method"])
    model = make_model(cfg["student"], data, with_head=cls.student_needs_head(knobs_of(cfg)))
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack_hook(t: torch.Tensor):
        if t.data_ptr() not in params:
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    x = data.eval_view("train", slice(0, 2))
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        model(x, with_maps=cls.needs_maps, preact=cls.preact)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(3 * weights + sum(seen.values()) * cfg["train"]["batch_size"] / 2)


def device_memory(gpu: float, cpu: float) -> int:
    """Bytes of memory one trial's share gives: of the GPU it runs on (asked of a GPU worker when the
    driver has none), or of this machine's RAM in proportion to the trial's CPU share."""
    import torch

    if gpu > 0:
        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
        else:
            import ray

            @ray.remote(num_cpus=0, num_gpus=min(gpu, 1))
            def probe() -> int:
                import torch

                return torch.cuda.get_device_properties(0).total_memory

            total = ray.get(probe.remote())
        return int(total * min(gpu, 1))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(ram * min(1.0, cpu / max(1, os.cpu_count() or 1)))


def room_by_memory(data, budget: int) -> Callable[[dict], int]:
    """room(cfg): how many students like CFG fit in BUDGET bytes (measured once per student model)."""
    sizes: dict[str, int] = {}

    def room(cfg: dict) -> int:
        key = digest([cfg["student"], cfg["method"], cfg["train"]["batch_size"]])
        if key not in sizes:
            sizes[key] = student_bytes(cfg, data)
        return max(1, int(budget * MEMORY_USE // max(1, sizes[key])))

    return room
