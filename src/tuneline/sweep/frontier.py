"""The frontier of a sweep and its recommendation, from the trials' results on the same test records.

Pareto front: a completed trial is Pareto-optimal when no other trial is at least as good on the metric and
at least as cheap on ``sweep.cost_metric``, and strictly better on one of them.

Recommendation (non-inferiority): the best trial is the one with the best metric on all records. Every other
trial is compared with it by a paired bootstrap on the same records (evaluation/stats.py: the same resamples
for both, groups resampled when the records have groups), ``delta = metric(trial) - metric(best)``. A trial
is non-inferior when the 95% CI of delta excludes a loss larger than ``tolerance``: ``low > -tolerance``
for a metric where higher is better, ``high < tolerance`` where lower is better. The recommendation is the
cheapest non-inferior trial (ties: better metric, then name); the best trial is always non-inferior to
itself, so there is always one. Same results and seed, same recommendation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneline.config.schema import LOWER_IS_BETTER, SWEEP_COSTS
from tuneline.errors import SweepError


@dataclass(frozen=True)
class Predictions:
    """One trial's per-record classification output on the evaluated split."""

    record_ids: tuple[str, ...]
    labels: np.ndarray  # true class of each record
    probabilities: np.ndarray  # (n, K) in the order of the sweep's labels
    groups: np.ndarray | None
    threshold: float | None  # binary decision threshold chosen on val


@dataclass(frozen=True)
class TrialOutcome:
    key: str
    number: int
    state: str  # complete | pruned | failed | running | waiting
    overrides: dict[str, Any]
    metric: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    costs: dict[str, float | None] = field(default_factory=dict)
    run_dir: str | None = None
    gate_passed: bool | None = None
    predictions: Predictions | None = None


def _sign(metric: str) -> int:
    return -1 if metric in LOWER_IS_BETTER else 1


def _cost(t: TrialOutcome, cost_metric: str) -> float:
    value = t.costs.get(cost_metric)
    return math.inf if value is None or not math.isfinite(value) else float(value)


def _metric_of(t: TrialOutcome) -> float:
    """The metric of a scored trial (``build`` ranks only trials that have one)."""
    assert t.metric is not None
    return t.metric


def pareto(trials: list[TrialOutcome], metric: str, cost_metric: str) -> set[str]:
    """Keys of the Pareto-optimal trials on (metric, cost); trials without a cost are left out."""
    sign = _sign(metric)
    pts = [(t.key, sign * t.metric, _cost(t, cost_metric)) for t in trials if t.metric is not None]
    pts = [p for p in pts if math.isfinite(p[2])]
    front = set()
    for key, m, c in pts:
        dominated = any(m2 >= m and c2 <= c and (m2 > m or c2 < c) for k2, m2, c2 in pts if k2 != key)
        if not dominated:
            front.add(key)
    return front


def paired_delta(
    best: Predictions,
    other: Predictions,
    metric: str,
    classes: list[str],
    positive: str | None,
    *,
    n_resamples: int,
    seed: int,
):
    """``metric(other) - metric(best)`` with its paired bootstrap CI on the same records."""
    from tuneline.evaluation import stats as S

    if best.record_ids != other.record_ids:
        raise SweepError(
            "two trials were evaluated on different records; a paired comparison needs the same ones",
            hint="every trial of a sweep shares the prepared snapshot and eval settings; rerun the trial",
        )
    comparisons = S.paired_bootstrap_metrics(
        best.labels,
        best.probabilities,
        other.probabilities,
        classes,
        positive=positive,
        threshold_a=0.5 if best.threshold is None else best.threshold,
        threshold_b=0.5 if other.threshold is None else other.threshold,
        groups=best.groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    if metric not in comparisons:
        raise SweepError(
            f"sweep.metric {metric} has no paired bootstrap", hint=f"use one of {', '.join(comparisons)}"
        )
    return comparisons[metric]


def non_inferior(low: float | None, high: float | None, metric: str, tolerance: float) -> bool:
    """The CI of ``trial - best`` excludes a loss larger than ``tolerance``."""
    if _sign(metric) > 0:
        return low is not None and math.isfinite(low) and low > -tolerance
    return high is not None and math.isfinite(high) and high < tolerance


def build(
    trials: list[TrialOutcome],
    *,
    metric: str,
    cost_metric: str,
    tolerance: float,
    classes: list[str],
    positive: str | None,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """frontier.json: every trial, the Pareto front, each trial against the best, the recommendation."""
    sign = _sign(metric)
    scored = [t for t in trials if t.state == "complete" and t.metric is not None and t.predictions]
    front = pareto(scored, metric, cost_metric)
    best = (
        min(scored, key=lambda t: (-sign * _metric_of(t), _cost(t, cost_metric), t.key)) if scored else None
    )
    rows, eligible = [], []
    for t in sorted(trials, key=lambda t: t.number):
        row: dict[str, Any] = {
            "key": t.key,
            "number": t.number,
            "state": t.state,
            "overrides": t.overrides,
            "metric": t.metric,
            "ci": list(t.ci),
            **{k: t.costs.get(k) for k in SWEEP_COSTS},
            "gate_passed": t.gate_passed,
            "run_dir": t.run_dir,
            "pareto": t.key in front,
            "vs_best": None,
            "non_inferior": None,
        }
        if best is not None and t in scored:
            if t.key == best.key:
                row["vs_best"] = {"delta": 0.0, "ci": [0.0, 0.0], "p_value": 1.0}
                row["non_inferior"] = True
            else:
                assert best.predictions is not None and t.predictions is not None  # both are in scored
                c = paired_delta(
                    best.predictions,
                    t.predictions,
                    metric,
                    classes,
                    positive,
                    n_resamples=n_resamples,
                    seed=seed,
                )
                row["vs_best"] = {
                    "delta": c.delta,
                    "ci": [c.low, c.high],
                    "p_value": c.p_value,
                    "unit": c.unit,
                }
                row["non_inferior"] = non_inferior(c.low, c.high, metric, tolerance)
            if row["non_inferior"]:
                eligible.append(t)
        rows.append(row)
    recommended = (
        min(eligible, key=lambda t: (_cost(t, cost_metric), -sign * _metric_of(t), t.key))
        if eligible
        else None
    )
    from tuneline.evaluation.metrics import nan_to_none

    return nan_to_none(
        {
            "metric": metric,
            "lower_is_better": sign < 0,
            "cost_metric": cost_metric,
            "tolerance": tolerance,
            "test": "paired bootstrap, 95% CI of metric(trial) - metric(best)",
            "n_resamples": n_resamples,
            "seed": seed,
            "best": best.key if best else None,
            "recommended": recommended.key if recommended else None,
            "pareto": sorted(front),
            "trials": rows,
        }
    )
