"""The recommendation on planted trial results: the cheapest trial non-inferior to the best wins."""

from __future__ import annotations

import numpy as np
import pytest

from tuneline.sweep.frontier import Predictions, TrialOutcome, build, non_inferior, pareto

CLASSES = ["a", "b"]


def _predictions(y: np.ndarray, p_b: np.ndarray, groups=None) -> Predictions:
    ids = tuple(f"r{i}" for i in range(len(y)))
    P = np.column_stack([1 - p_b, p_b])
    return Predictions(ids, np.array(CLASSES)[y], P, groups, 0.5)


def _trial(key: str, number: int, pred: Predictions, cost: float) -> TrialOutcome:
    from sklearn.metrics import log_loss

    truth = (pred.labels == "b").astype(int)
    return TrialOutcome(
        key, number, "complete", {}, metric=float(log_loss(truth, pred.probabilities[:, 1])),
        costs={"cost_per_1k": cost}, predictions=pred,
    )  # fmt: skip


@pytest.fixture
def planted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    sure = np.where(y == 1, 0.9, 0.1)
    best = _predictions(y, sure)
    close = _predictions(y, np.where(y == 1, 0.88, 0.12))  # log loss 0.128 vs 0.105
    worse = _predictions(y, np.where(y == 1, 0.6, 0.4))  # log loss 0.51 vs 0.105
    return [
        _trial("large", 0, best, cost=3.0),
        _trial("medium", 1, close, cost=2.0),
        _trial("small", 2, worse, cost=1.0),
    ]


def _frontier(trials, tolerance):
    return build(
        trials, metric="log_loss", cost_metric="cost_per_1k", tolerance=tolerance, classes=CLASSES,
        positive="b", n_resamples=300, seed=7,
    )  # fmt: skip


def test_cheaper_trial_within_tolerance_is_recommended_and_one_outside_is_not(planted):
    out = _frontier(planted, tolerance=0.05)
    rows = {r["key"]: r for r in out["trials"]}
    assert out["best"] == "large"
    assert rows["medium"]["non_inferior"] is True
    assert rows["small"]["non_inferior"] is False  # cheapest, but its loss is 0.4 worse
    assert out["recommended"] == "medium"
    # With a margin the worse trial's CI fits in, the cheapest one wins.
    assert _frontier(planted, tolerance=1.0)["recommended"] == "small"
    # The CI is of trial - best on the same resamples.
    low, high = rows["small"]["vs_best"]["ci"]
    assert 0.3 < low < high < 0.6


def test_no_margin_keeps_the_best(planted):
    rng = np.random.default_rng(1)
    y = (planted[0].predictions.labels == "b").astype(int)
    clearly_worse = _predictions(y, np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.02, len(y)), 0, 1))
    trials = [planted[0], _trial("cheap", 1, clearly_worse, cost=0.5)]
    assert _frontier(trials, tolerance=0.0)["recommended"] == "large"


def test_recommendation_is_reproducible(planted):
    assert _frontier(planted, 0.05) == _frontier(planted, 0.05)


def test_pareto_front_marks_undominated_trials(planted):
    front = pareto(planted, "log_loss", "cost_per_1k")
    assert front == {"large", "medium", "small"}  # each is cheaper or better than the others
    dominated = TrialOutcome("dominated", 3, "complete", {}, metric=0.6, costs={"cost_per_1k": 5.0})
    assert pareto([*planted, dominated], "log_loss", "cost_per_1k") == front


def test_groups_are_resampled_when_present(planted):
    groups = np.array([f"patient{i // 4}" for i in range(400)], dtype=object)
    grouped = [
        TrialOutcome(t.key, t.number, t.state, {}, t.metric, costs=t.costs,
                     predictions=Predictions(*[getattr(t.predictions, f) for f in ("record_ids", "labels",
                                             "probabilities")], groups, 0.5))
        for t in planted
    ]  # fmt: skip
    rows = {r["key"]: r for r in _frontier(grouped, 0.05)["trials"]}
    assert rows["small"]["vs_best"]["unit"] == "groups"


@pytest.mark.parametrize(
    "low,high,metric,tol,expected",
    [(-0.004, 0.01, "accuracy", 0.005, True), (-0.006, 0.01, "accuracy", 0.005, False),
     (-0.1, 0.004, "log_loss", 0.005, True), (-0.1, 0.006, "log_loss", 0.005, False)],
)  # fmt: skip
def test_non_inferiority_margin_direction(low, high, metric, tol, expected):
    assert non_inferior(low, high, metric, tol) is expected
