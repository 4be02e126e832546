"""Bootstrap CIs (row and cluster), paired comparisons and DeLong's test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from tuneline.evaluation.metrics import HEADLINE, classification_metrics, prepare, token_f1
from tuneline.evaluation.stats import (
    Resampler,
    bootstrap_ci,
    bootstrap_metrics,
    delong_covariance,
    delong_test,
    paired_bootstrap,
    paired_bootstrap_metrics,
    resample_metric_values,
    weighted_average_precision,
    weighted_roc_auc,
)


def _binary(n=300, seed=0, signal=0.3, decimals=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1)
    if decimals is not None:
        p = np.round(p, decimals)  # ties
    return y, p, np.column_stack([1 - p, p])


def _multiclass(n=300, seed=1):
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    logits = rng.normal(size=(n, 3)) + np.eye(3)[np.searchsorted(["a", "b", "c"], y)]
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_rank_metrics_with_weights_equal_sklearn_on_repeated_rows():
    y, p, _ = _binary(200, seed=3, decimals=2)
    resampler = Resampler.create(len(y), n_resamples=20, seed=7)
    W = next(resampler.row_weights())
    aucs, aps = weighted_roc_auc(y, p, W), weighted_average_precision(y, p, W)
    for b, idx in enumerate(resampler.indices()):
        assert aucs[b] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)
        assert aps[b] == pytest.approx(average_precision_score(y[idx], p[idx]), abs=1e-12)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("grouped", [False, True])
def test_vectorised_resample_metrics_equal_sklearn_per_resample(task, grouped):
    """Every headline metric on every resample equals classification_metrics (scikit-learn) there."""
    if task == "binary":
        y, _, P = _binary(60, seed=5, signal=0.2, decimals=1)  # few positives: some resamples degenerate
        y = np.where(y == 1, "pos", "neg")
        classes, kwargs = ["neg", "pos"], {"positive": "pos", "threshold": 0.4}
    else:
        y, P = _multiclass(45)
        classes, kwargs = ["c", "a", "b"], {}
        P = P[:, [2, 0, 1]]
    groups = np.arange(len(y)) // 3 if grouped else None
    inp = prepare(y, P, classes, **kwargs)
    resampler = Resampler.create(len(y), groups, n_resamples=40, seed=11)
    (values,) = resample_metric_values([inp], resampler)
    for b, idx in enumerate(resampler.indices()):
        expected = classification_metrics(y[idx], P[idx], classes, **kwargs).headline()
        for name in HEADLINE:
            assert values[name][b] == pytest.approx(expected[name], abs=1e-9, nan_ok=True), (b, name)


def test_bootstrap_metrics_match_generic_bootstrap_with_sklearn():
    y, p, P = _binary(500, seed=2)
    cis = bootstrap_metrics(y, P, [0, 1], positive=1, threshold=0.5, n_resamples=200, seed=4)
    generic = bootstrap_ci(roc_auc_score, y, p, n_resamples=200, seed=4)
    assert (cis["roc_auc"].low, cis["roc_auc"].high) == pytest.approx((generic.low, generic.high), abs=1e-12)
    assert cis["roc_auc"].estimate == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    acc = bootstrap_ci(lambda yy, pp: accuracy_score(yy, pp >= 0.5), y, p, n_resamples=200, seed=4)
    assert (cis["accuracy"].low, cis["accuracy"].high) == pytest.approx((acc.low, acc.high), abs=1e-12)
    for ci in cis.values():
        assert ci.low <= ci.estimate <= ci.high and ci.n_skipped == 0 and ci.unit == "rows"


def test_group_bootstrap_is_much_wider_than_row_bootstrap_and_reproducible():
    # 20 patients x 50 near-identical rows: the evidence is 20 patients, not 1,000 rows.
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(20), 50)
    label = np.repeat(np.arange(20) % 2, 50)
    patient_score = rng.random(20) * 0.6 + 0.3 * (np.arange(20) % 2)
    score = np.clip(patient_score[patients] + rng.normal(0, 1e-3, size=1000), 0, 1)

    row = bootstrap_ci(roc_auc_score, label, score, n_resamples=300, seed=1)
    group = bootstrap_ci(roc_auc_score, label, score, groups=patients, n_resamples=300, seed=1)
    assert (group.unit, group.n_units, row.unit, row.n_units) == ("groups", 20, "rows", 1000)
    assert group.estimate == row.estimate
    assert (group.high - group.low) > 3 * (row.high - row.low)

    again = bootstrap_ci(roc_auc_score, label, score, groups=patients, n_resamples=300, seed=1)
    assert again == group
    other = bootstrap_ci(roc_auc_score, label, score, groups=patients, n_resamples=300, seed=2)
    assert (other.low, other.high) != (group.low, group.high)

    P = np.column_stack([1 - score, score])
    fast = bootstrap_metrics(label, P, [0, 1], groups=patients, n_resamples=300, seed=1)["roc_auc"]
    assert (fast.low, fast.high, fast.n_skipped) == pytest.approx((group.low, group.high, group.n_skipped))


def test_resampled_groups_bring_all_their_rows():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    resampler = Resampler.create(6, groups, n_resamples=50, seed=0)
    for idx in resampler.indices():
        counts = np.bincount(idx, minlength=6)
        assert counts[0] == counts[1] and counts[3] == counts[4] == counts[5]
        assert counts[0] + counts[2] + counts[3] == 3  # three groups drawn


def test_undefined_resamples_are_skipped_and_counted():
    y = np.array([1] + [0] * 9)
    p = np.linspace(0.9, 0.0, 10)
    resampler = Resampler.create(10, n_resamples=200, seed=3)
    no_positive = sum(int(y[idx].sum() == 0) for idx in resampler.indices())
    assert no_positive > 0
    generic = bootstrap_ci(roc_auc_score, y, p, n_resamples=200, seed=3)
    fast = bootstrap_metrics(y, np.column_stack([1 - p, p]), [0, 1], n_resamples=200, seed=3)
    assert generic.n_skipped == fast["roc_auc"].n_skipped == fast["pr_auc"].n_skipped == no_positive
    assert fast["accuracy"].n_skipped == 0


def test_paired_bootstrap_identical_models():
    y, p, P = _binary(300, seed=8)
    res = paired_bootstrap(roc_auc_score, y, p, p.copy(), n_resamples=200, seed=0)
    assert (res.delta, res.low, res.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    for name, cmp in paired_bootstrap_metrics(y, P, P, [0, 1], n_resamples=200).items():
        assert (cmp.delta, cmp.p_value) == (0.0, 1.0), name


def test_paired_bootstrap_clearly_better_model():
    rng = np.random.default_rng(9)
    y = (rng.random(400) < 0.4).astype(int)
    weak = np.clip(0.1 * y + rng.random(400) * 0.9, 0, 1)
    strong = np.clip(0.6 * y + rng.random(400) * 0.4, 0, 1)
    res = paired_bootstrap(roc_auc_score, y, weak, strong, n_resamples=300, seed=0)
    assert res.delta == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    assert res.delta > 0 and res.low > 0 and res.p_value == pytest.approx(2 / 301)
    reverse = paired_bootstrap(roc_auc_score, y, strong, weak, n_resamples=300, seed=0)
    assert reverse.high < 0 and reverse.delta == pytest.approx(-res.delta)
    cmp = paired_bootstrap_metrics(
        y,
        np.column_stack([1 - weak, weak]),
        np.column_stack([1 - strong, strong]),
        [0, 1],
        n_resamples=300,
        seed=0,
    )
    assert cmp["roc_auc"].low == pytest.approx(res.low, abs=1e-12)
    assert cmp["roc_auc"].p_value < 0.01 and cmp["accuracy"].low > 0 and cmp["log_loss"].high < 0


def _slow_delong(y, scores):
    """DeLong's placement values straight from the definition (O(m n))."""
    scores = np.atleast_2d(scores)
    X, Y = scores[:, y == 1], scores[:, y == 0]
    m, n = X.shape[1], Y.shape[1]
    psi = (X[:, :, None] > Y[:, None, :]) + 0.5 * (X[:, :, None] == Y[:, None, :])  # (k, m, n)
    auc = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    k = len(scores)
    s10 = np.array(
        [[np.sum((v10[r] - auc[r]) * (v10[s] - auc[s])) / (m - 1) for s in range(k)] for r in range(k)]
    )
    s01 = np.array(
        [[np.sum((v01[r] - auc[r]) * (v01[s] - auc[s])) / (n - 1) for s in range(k)] for r in range(k)]
    )
    return auc, s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_fast_equals_slow_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random(n) < 0.4).astype(int)
    a = np.round(0.3 * y + rng.random(n), 1)  # many ties
    b = 0.5 * y + rng.random(n) + 0.2 * a  # correlated with a
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    slow_aucs, slow_cov = _slow_delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, slow_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, slow_cov, rtol=0, atol=1e-12)
    res = delong_test(y, a, b)
    assert res.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    se = math.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert res.delta == pytest.approx(res.auc_b - res.auc_a) and res.se == pytest.approx(se, abs=1e-12)
    assert res.z == pytest.approx(res.delta / se)
    assert res.low < res.delta < res.high
    assert res.high - res.low == pytest.approx(2 * 1.959963984540054 * se)
    assert (res.n_positive, res.n_negative) == (int(y.sum()), int(n - y.sum()))


def test_delong_identical_different_and_degenerate():
    y, p, _ = _binary(200, seed=4)
    same = delong_test(y, p, p)
    assert (same.delta, same.se, same.p_value) == (0.0, 0.0, 1.0)
    rng = np.random.default_rng(0)
    better = np.clip(0.8 * y + 0.2 * rng.random(200), 0, 1)
    res = delong_test(y, p, better)
    assert res.delta > 0 and res.p_value < 1e-3 and res.low > 0
    degenerate = delong_test(np.ones(10, int), p[:10], p[:10])
    assert math.isnan(degenerate.auc_a) and math.isnan(degenerate.p_value)


def test_bootstrap_ci_generic_on_generation_scores():
    rng = np.random.default_rng(0)
    em = (rng.random(200) < 0.6).astype(float)
    ci = bootstrap_ci(np.mean, em, n_resamples=300)
    assert ci.low < em.mean() < ci.high and ci.n_skipped == 0

    def mean_f1(preds, refs):
        return np.mean([token_f1(a, b) for a, b in zip(preds, refs, strict=True)])

    f1 = bootstrap_ci(mean_f1, ["a b"] * 5, ["a"] * 5)
    assert f1.low == f1.high == pytest.approx(2 / 3)


def test_bootstrap_metrics_speed():
    """1,000 resamples x 11 metrics on 5,000 rows: every headline metric gets its CI. How long it takes
    (seconds, not minutes: the bound was 15 s) is measured by benchmarks/bench_speed.py."""
    y, p, P = _binary(5000, seed=6)
    cis = bootstrap_metrics(y, P, [0, 1], n_resamples=1000, seed=0)
    assert set(cis) == set(HEADLINE)
