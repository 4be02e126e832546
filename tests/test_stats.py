"""The shared bootstrap (tuneline.stats): the evaluation stage and the A/B report use the same one."""

from __future__ import annotations

import numpy as np

from tuneline import stats
from tuneline.evaluation import stats as evaluation_stats
from tuneline.serving import ab


def test_one_bootstrap_for_evaluation_and_serving():
    assert evaluation_stats.bootstrap_ci is stats.bootstrap_ci
    assert evaluation_stats.Resampler is stats.Resampler
    assert ab.bootstrap_ci is stats.bootstrap_ci and ab.two_sample_bootstrap is stats.two_sample_bootstrap


def test_two_sample_bootstrap_sees_a_difference_and_no_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 200), rng.normal(1.0, 1.0, 150)
    ci = stats.two_sample_bootstrap(np.mean, a, b, n_resamples=300, seed=1)
    assert ci.estimate == np.mean(b) - np.mean(a)
    assert 0 < ci.low < ci.estimate < ci.high  # b is higher, and the interval excludes 0
    same = stats.two_sample_bootstrap(np.mean, a, rng.normal(0.0, 1.0, 150), n_resamples=300, seed=1)
    assert same.low < 0 < same.high
    again = stats.two_sample_bootstrap(np.mean, a, b, n_resamples=300, seed=1)
    assert (again.low, again.high) == (ci.low, ci.high)  # deterministic for a seed
