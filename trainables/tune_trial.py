"""`fit_pack` as a Ray Tune trainable: a report and a checkpoint per epoch.

Every Tune trial is a pack (`trainables.config.PackConfig`, built by the driver): one or more students
trained on one teacher forward a batch; a teacher, or a student alone, is a pack of one. A trial of one
student reports that student's result as it is (a search or a scheduler reads its metric there); a
pack of several reports each student's under MEMBERS, keyed by config hash. Either checkpoints every
student's state in one folder, and the driver's callback turns that back into one MLflow run per student.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from typing import Any

import torch

from .config import FAILED, MEMBERS, REUSED, VERSIONS, trial_members
from .trial import MemberReport, PackReport, device_name, fit_pack, member_key, pick_device
from .versions import versions

# Set on import, which on a worker comes before Tune restores a retried trial: Ray's INFO lines ("Restored
# on <ip> from checkpoint", one per checkpoint) would reach the driver's terminal, where a cluster started
# with `ray start` logs at INFO; the driver says each retry itself.
logging.getLogger("ray").setLevel(logging.WARNING)


def member_state(state: dict[str, Any], cfg: dict) -> dict[str, Any] | None:
    """CFG's part of a checkpoint's state: a trial's holds each student's under "members"; a student that
    is not in it (a pack split differently this time) starts afresh. A checkpoint of one student from
    before every trial was a pack holds its state alone."""
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
    """`teachers`: weights hash -> the weights (or an object ref to them) of the teachers and of the
    models scored as they are. `finished`: config hash -> (run id, final metrics) of trials that earlier
    sweeps finished. A search samples its configs here, so only here can it see that one of them was run
    before. A student that fails for good stays in every later checkpoint as {"failed": why}: a retry or a
    resumed driver fails it again without training."""
    import ray

    sys.unraisablehook = _quiet_stop
    teachers = teachers or {}
    cfgs = trial_members(config)
    if finished and all(c["config_hash"] in finished for c in cfgs):  # only a search passes it: alone
        _report_reused(cfgs, finished)
        return
    lead = cfgs[0]
    state = _checkpointed_state(lead.get("resume_from"))  # packing keeps resume_from equal in a pack
    resumes = {}
    if state is not None:
        resumes = {member_key(c): s for c in cfgs if (s := member_state(state, c)) is not None}
    teacher_state = _weights(teachers, lead["teacher"]["hash"]) if lead.get("teacher") else None
    # Only a teacher scoring weights that exist has an `init`, and teachers never share a trial.
    init_state = _weights(teachers, lead["init"]) if lead.get("init") else None
    node = ray.get_runtime_context().get_node_id()
    fit_pack(cfgs, _reporter(lead, node), teacher_state, resumes, init_state)


def _report_reused(cfgs: list[dict], finished: dict[str, tuple[str, dict[str, float]]]) -> None:
    """Students an earlier run finished: their final numbers and that run, with no device (none trained)."""
    from ray import tune

    epochs = cfgs[0]["train"]["epochs"]
    results = {}
    for c in cfgs:
        run_id, metrics = finished[c["config_hash"]]
        results[member_key(c)] = {**metrics, "epoch": epochs, REUSED: run_id}
    tune.report(_result(results, {"epoch": epochs}))


def _reporter(lead: dict, node: str) -> PackReport:
    """fit_pack's report -> one Tune result an epoch, with a checkpoint of every student's state. An epoch
    where every student has failed leaves none: resumed from failures alone, a trial would have nothing to
    train or report, so a later driver resumes from the checkpoint before and the students fail alike."""
    from ray import tune

    told = []  # the versions go with the trial's first result only: they tag its runs once

    def report(epoch: int, out: dict[str, MemberReport]) -> None:
        results, states = {}, {}
        with tempfile.TemporaryDirectory() as d:
            for key, r in out.items():
                if r.failed:  # reported, not raised: Tune would retry it, and it would diverge again each time
                    results[key] = {"epoch": r.failed_epoch or 0, FAILED: r.failed}
                    states[key] = {"failed": r.failed, "epoch": r.failed_epoch or 0}
                    continue
                results[key], states[key] = r.metrics, r.state
                if r.final_model is not None:
                    torch.save(r.final_model, os.path.join(d, f"model_{key}.pt"))
            checkpoint = None
            if any(not r.failed for r in out.values()):
                _save(d, {"members": states}, epoch, {"members": sorted(out), "metrics": results})
                checkpoint = tune.Checkpoint.from_directory(d)
            # The device after fit_pack has set the trial's threads: what the epochs ran on.
            shared = {"epoch": epoch, "device": device_name(lead), "node": node}
            if not told:
                shared[VERSIONS] = versions(str(pick_device(lead)))
                told.append(True)
            tune.report(_result(results, shared), checkpoint=checkpoint)

    return report


def _result(results: dict[str, dict[str, Any]], shared: dict[str, Any]) -> dict[str, Any]:
    """Tune's result of an epoch: a lone student's own numbers at the top, where a search or a scheduler
    reads its metric (a student's own epoch wins over the trial's: a failed one's is when it failed);
    several students' under MEMBERS."""
    if len(results) == 1:
        (only,) = results.values()
        return {**shared, **only}
    return {**shared, MEMBERS: results}
