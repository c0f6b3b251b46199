"""Searches beyond grids: Optuna's TPE through Ray Tune (`search:`), ASHA early stopping (`scheduler:`).

Imported only by sweeps that use them (Optuna and Tune's search modules take seconds to import).
"""
from __future__ import annotations

import os

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .spec import SearchParam, Sweep, search_metric


optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per study otherwise


class FinalMetricOptuna(OptunaSearch):
    """OptunaSearch reads its metric from every result; kd-sweep scores the probe (linear, k-NN) once,
    after the last epoch. Results without the metric are skipped; the final one is what TPE learns from."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def domain(p: SearchParam):
    if p.type == "choice":
        return tune.choice(list(p.values))
    if p.type == "int":  # Tune's randint excludes the upper end; the spec's `high` is included
        return (tune.lograndint if p.log else tune.randint)(int(p.low), int(p.high) + 1)
    return (tune.loguniform if p.log else tune.uniform)(p.low, p.high)


def search_space(sweep: Sweep) -> dict:
    return {k: domain(p) for k, p in sweep.search.space.items()}


def searcher(sweep: Sweep, done: list[tuple[dict, float]]):
    """TPE limited to `max_concurrent` trials at a time; `done`: (knobs, metric) of trials an earlier
    driver of this sweep finished, told to the sampler so a continued search goes on from them."""
    s = sweep.search
    # The metric arrives with the last epoch only: Tune must not insist on it in every result.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    kwargs = {}
    if done:
        # Keyed as OptunaSearch flattens the param space: "search/<knob>".
        kwargs = {"points_to_evaluate": [{f"search/{k}": v for k, v in p.items()} for p, _ in done],
                  "evaluated_rewards": [v for _, v in done]}
    # A continued search seeds its sampler past the first one's: the same seed would draw the same
    # startup points again.
    alg = FinalMetricOptuna(metric=search_metric(sweep), mode=s.mode, seed=s.seed + len(done), **kwargs)
    return ConcurrencyLimiter(alg, max_concurrent=s.max_concurrent)


def scheduler(sweep: Sweep):
    sc = sweep.scheduler
    # time_attr "epoch": a trial resumed by a new driver counts its epochs, not its reports.
    return ASHAScheduler(time_attr="epoch", metric=sc.metric, mode=sc.mode, max_t=sweep.train.epochs,
                         grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)
