"""The trial config: the contract between the driver, which builds it (`orchestrator.trials`), and the
trainer, which runs it (`trainables.trial`, `trainables.tune_trial`). A plain dict, so that Tune can
pickle it and MLflow log it as JSON; `TrialConfig` names its keys. A Tune trial trains a `PackConfig`
of them (one or more students). Its content hash, and the materialising of a searched trial's sampled
knobs, live here beside it: both sides compute them alike.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from .methods.base import Knobs

# Bump when a change to the trainables changes what the same config produces: old runs then stop
# matching and are neither reused as teachers nor counted as the same trial.
# 2: the `autoencoder` objective's decoder gained the RRKD notebook's ReLU/Dropout on the code and Tanh
#    output (its teachers' weights hash names the method, not its knobs), `lpkd`'s defaults became the
#    notebook's, and `cc`/`vid`/`nst` follow RepDistiller (issue 13).
RESULT_VERSION = 2


class TrialConfig(TypedDict, total=False):
    role: str                  # "teacher", "student" or "scratch"
    sweep: str
    dataset: dict              # name, root, fingerprint, and the rest: `load_dataset`'s keyword arguments
    student: dict              # {"model", "options"}: the network this trial trains
    teacher: dict | None       # {"model", "options", "hash"}: the frozen teacher's weights hash
    method: str
    knobs: dict                # the method's knobs, validated and with every default filled in
    train: dict
    eval: dict                 # protocol -> its settings
    seed: int
    deterministic: bool
    resources: dict            # {"cpu", "gpu"}
    precision: str             # only when forced (absent: "auto")
    compile: bool | str        # true, or a mode of COMPILE_MODES
    eval_every: int
    eval_every_knn: dict
    weights_hash: str          # a teacher's: names its weights
    init: str | None           # a teacher scoring weights that exist: their weights hash
    config_hash: str           # everything that decides the result
    labels: dict               # how tables and run names read it: teacher, student, pair, cell, run
    name: str                  # file-safe: Tune's trial folder
    resume_from: str           # a checkpoint an earlier, killed driver left


class PackConfig(TypedDict):
    """A Tune config's "trial": the students one Tune trial trains, one teacher forward a batch for all
    (`orchestrator.packing` makes it). Every trial is one: a student alone, or a teacher, is a pack of one."""
    pack: list[TrialConfig]    # what `orchestrator.packing.pack_key` groups by is equal across them
    name: str                  # a lone student's own name; `pack<N>_<method>_s<seed>_<digest>` for several



def loader_kwargs(dataset: dict) -> dict:
    """The keyword arguments of `load_dataset` in a trial's `dataset` (the driver writes exactly those
    beside the name, root and fingerprint: orchestrator.spec's `DatasetSpec.loader_args`)."""
    return {k: v for k, v in dataset.items() if k not in ("name", "root", "fingerprint")}

# `compile:` takes true, false or one of these torch.compile modes. reduce-overhead replays the training
# step's forward and backward as CUDA graphs (launch overhead gone: small models at small batches).
COMPILE_MODES = ("reduce-overhead",)

# Where files lie, the sweep's name, the resources or whether the models are compiled (the same
# arithmetic, fused: equal within float rounding) do not decide the result.
NOT_HASHED = ("sweep", "resources", "name", "config_hash", "labels", "init", "compile", "eval_every",
              "eval_every_knn")


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def config_hash(cfg: dict) -> str:
    """The content hash of everything that decides a trial's result."""
    keep = {k: v for k, v in cfg.items() if k not in NOT_HASHED}
    keep["dataset"] = {k: v for k, v in cfg["dataset"].items() if k not in ("root", "download")}
    keep["result_version"] = RESULT_VERSION
    return digest(keep)


def knobs_of(cfg: dict) -> Knobs:
    """The trial's knobs as its method's typed model."""
    from .methods import method_class  # here: the driver's readers (report, status) need no torch

    return method_class(cfg["method"]).Knobs.model_validate(cfg["knobs"])


# Knobs the papers write as Greek letters: run names read as the papers' tables do.
SYMBOLS = {"lambda": "λ", "alpha": "α", "beta": "β", "gamma": "γ", "tau": "τ", "sigma2": "σ²", "delta": "δ"}


def cell_label(cell: dict) -> str:
    """A grid cell as a person reads it: `λ=0.5`, `kd`, `λ=0.5 k=10`; empty for no cell."""
    parts = []
    for k, v in cell.items():
        if k == "method":
            parts.append(str(v))
        else:
            parts.append(f"{SYMBOLS.get(k, k)}={v:.4g}" if isinstance(v, float) else f"{SYMBOLS.get(k, k)}={v}")
    return " ".join(parts)


def as_pack(trial: dict) -> PackConfig:
    """A Tune config's "trial" as a pack. The driver only makes packs; a bare trial config (as Tune configs
    held before every trial was a pack, and as tests hand the driver's callback) is a pack of one."""
    return trial if "pack" in trial else {"pack": [trial], "name": trial["name"]}


def trial_members(config: dict) -> list[TrialConfig]:
    """The students a Tune config's trial trains, as they train: the trainable and the driver's callback
    both call this, so they agree on what each student is."""
    return [materialize(cfg, config.get("search")) for cfg in as_pack(config["trial"])["pack"]]


def materialize(cfg: TrialConfig, picked: dict | None) -> TrialConfig:
    """CFG with a searched trial's sampled knobs (a Tune config's "search") in its knobs, cell, name and
    hash."""
    if not picked:
        return cfg
    picked = {k: (v.item() if hasattr(v, "item") else v) for k, v in picked.items()}  # numpy scalars
    from .methods import method_class

    knobs = method_class(cfg["method"]).Knobs.model_validate({**cfg["knobs"], **picked}).model_dump(by_alias=True)
    out = {**cfg, "knobs": knobs}
    out["config_hash"] = config_hash({k: v for k, v in out.items() if k != "config_hash"})
    run = f"{cell_label(picked)} · s{cfg['seed']}"
    out["labels"] = {**cfg["labels"], "cell": picked, "run": run}
    cell_name = "_".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in picked.items())
    out["name"] = f"{cfg['role']}_{cell_name}_s{cfg['seed']}_{out['config_hash'][:6]}"
    return out


# The keys a trial reports besides its metrics, read by the driver (`orchestrator.tracking`).
FAILED = "kd_failed"  # a result key: the trial (or a pack's student) failed for good (the value says why)
REUSED = "kd_reused"  # a result key: an earlier run (the value) finished this very config
MEMBERS = "kd_members"  # a pack's result key: config hash -> that student's result
VERSIONS = "kd_versions"  # a result key: name -> version of what decided the numbers (trainables.versions)


def checkpoint_members(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A checkpoint's `epoch.json` as config hash -> that student's numbers of the epoch, in either layout:
    a trial's names its students under "members"; one from before every trial was a pack, `config_hash`.
    A KeyError where it names neither."""
    metrics = info.get("metrics") or {}
    if "members" in info:
        return {key: metrics.get(key, {}) for key in info["members"]}
    return {info["config_hash"]: metrics}
