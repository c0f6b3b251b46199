"""The sweep file: parsed, validated, and expanded into trials before anything starts.

Validation errors are one line that names the file and the dotted field (`SpecError`); the CLI
prints it and exits 2. Nothing here touches Ray or MLflow.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from trainables.datasets import DATASETS
from trainables.methods import METHODS, method_class, method_knob_model
from trainables.models import MODELS, model_options


class SpecError(Exception):
    """One line: `FILE: field.path: what is wrong`."""

    def __init__(self, file: str, field: str, msg: str):
        self.file, self.field, self.msg = file, field, msg
        super().__init__(f"{file}: {field}: {msg}" if field else f"{file}: {msg}")


class Strict(BaseModel):
    # inf and nan pass `gt=0` checks (lr: .inf), and every trial would then fail: refused here.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ModelSpec(Strict):
    """`resnet8x4`, or `{model: mlp, hidden: [64]}`: the model's own options sit beside its name."""

    model: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_options(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"model": v}
        if isinstance(v, dict):
            v = dict(v)
            own = {k: v.pop(k) for k in list(v) if k in cls.own_fields()}
            nested = v.pop("options") if isinstance(v.get("options"), dict) else {}  # a dumped spec
            return {**own, "options": {**nested, **v}}
        return v

    @classmethod
    def own_fields(cls) -> set[str]:
        return {"model", "checkpoint"}

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in MODELS:
            raise ValueError(f"unknown model {v!r} (known: {', '.join(MODELS.names())})")
        return v

    @model_validator(mode="after")
    def _known_options(self) -> "ModelSpec":
        allowed = model_options(self.model)
        for k in self.options:
            if k not in allowed:
                raise ValueError(f"model {self.model!r} has no option {k!r}"
                                 f" (options: {', '.join(allowed) or 'none'})")
        return self

    @property
    def label(self) -> str:
        """Short name for table rows: `mlp-256-256`, `resnet8x4`."""
        if "hidden" in self.options:
            return "-".join([self.model, *map(str, self.options["hidden"])])
        return self.model


class TeacherSpec(ModelSpec):
    checkpoint: str | None = None  # a file; when absent kd-sweep trains the teacher itself


class Pair(Strict):
    teacher: TeacherSpec
    student: ModelSpec | None = None  # none: only the teacher is trained (a teachers sweep)

    @property
    def label(self) -> str:
        return f"{self.teacher.label}/{self.student.label}" if self.student else self.teacher.label


class Normalization(Strict):
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError("std values must be positive")
        return v


class DatasetSpec(Strict):
    name: str
    root: str = "~/.kd-sweep/data"
    download: bool = False
    # Off only for data that is not the official release (a copy the tests write, a re-pack).
    verify_checksum: bool = True
    # None: the dataset's own default; mocov2 (CoSS's ImageNet augmentation) is for imagenet only;
    # randaugment: crop + flip, then RandAugment (2 ops, magnitude 9) per image (Miles Table 4's second block).
    augment: Literal["crop_flip", "crop", "flip", "none", "mocov2", "randaugment"] | None = None
    # > 0: score on a held-out part of the training set (tuning sweeps); the test split is for final numbers.
    val_split: float = Field(0.0, ge=0, le=0.5)
    val_seed: int = 0
    # < 1: train on a stratified, seeded fraction of the training set (Miles's ImageNet 20% subset).
    train_fraction: float = Field(1.0, gt=0, le=1)
    # At most this many images per split (stratified, seeded): quick runs, `--smoke`.
    max_train: int | None = Field(None, ge=2)
    max_test: int | None = Field(None, ge=1)
    # The crop side of a dataset read from image files (imagenet: 224); `--smoke` uses 64.
    image_size: int | None = Field(None, ge=16)
    # < 1: train on the first part of torch's random_split(train, [train_split, 1 - train_split]) seeded by
    # train_split_seed (RRKD's notebook: 0.9, 42); train_fraction draws a stratified part instead.
    train_split: float = Field(1.0, gt=0, le=1)
    train_split_seed: int = 42
    # In place of the dataset's own statistics: {mean: [0.5], std: [0.5]} (RRKD's notebook, every dataset).
    normalize: Normalization | None = None

    def loader_args(self) -> dict:
        args = {"download": self.download, "verify_checksum": self.verify_checksum, "augment": self.augment,
                "val_split": self.val_split, "val_seed": self.val_seed, "train_fraction": self.train_fraction,
                "max_train": self.max_train, "max_test": self.max_test}
        # Only when set: the content hashes of earlier runs stay valid.
        if self.image_size is not None:
            args["image_size"] = self.image_size
        if self.train_split < 1:
            args.update(train_split=self.train_split, train_split_seed=self.train_split_seed)
        if self.normalize is not None:
            args["normalize"] = self.normalize.model_dump()
        return args

    @model_validator(mode="after")
    def _sized(self) -> "DatasetSpec":
        if self.image_size is not None and self.name != "imagenet":
            raise ValueError(f"image_size is for datasets read from image files (imagenet); {self.name} images"
                             " have their own size")
        if self.augment == "mocov2" and self.name != "imagenet":
            raise ValueError(f"augment 'mocov2' (MoCo v2's crops, colour jitter and blur) is for imagenet; {self.name}"
                             " takes crop_flip, crop, flip, randaugment or none")
        if self.name == "imagenet" and (self.train_split < 1 or self.normalize is not None):
            raise ValueError("train_split and normalize are for in-memory datasets; imagenet takes train_fraction"
                             " and its own statistics")
        if self.train_split < 1 and self.val_split > 0:
            raise ValueError("train_split and val_split both cut the training set: give one")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r} (known: {', '.join(DATASETS.names())})")
        return v


class Schedule(Strict):
    epochs: int = Field(240, ge=0)
    batch_size: int = Field(64, ge=2)  # space similarity normalises over the batch: 1 is meaningless
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(0.1, gt=0, le=1)
    # step: x gamma at each milestone (CRD); cosine: to 0 over the epochs (CoSS on ImageNet).
    lr_schedule: Literal["step", "cosine"] = "step"
    # Re-estimate BatchNorm statistics on the training images after the last epoch (precise BN):
    # a model trained for a few steps has running statistics far from its features otherwise.
    bn_recalibrate: bool = False

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if any(m <= 0 for m in v) or v != sorted(v):
            raise ValueError("milestones must be positive epochs in increasing order")
        return v


class LinearProbe(Strict):
    """CoSS's CIFAR probe: 100 epochs, SGD lr 0.1, wd 5e-4, x0.1 at 50/70/90.

    `augment`: false trains the head on the features of the un-augmented training images, computed once;
    true (MoCo's main_lincls.py, which CoSS's ImageNet table follows) on the features of freshly augmented
    images every epoch: RandomResizedCrop (scale 0.08-1) + horizontal flip at the dataset's image size,
    the frozen model in eval mode. Scored on the un-augmented test view either way."""
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [50, 70, 90])
    gamma: float = Field(0.1, gt=0, le=1)
    augment: bool = False

    @model_serializer(mode="wrap")
    def _augment_only_when_on(self, handler: Any) -> dict[str, Any]:
        """`augment` is dumped only when true (alone or inside a sweep): the trial configs, content hashes
        and sweep keys of earlier runs stay as they were."""
        out = handler(self)
        if not self.augment:
            out.pop("augment", None)
        return out


class KNN(Strict):
    """CoSS's KNN-10: cosine on L2-normalised features, votes weighted by exp(sim / T)."""
    k: int = Field(10, ge=1)
    temperature: float = Field(0.07, gt=0)


class Classifier(Strict):
    pass


class EvalSpec(Strict):
    linear: LinearProbe | None = None
    knn: KNN | None = None
    classifier: Classifier | None = None
    # N: every N epochs (and the last), a k-NN score on fixed slices (5k train, 1k test images; the knn
    # protocol's k and temperature, else 10 and 0.07) as `curve/knn_top1`: a curve for any student.
    every: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v: Any) -> Any:
        if isinstance(v, list):  # `eval: [linear, knn]` means each with its defaults
            unknown = [p for p in v if p not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown protocol {unknown[0]!r} (known: linear, knn, classifier)")
            return {p: {} for p in v}
        if isinstance(v, dict):
            return {k: ({} if o is None and k != "every" else o) for k, o in v.items()}
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "EvalSpec":
        if not self.protocols():
            raise ValueError("name at least one protocol: linear, knn, classifier")
        return self

    def protocols(self) -> list[str]:
        return [p for p in ("linear", "knn", "classifier") if getattr(self, p) is not None]


class Resources(Strict):
    cpu: float = Field(1.0, ge=0.5)  # below half a core a trial spends its time waiting
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a trial takes a fraction of one GPU or a whole number of GPUs")
        return v


class SearchParam(Strict):
    """One searched knob: `float` (uniform, or log-uniform with `log: true`) and `int` between `low` and
    `high` (both included), or `choice` among `values`."""
    type: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _range(self) -> "SearchParam":
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs `values`, e.g. values: [linear, mlp]")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a choice takes `values`, not low/high/log")
            return self
        if self.values is not None:
            raise ValueError(f"a {self.type} range takes low and high, not values (or use type: choice)")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} range needs low < high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole low and high")
        return self

    def ends(self) -> list[Any]:
        if self.type == "choice":
            return list(self.values)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class Search(Strict):
    """Optuna's TPE through Ray Tune's OptunaSearch: `n_trials` sampled configs of the method's knobs,
    at most `max_concurrent` at a time (TPE learns from finished trials only)."""
    algorithm: Literal["optuna"] = "optuna"
    n_trials: int = Field(ge=1)
    max_concurrent: int = Field(2, ge=1)
    metric: str | None = None  # default: the first of linear, knn, classifier that `eval` scores
    mode: Literal["max", "min"] = "max"
    seed: int = 0  # the sampler's
    space: dict[str, SearchParam] = Field(min_length=1)


class Scheduler(Strict):
    """ASHA (asynchronous successive halving) on a metric scored every epoch: stops the worse trials
    at epochs grace_period, grace_period x reduction_factor, ... up to train.epochs."""
    type: Literal["asha"]
    metric: str = "eval/classifier_top1"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class PaperRef(Strict):
    """What published table(s) a sweep reproduces, and how our runs differ from the authors'. `kd-sweep
    report --paper` matches only these tables' numbers (results/published/<paper>.csv: `paper table`,
    e.g. "coss supp. Table 3"), counts how many of them it shows, and prints `deviations` under the
    table: every known difference from the authors' run, each with its source."""
    tables: list[str] = Field(min_length=1)
    deviations: list[str] = Field(default_factory=list)

    @field_validator("tables")
    @classmethod
    def _published(cls, v: list[str]) -> list[str]:
        from results.published import table_refs

        known = table_refs()
        for t in v:
            if t not in known:
                raise ValueError(f"no published table {t!r} in results/published/ (tables: {', '.join(sorted(known))})")
        return v

    @field_validator("deviations")
    @classmethod
    def _fits_a_tag(cls, v: list[str]) -> list[str]:
        # They travel to the report as one MLflow tag (8000 characters at most, pairs included).
        if sum(len(d) + 4 for d in v) > 6000:
            raise ValueError("deviations take at most 6000 characters in all: say each in a sentence or two")
        return v


class Sweep(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    paper: PaperRef | None = None  # the published table(s) this sweep reproduces
    dataset: DatasetSpec
    pairs: list[Pair] = Field(min_length=1)
    # unsupervised (CoSS): no labels in the loss and the teacher's classifier is removed, so methods
    # that need either are refused at validation; the from-scratch column still uses labels.
    setting: Literal["supervised", "unsupervised"] = "supervised"
    method: str = "none"
    knobs: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    # Explicit cells, for combinations a product cannot express (CoSS supp. Table 2: L_co only, L_ss
    # only, both); crossed with `grid` when both are given.
    cells: list[dict[str, Any]] = Field(default_factory=list)
    scratch: bool = False
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: Schedule = Field(default_factory=Schedule)
    teacher_train: Schedule | None = None
    # How kd-sweep trains a teacher it must make: `none` (cross-entropy) or a label-free objective of
    # a teacher-less method (`autoencoder`, RRKD's self-supervised MNIST teachers).
    teacher_method: str = "none"
    eval: EvalSpec = Field(default_factory=lambda: EvalSpec(linear=LinearProbe(), knn=KNN()))
    resources: Resources = Field(default_factory=Resources)
    # Bit-for-bit repeats: deterministic kernels (slower on GPU). Seeds fix init and data order anyway.
    deterministic: bool = False
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 or fp32 to force one.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # torch.compile the teacher and students (minutes of compiling per trial: pays on long GPU trials).
    compile: bool = False
    max_failures: int = Field(2, ge=0)
    # Students that share a teacher forward train in one trial, each still its own run (orchestrator/
    # packing.py): auto (fill the trial slots, then as many as fit in memory), off, or at most N a trial.
    pack: Literal["auto", "off"] | int = "auto"
    storage: str | None = None
    # Epoch checkpoints on `storage` once a trial has finished (its weights are in MLflow by then): last
    # keeps its final one, all keeps every epoch's. Running trials keep their two newest either way.
    keep_checkpoints: Literal["last", "all"] = "last"
    # Beyond grids: a search samples the knobs (no grid or cells then), a scheduler stops trials early.
    search: Search | None = None
    scheduler: Scheduler | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r} (known: {', '.join(METHODS.names())})")
        return v

    @field_validator("teacher_method")
    @classmethod
    def _teacher_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r} (known: {', '.join(METHODS.names())})")
        if method_class(v).needs_teacher:
            raise ValueError(f"a teacher is trained without a teacher: {v!r} needs one"
                             f" (methods that need none: {', '.join(n for n in METHODS.names() if not method_class(n).needs_teacher)})")
        return v

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML 1.1 reads a bare `off` as false (and `on` as true)
            return "off" if not v else "auto"
        if v in ("auto", "off") or (isinstance(v, int) and v >= 1):
            return v
        raise ValueError(f"pack takes auto, off, or a number of students per trial (1 or more), not {v!r}")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        if any(not 0 <= x < 2 ** 32 for x in v):  # what numpy and torch generators take
            raise ValueError(f"seeds are integers from 0 to 2**32 - 1, not {next(x for x in v if not 0 <= x < 2 ** 32)}")
        return v

    @property
    def methods(self) -> list[str]:
        found = [*self.grid.get("method", []), *(c["method"] for c in self.cells if "method" in c)]
        return list(dict.fromkeys(found)) or [self.method]

    def all_cells(self) -> list[dict[str, Any]]:
        """Every grid cell: the product of `grid`, crossed with the explicit `cells`."""
        product = grid_cells(self.grid)
        return [{**c, **g} for c in self.cells for g in product] if self.cells else product

    def axes(self) -> list[str]:
        return list(dict.fromkeys([*self.grid, *(k for c in self.cells for k in c)]))

    def shared_knobs(self) -> dict[str, Any]:
        """Knobs for every method; a mapping under a method's name holds that method's own."""
        return {k: v for k, v in self.knobs.items() if not (k in METHODS and isinstance(v, dict))}

    def knobs_for(self, method: str, cell: dict[str, Any]) -> dict[str, Any]:
        own = self.knobs.get(method) if isinstance(self.knobs.get(method), dict) else {}
        return {**self.shared_knobs(), **own, **{k: v for k, v in cell.items() if k != "method"}}

    @property
    def teacher_schedule(self) -> Schedule:
        return self.teacher_train or self.train


# --- loading -----------------------------------------------------------------------------------

def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def apply_overrides(raw: dict, sets: list[str], file: str) -> dict:
    """`--set train.epochs=1`: a dotted path and a YAML value, applied before validation."""
    raw = copy.deepcopy(raw)
    for s in sets:
        if "=" not in s:
            raise SpecError(file, f"--set {s}", "expected PATH=VALUE, e.g. train.epochs=1")
        path, value = s.split("=", 1)
        parsed = parse_yaml(value, file, f"--set {path}")
        _check_size(parsed, file)
        node = raw
        keys = path.split(".")
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(key)]
                    continue
                except (ValueError, IndexError):
                    raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i + 1])} is no index of the list") from None
            if not isinstance(node, dict):
                raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i])} is a value, not a mapping")
            nxt = node.get(key)
            if nxt is None:
                nxt = node[key] = {}
            elif isinstance(nxt, str) and key in ("teacher", "student"):  # `teacher: resnet56` shorthand
                nxt = node[key] = {"model": nxt}
            if not isinstance(nxt, (dict, list)):
                raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i + 1])} is not a mapping")
            node = nxt
        if isinstance(node, list):
            try:
                node[int(keys[-1])] = parsed
            except (ValueError, IndexError):
                raise SpecError(file, f"--set {path}", "not an index of the list") from None
        elif isinstance(node, dict):
            node[keys[-1]] = parsed
        else:
            raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:-1])} is a value, not a mapping")
    return raw


MAX_FILE_BYTES = 1 << 20  # a sweep file is a page of YAML; a megabyte is something else
MAX_VALUES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file is small on disk)
MAX_DEPTH = 50


class _UniqueKeys(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(raw: Any, file: str) -> None:
    """Walks the loaded file without recursion, stopping at MAX_VALUES values or MAX_DEPTH levels: aliases
    can make a small file expand to billions of values, and deep nesting exhausts the stack later."""
    stack, count = [(raw, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SpecError(file, "", f"the file expands to more than {MAX_VALUES:,} values (YAML aliases?): not a sweep")
        if depth > MAX_DEPTH:
            raise SpecError(file, "", f"the file nests deeper than {MAX_DEPTH} levels: not a sweep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_yaml(text: str, file: str, where: str = "") -> Any:
    """YAML text -> data, every failure one line naming the place."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = where or (f"line {mark.line + 1}" if mark else "yaml")
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SpecError(file, at, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(file, where, "the YAML nests deeper than Python can read: not a sweep") from None


def load_sweep(path: str | Path, sets: list[str] | None = None) -> Sweep:
    file = str(path)
    try:
        if Path(path).is_dir():
            raise SpecError(file, "", "is a folder, not a sweep file")
        if Path(path).stat().st_size > MAX_FILE_BYTES:
            raise SpecError(file, "", f"is over {MAX_FILE_BYTES >> 20} MB: not a sweep file")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(file, "", f"cannot read the file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(file, "", "is not a text file (not UTF-8): give the sweep's YAML file") from None
    raw = parse_yaml(text, file)
    if not isinstance(raw, dict):
        raise SpecError(file, "", "a sweep file is a YAML mapping (name:, dataset:, pairs:, ...)")
    _check_size(raw, file)
    raw = apply_overrides(raw, sets or [], file)
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {err['loc'][-1]!r}{_did_you_mean(str(err['loc'][-1]), _all_fields())}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise SpecError(file, _loc(err["loc"]), msg) from None
    check_method_knobs(sweep, file)
    check_search(sweep, file)
    return sweep


def check_method_knobs(sweep: Sweep, file: str) -> None:
    """Each knob, fixed or on the grid, must be one the method declares, with the right type."""
    if "method" in sweep.grid:
        for m in sweep.grid["method"]:
            if m not in METHODS:
                raise SpecError(file, "grid.method", f"unknown method {m!r} (known: {', '.join(METHODS.names())})")
    for i, cell in enumerate(sweep.cells):
        if not cell:
            raise SpecError(file, f"cells.{i}", "an empty cell: give the knob values of this column")
        both = set(cell) & set(sweep.grid)
        if both:
            raise SpecError(file, f"cells.{i}.{sorted(both)[0]}", "set both in `cells` and on the `grid`")
        if "method" in cell and cell["method"] not in METHODS:
            raise SpecError(file, f"cells.{i}.method", f"unknown method {cell['method']!r}")
    if len({json.dumps(c, sort_keys=True, default=str) for c in sweep.cells}) != len(sweep.cells):
        raise SpecError(file, "cells", "cells repeat")
    for axis, values in sweep.grid.items():
        if not values:
            raise SpecError(file, f"grid.{axis}", "empty grid axis: give at least one value")
        if len(values) != len({repr(v) for v in values}):
            raise SpecError(file, f"grid.{axis}", "values repeat")
    for name, value in sweep.knobs.items():
        if name in METHODS and not isinstance(value, dict):
            raise SpecError(file, f"knobs.{name}", f"knobs under a method's name are that method's own:"
                            f" give a mapping, e.g. {name}: {{weight: 1.0}}")
        if isinstance(value, dict) and name in METHODS and name not in sweep.methods:
            raise SpecError(file, f"knobs.{name}", f"method {name!r} is not in this sweep"
                            f" (methods: {', '.join(sweep.methods)})")
    for method in sweep.methods:
        model = method_knob_model(method)
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        own = sweep.knobs.get(method, {})
        cell_keys = {k for c in sweep.cells if c.get("method", method) == method for k in c}
        for where, names in (("knobs", sweep.shared_knobs()), (f"knobs.{method}", own), ("grid", sweep.grid),
                             ("cells", cell_keys)):
            for k in names:
                if where in ("grid", "cells") and k == "method":
                    continue
                if k not in known:
                    listed = sorted(f.alias or n for n, f in model.model_fields.items())
                    raise SpecError(file, f"{where}.{k}", f"method {method!r} has no knob {k!r}"
                                    f"{_did_you_mean(k, listed)} (knobs: {', '.join(listed)})")
        for cell in sweep.all_cells():
            if cell.get("method", method) != method:
                continue
            try:
                resolved = model.model_validate(sweep.knobs_for(method, cell))
            except ValidationError as e:
                err = e.errors()[0]
                field = _loc(err["loc"])
                where = ("grid" if field in sweep.grid else "cells" if field in cell_keys
                         else f"knobs.{method}" if field in own else "knobs")
                raise SpecError(file, f"{where}.{field}" if field else where,
                                f"{err['msg'].removeprefix('Value error, ')} (method {method!r})") from None
            if sweep.setting == "unsupervised":
                check_unsupervised(method, resolved, sweep, file)
            if not method_class(method).has_main_loss(resolved):
                raise SpecError(file, "grid.method" if "method" in sweep.grid else "method",
                                f"method {method!r} has nothing to train the student with after its pre-stage"
                                " (weight 0, lambda_ce 0, lambda_kd 0): give it a weight or a label term")


def search_metric(sweep: Sweep) -> str:
    if sweep.search and sweep.search.metric:
        return sweep.search.metric
    return f"eval/{next(p for p in ('linear', 'knn', 'classifier') if p in sweep.eval.protocols())}_top1"


def check_search(sweep: Sweep, file: str) -> None:
    """What Ray would refuse or silently get wrong in `search` and `scheduler`, named by field."""
    protocols = sweep.eval.protocols()
    if sweep.scheduler is not None:
        if sweep.scheduler.metric != "eval/classifier_top1" or "classifier" not in protocols:
            raise SpecError(file, "scheduler.metric", "ASHA compares trials every epoch, and the one metric scored"
                            " every epoch is eval/classifier_top1: use it, with `classifier: {}` under eval")
        if sweep.scheduler.grace_period > sweep.train.epochs:
            raise SpecError(file, "scheduler.grace_period", f"longer than train.epochs ({sweep.train.epochs})")
    if isinstance(sweep.pack, int) and sweep.pack > 1 and (sweep.search or sweep.scheduler):
        raise SpecError(file, "pack", f"a {'search' if sweep.search else 'scheduler'} decides on each trial alone,"
                        " so its trials are not packed: set pack: auto or off")
    search = sweep.search
    if search is None:
        return
    if sweep.grid or sweep.cells:
        axes = ", ".join(sweep.axes())
        raise SpecError(file, "search", f"a search samples its knobs and cannot be mixed with grid axes or cells"
                        f" ({axes}): Ray's OptunaSearch refuses grid_search. Move them into search.space, e.g."
                        " {type: choice, values: [...]}")
    if len(sweep.seeds) != 1:
        raise SpecError(file, "seeds", "a search runs each sampled config once: give one seed (then run the best"
                        " configs over seeds as a grid)")
    if sum(p.student is not None for p in sweep.pairs) != 1:
        raise SpecError(file, "pairs", "a search tunes one teacher/student pair: give one pair with a student")
    if sweep.scratch:
        raise SpecError(file, "scratch", "a search has no from-scratch column: run it as a grid sweep")
    metric = search_metric(sweep)
    name = metric.removeprefix("eval/")
    if not metric.startswith("eval/") or name.split("_top")[0] not in protocols:
        raise SpecError(file, "search.metric", f"{metric!r} is not scored by this sweep's eval"
                        f" (it scores: {', '.join(f'eval/{p}_top1' for p in protocols)})")
    model = method_knob_model(sweep.method)
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    for k, param in search.space.items():
        if k not in known:
            listed = sorted(f.alias or n for n, f in model.model_fields.items())
            raise SpecError(file, f"search.space.{k}", f"method {sweep.method!r} has no knob {k!r}"
                            f"{_did_you_mean(k, listed)} (knobs: {', '.join(listed)})")
        for v in param.ends():
            try:
                model.model_validate({**sweep.knobs_for(sweep.method, {}), k: v})
            except ValidationError as e:
                raise SpecError(file, f"search.space.{k}", f"{v!r}: {e.errors()[0]['msg']}") from None


def check_unsupervised(method: str, knobs: Any, sweep: "Sweep", file: str) -> None:
    cls = method_class(method)
    field = "grid.method" if "method" in sweep.grid else "method"
    why = None
    if cls.uses_labels(knobs):
        why = (f"uses labels (lambda_ce {knobs.lambda_ce:g})" if knobs.lambda_ce > 0 else "needs labels")
    elif cls.uses_teacher_logits(knobs):
        why = (f"uses the teacher's logits (lambda_kd {knobs.lambda_kd:g})" if knobs.lambda_kd > 0
               else "needs the teacher's logits")
    if why:
        raise SpecError(file, field, f"method {method!r} {why}, and this sweep's setting is unsupervised (no"
                        " labels in the loss, the teacher's classifier removed); use setting: supervised,"
                        " or set its label/logit weights to 0")


def _all_fields() -> list[str]:
    models = [Sweep, PaperRef, DatasetSpec, Normalization, Pair, TeacherSpec, Schedule, LinearProbe, KNN, EvalSpec, Resources, Search,
              SearchParam, Scheduler]
    return sorted({n for m in models for n in m.model_fields})


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def grid_cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    axes = list(grid)
    return [dict(zip(axes, combo)) for combo in itertools.product(*(grid[a] for a in axes))]


def resolve_path(p: str, base: Path | None = None) -> str:
    path = Path(p).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def count_trials(sweep: Sweep) -> int:
    """Student trials (teachers not counted: they may exist already)."""
    if sweep.search is not None:
        return sweep.search.n_trials
    students = [p.student for p in sweep.pairs if p.student is not None]
    n = len(students) * len(sweep.all_cells()) * len(sweep.seeds)
    if sweep.scratch:
        n += len({s.label for s in students}) * len(sweep.seeds)
    return n


def count_teachers(sweep: Sweep) -> int:
    return len({p.teacher.model_dump_json() for p in sweep.pairs})

