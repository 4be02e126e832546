"""The cascade's pure logic: circuit breaker, threshold choice from planted scores, temperature scaling,
costs and the daily budget (no models, no servers)."""

from __future__ import annotations

import numpy as np
import pytest

from tuneline.evaluation.metrics import expected_calibration_error as ece
from tuneline.serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tuneline.serving.cascade_curve import choose, curve, fit_temperature, softmax
from tuneline.serving.costs import Budget, local_cost, token_cost


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ breaker
def test_breaker_opens_after_repeated_failures_and_closes_after_a_good_trial():
    clock = Clock()
    changes = []
    b = CircuitBreaker(failures=3, reset_s=10, clock=clock)
    b.on_change = changes.append
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.t += 9.9
    assert not b.allow()
    clock.t += 0.2
    assert b.state == HALF_OPEN
    assert b.allow()  # the one trial
    assert not b.allow()  # nobody else while it is in flight
    b.success()
    assert b.state == CLOSED and b.allow() and b.failures == 0
    assert changes == [OPEN, CLOSED]


def test_breaker_failed_trial_opens_again_and_success_resets_the_count():
    clock = Clock()
    b = CircuitBreaker(failures=2, reset_s=5, clock=clock)
    b.failure()
    b.success()
    b.failure()
    assert b.state == CLOSED  # not consecutive
    b.failure()
    assert b.state == OPEN
    clock.t += 5
    assert b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.t += 5
    assert b.allow()


# ------------------------------------------------------------------ threshold from planted scores
CONF = np.array([0.95, 0.9, 0.6, 0.4, 0.3])
SMALL_OK = np.array([1, 1, 0, 0, 1])
FALLBACK_OK = np.ones(5)


def test_curve_counts_routing_accuracy_and_cost_at_every_distinct_threshold():
    pts = curve(CONF, SMALL_OK, FALLBACK_OK, 1.0, 10.0)
    assert pts[0].threshold == 0 and pts[0].share_routed == 0 and pts[0].accuracy == pytest.approx(0.6)
    assert pts[0].cost_per_1k == pytest.approx(1000)
    assert pts[-1].share_routed == 1 and pts[-1].accuracy == 1 and pts[-1].cost_per_1k == pytest.approx(11000)
    assert [p.share_routed for p in pts] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert len({p.threshold for p in pts}) == len(pts)


@pytest.mark.parametrize(
    ("target", "threshold", "met"),
    [
        ({"min_metric": 1.0}, 0.75, True),  # must fix both small errors (0.6 and 0.4): route below 0.75
        ({"min_metric": 0.8}, 0.5, True),  # fixing the 0.4 one is enough and cheaper
        ({"min_metric": 0.6}, 0.0, True),  # the small model alone meets it
        ({"max_cost_per_1k": 5000}, 0.5, True),  # best accuracy within the cap
        ({"max_cost_per_1k": 7500}, 0.75, True),
        ({"max_cost_per_1k": 500}, 0.0, False),  # nothing is that cheap: the cheapest, flagged
    ],
)
def test_choose_picks_the_threshold_the_target_implies(target, threshold, met):
    point, ok = choose(curve(CONF, SMALL_OK, FALLBACK_OK, 1.0, 10.0), **target)
    assert point.threshold == pytest.approx(threshold)
    assert ok is met


def test_unreachable_accuracy_gives_the_most_accurate_point_flagged():
    point, ok = choose(curve(CONF, SMALL_OK, np.zeros(5), 1.0, 10.0), min_metric=0.9)
    assert not ok and point.accuracy == pytest.approx(0.6) and point.threshold == 0


def test_per_record_costs_are_used_as_given():
    pts = curve(np.array([0.2, 0.8]), [0, 1], [1, 1], np.array([1.0, 3.0]), np.array([10.0, 30.0]))
    assert pts[1].cost_per_1k == pytest.approx(1000 * (1 + 3 + 10) / 2)


# ------------------------------------------------------------------ temperature scaling
def test_temperature_scaling_cools_an_overconfident_model_and_lowers_ece():
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    y = rng.integers(0, k, n)
    true_logits = rng.normal(0, 1, (n, k))
    true_logits[np.arange(n), y] += 1.0
    # labels drawn from softmax(true_logits); the model reports logits 3x too sharp
    p = softmax(true_logits)
    y = np.array([rng.choice(k, p=row) for row in p])
    scores = 3.0 * true_logits
    t = fit_temperature(scores, y)
    assert 2.3 < t < 3.8
    before = ece(softmax(scores).argmax(1) == y, softmax(scores).max(1))
    after = ece(softmax(scores, t).argmax(1) == y, softmax(scores, t).max(1))
    assert after < before / 2


# ------------------------------------------------------------------ costs and budget
def test_costs_from_busy_time_and_tokens():
    assert local_cost(3600, 2.0, 2) == pytest.approx(4.0)
    assert local_cost(1.8, 2.0) == pytest.approx(0.001)
    assert token_cost(1500, 500, 0.5, 2.0) == pytest.approx(0.75 + 1.0)


def test_budget_trips_at_the_configured_spend_and_resets_next_utc_day():
    clock = Clock(86400 * 100 + 10)
    b = Budget(per_day=1.0, action="strict", strict_threshold=0.2, clock=clock)
    assert b.fallback_threshold(0.7) == 0.7
    b.add(0.6)
    assert not b.exceeded and b.fallback_threshold(0.7) == 0.7
    b.add(0.4)
    assert b.exceeded
    assert b.fallback_threshold(0.7) == 0.2  # a higher bar: fewer requests fall back
    assert b.fallback_threshold(0.1) == 0.1  # never looser than the normal threshold
    clock.t += 86400
    assert not b.exceeded and b.today() == 0


def test_budget_small_only_stops_falling_back_and_no_budget_never_trips():
    b = Budget(per_day=0.5, action="small_only")
    b.add(0.5)
    assert b.fallback_threshold(0.9) is None
    free = Budget(per_day=None)
    free.add(1e9)
    assert not free.exceeded and free.fallback_threshold(0.9) == 0.9
