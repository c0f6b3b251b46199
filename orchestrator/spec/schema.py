"""The sweep file's schema: what each field takes, checked field by field (pydantic), and what a
valid sweep expands to (cells, trial counts). Registry names are checked here; knob values against
the methods, and the search, in `checks`."""
from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer,
                      model_validator)

from trainables.config import COMPILE_MODES
from trainables.datasets import DATASETS, image_file_datasets
from trainables.methods import METHODS, method_class
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
        return MODELS.check(v)

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
    # None: the dataset's own default; mocov2 (CoSS's ImageNet augmentation) is for datasets read from
    # image files (imagenet);
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
        files = image_file_datasets()
        if self.image_size is not None and self.name not in files:
            raise ValueError(f"image_size is for datasets read from image files ({', '.join(files)}); {self.name}"
                             " images have their own size")
        if self.augment == "mocov2" and self.name not in files:
            raise ValueError(f"augment 'mocov2' (MoCo v2's crops, colour jitter and blur) is for {', '.join(files)};"
                             f" {self.name} takes crop_flip, crop, flip, randaugment or none")
        if self.name in files and (self.train_split < 1 or self.normalize is not None):
            raise ValueError(f"train_split and normalize are for in-memory datasets; {self.name} takes"
                             " train_fraction and its own statistics")
        if self.train_split < 1 and self.val_split > 0:
            raise ValueError("train_split and val_split both cut the training set: give one")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return DATASETS.check(v)


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
    # `lbfgs`: scikit-learn's LogisticRegression(C, max_iter) fitted to convergence on the features, as
    # RRKD's notebook scores its embeddings (quick_sk_probe); the SGD fields above are then unused.
    solver: Literal["sgd", "lbfgs"] = "sgd"
    C: float = Field(1.0, gt=0, description="inverse L2 strength of the lbfgs probe (sklearn's C)")
    max_iter: int = Field(5000, ge=1, description="iterations of the lbfgs probe")

    @model_validator(mode="after")
    def _lbfgs_has_no_views(self) -> "LinearProbe":
        if self.solver == "lbfgs" and self.augment:
            raise ValueError("augment: true trains on fresh views every epoch; the lbfgs probe fits fixed"
                             " features once (solver: sgd for an augmented probe)")
        return self

    @model_serializer(mode="wrap")
    def _new_fields_only_when_set(self, handler: Any) -> dict[str, Any]:
        """`augment` is dumped only when true and the lbfgs fields only with solver lbfgs (alone or inside
        a sweep): the trial configs, content hashes and sweep keys of earlier runs stay as they were."""
        out = handler(self)
        if not self.augment:
            out.pop("augment", None)
        if self.solver == "sgd":
            for key in ("solver", "C", "max_iter"):
                out.pop(key, None)
        return out


class KNN(Strict):
    """CoSS's KNN-10: cosine on L2-normalised features, votes weighted by exp(sim / T)."""
    k: int = Field(10, ge=1)
    temperature: float = Field(0.07, gt=0)


class Classifier(Strict):
    pass


# Evaluation protocols, in the order the report's default metric prefers them.
PROTOCOLS = ("linear", "knn", "classifier")


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
                raise ValueError(f"unknown protocol {unknown[0]!r} (known: {', '.join(PROTOCOLS)})")
            return {p: {} for p in v}
        if isinstance(v, dict):
            return {k: ({} if o is None and k != "every" else o) for k, o in v.items()}
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "EvalSpec":
        if not self.protocols():
            raise ValueError(f"name at least one protocol: {', '.join(PROTOCOLS)}")
        return self

    def protocols(self) -> list[str]:
        return [p for p in PROTOCOLS if getattr(self, p) is not None]


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
    # The from-scratch students' schedule, where a paper trains its baseline otherwise than its
    # students (RRKD's notebook: momentum 0 for the baseline, 0.9 for the distilled); default `train`.
    scratch_train: Schedule | None = None
    # How kd-sweep trains a teacher it must make: `none` (cross-entropy) or a label-free objective of
    # a teacher-less method (`autoencoder`, RRKD's self-supervised MNIST teachers).
    teacher_method: str = "none"
    # One teacher trained per seed, student seed s distilled from the teacher of seed s (as RRKD's notebook
    # does: a teacher's own seed noise then enters the students' spread and averages out of their mean);
    # default: one teacher for every seed.
    teacher_per_seed: bool = False
    eval: EvalSpec = Field(default_factory=lambda: EvalSpec(linear=LinearProbe(), knn=KNN()))
    resources: Resources = Field(default_factory=Resources)
    # Bit-for-bit repeats: deterministic kernels (slower on GPU). Seeds fix init and data order anyway.
    deterministic: bool = False
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 or fp32 to force one.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # torch.compile the teacher and students (minutes of compiling per trial: pays on long GPU trials);
    # reduce-overhead: the training step also replays as CUDA graphs (on CUDA; compiled without them on CPU).
    compile: bool | Literal["reduce-overhead"] = False
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
        return METHODS.check(v)

    @field_validator("teacher_method")
    @classmethod
    def _teacher_method(cls, v: str) -> str:
        METHODS.check(v)
        if method_class(v).needs_teacher:
            raise ValueError(f"a teacher is trained without a teacher: {v!r} needs one"
                             f" (methods that need none: {', '.join(n for n in METHODS.names() if not method_class(n).needs_teacher)})")
        return v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, v: Any) -> Any:
        if isinstance(v, bool) or v in COMPILE_MODES:
            return v
        raise ValueError(f"compile takes true, false or {', '.join(COMPILE_MODES)} (CUDA graphs), not {v!r}")

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

    @property
    def scratch_schedule(self) -> Schedule:
        return self.scratch_train or self.train

    @field_validator("scratch_train")
    @classmethod
    def _scratch_train_needs_scratch(cls, v: Schedule | None, info: ValidationInfo) -> Schedule | None:
        if v is not None and not info.data.get("scratch"):
            raise ValueError("the from-scratch students' schedule, and this sweep has none: set scratch: true,"
                             " or drop it")
        return v

    @model_serializer(mode="wrap")
    def _scratch_train_only_when_set(self, handler: Any) -> dict[str, Any]:
        """`scratch_train` and `teacher_per_seed` are dumped only when set: the sweep keys of earlier runs
        stay as they were."""
        out = handler(self)
        if self.scratch_train is None:
            out.pop("scratch_train", None)
        if not self.teacher_per_seed:
            out.pop("teacher_per_seed", None)
        return out


# --- loading -----------------------------------------------------------------------------------


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


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _all_fields() -> list[str]:
    models = [Sweep, PaperRef, DatasetSpec, Normalization, Pair, TeacherSpec, Schedule, LinearProbe, KNN, EvalSpec, Resources, Search,
              SearchParam, Scheduler]
    return sorted({n for m in models for n in m.model_fields})


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
