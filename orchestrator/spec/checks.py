"""The checks that span fields and registries: each knob against the method that declares it, the
cells, the search and its metric, label-free methods' needs."""
from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from trainables.methods import METHODS, method_class, method_knob_model

from .schema import SpecError, Sweep, _did_you_mean, _loc


def check_method_knobs(sweep: Sweep, file: str) -> None:
    """Each knob, fixed or on the grid, must be one the method declares, with the right type."""
    if "method" in sweep.grid:
        for m in sweep.grid["method"]:
            if m not in METHODS:
                raise SpecError(file, "grid.method", METHODS.unknown(m))
    for i, cell in enumerate(sweep.cells):
        if not cell:
            raise SpecError(file, f"cells.{i}", "an empty cell: give the knob values of this column")
        both = set(cell) & set(sweep.grid)
        if both:
            raise SpecError(file, f"cells.{i}.{sorted(both)[0]}", "set both in `cells` and on the `grid`")
        if "method" in cell and cell["method"] not in METHODS:
            raise SpecError(file, f"cells.{i}.method", METHODS.unknown(cell["method"]))
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
    return f"eval/{sweep.eval.protocols()[0]}_top1"


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
