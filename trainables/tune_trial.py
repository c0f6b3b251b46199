"""`fit` and `fit_pack` as a Ray Tune trainable: a report and a checkpoint per epoch.

A Tune config's "trial" is one trial config, or a pack (`{"pack": [configs], "name": ...}`, built by
the driver): students trained on one teacher forward. A pack reports each student's
metrics under MEMBERS, keyed by config hash, and checkpoints every student's state in one folder;
the driver's callback turns that back into one MLflow run per student.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from typing import Any

import torch

from .config import materialize
from .trial import MemberReport, NonFiniteLoss, device_name, fit, fit_pack, member_key

FAILED = "kd_failed"  # a result key: the trial (or a pack's student) failed for good (the value says why)
REUSED = "kd_reused"  # a result key: an earlier run (the value) finished this very config
MEMBERS = "kd_members"  # a pack's result key: config hash -> that student's result


def member_state(state: dict[str, Any], cfg: dict) -> dict[str, Any] | None:
    """CFG's part of a checkpoint's state: a pack's holds each student's under "members"; a student that
    is not in it (a pack split differently this time) starts afresh."""
    if "members" in state:
        return state["members"].get(member_key(cfg))
    return state


def _checkpointed_state(resume_from: str | None) -> dict[str, Any] | None:
    """Tune's own checkpoint (a retry in this sweep) is the newest; else the one an earlier, killed driver
    left (`kd-sweep run` found it on the storage and named it in the config)."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None and resume_from:
        ckpt = tune.Checkpoint(resume_from)
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location="cpu")


def _weights(teachers: dict, key: str) -> dict[str, torch.Tensor]:
    import ray

    w = teachers[key]  # an object ref per teacher: a trial fetches only the one it uses
    return ray.get(w) if isinstance(w, ray.ObjectRef) else w


def _save(d: str, state: dict[str, Any], epoch: int, ident: dict[str, Any]) -> None:
    """`epoch.json` is read by a resuming driver: which trial(s) and epoch, that epoch's numbers (which a
    driver killed between the checkpoint and its own logging never wrote to MLflow), and the size of
    `state.pt`. Tune copies this folder to the storage file by file, so a kill or a full disk can leave
    a copy cut short on any filesystem: the recorded size tells the driver, which then resumes from the
    newest checkpoint that is whole."""
    path = os.path.join(d, "state.pt")
    torch.save(state, path)
    with open(os.path.join(d, "epoch.json"), "w") as f:
        json.dump({"epoch": epoch, "state_bytes": os.path.getsize(path), **ident}, f, default=str)


def _quiet_stop(unraisable) -> None:
    """Ray stops a finished trial's actor with SIGTERM, whose handler raises SystemExit wherever the
    worker is; landing in a garbage-collector callback, Python reports it as "Exception ignored in:
    WeakSet..." and Ray forwards those lines to the driver's terminal. The stop is intended: say nothing."""
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def tune_trainable(config: dict, teachers: dict[str, dict[str, torch.Tensor]] | None = None,
                   finished: dict[str, tuple[str, dict[str, float]]] | None = None) -> None:
    """`finished`: config hash -> (run id, final metrics) of trials that earlier sweeps finished. A
    search samples its configs here, so only here can it see that one of them was run before."""
    import ray
    from ray import tune

    logging.getLogger("ray").setLevel(logging.WARNING)  # one INFO line per checkpoint otherwise
    sys.unraisablehook = _quiet_stop
    teachers = teachers or {}
    node = ray.get_runtime_context().get_node_id()
    if "pack" in config["trial"]:
        return _tune_pack(config["trial"], teachers, node)
    cfg = materialize(config)
    state = _checkpointed_state(cfg.get("resume_from"))
    resume = member_state(state, cfg) if state is not None else None

    def report(metrics: dict[str, float], state: dict[str, Any], final_model: dict | None) -> None:
        metrics = {**metrics, "device": device_name(cfg), "node": node}
        with tempfile.TemporaryDirectory() as d:
            _save(d, state, state["epoch"], {"config_hash": cfg["config_hash"], "metrics": metrics})
            if final_model is not None:
                torch.save(final_model, os.path.join(d, "model.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    if finished and cfg["config_hash"] in finished:
        run_id, metrics = finished[cfg["config_hash"]]
        tune.report({**metrics, "epoch": cfg["train"]["epochs"], REUSED: run_id})
        return
    teacher_state = _weights(teachers, cfg["teacher"]["hash"]) if cfg.get("teacher") else None
    init_state = _weights(teachers, cfg["init"]) if cfg.get("init") else None
    try:
        fit(cfg, report, teacher_state, resume, init_state)
    except NonFiniteLoss as e:
        # Not raised: Tune would retry it max_failures times, and it would diverge again each time.
        tune.report({FAILED: str(e), "epoch": e.epoch or 0, "device": device_name(cfg), "node": node})


def _tune_pack(pack: dict, teachers: dict, node: str) -> None:
    """A pack's students, each reported under MEMBERS. A student that fails for good stays in every
    later checkpoint as {"failed": why}: a retry or a resumed driver fails it again without training."""
    from ray import tune

    cfgs = pack["pack"]
    state = _checkpointed_state(cfgs[0].get("resume_from"))
    resumes = {}
    if state is not None:
        resumes = {member_key(c): s for c in cfgs if (s := member_state(state, c)) is not None}
    device = device_name(cfgs[0])

    def report(epoch: int, out: dict[str, MemberReport]) -> None:
        results, states = {}, {}
        with tempfile.TemporaryDirectory() as d:
            for key, r in out.items():
                if r.failed:
                    results[key] = {"epoch": r.failed_epoch or 0, FAILED: r.failed}
                    states[key] = {"failed": r.failed, "epoch": r.failed_epoch or 0}
                    continue
                results[key], states[key] = r.metrics, r.state
                if r.final_model is not None:
                    torch.save(r.final_model, os.path.join(d, f"model_{key}.pt"))
            _save(d, {"members": states}, epoch, {"members": sorted(out),
                                                  "metrics": results})
            tune.report({"epoch": epoch, "device": device, "node": node, MEMBERS: results},
                        checkpoint=tune.Checkpoint.from_directory(d))

    fit_pack(cfgs, report, _weights(teachers, cfgs[0]["teacher"]["hash"]), resumes)
