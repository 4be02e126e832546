"""Uncertainty for the evaluation stage: bootstrap CIs, paired comparisons, DeLong's test.

Bootstrap
    The resamples, percentile intervals, the generic and the paired bootstrap (with its +1-corrected
    p-value) are :mod:`tuneline.stats`, shared with the A/B report and re-exported here; see its
    docstring for the definitions. The same resamples for the same ``(n_rows, groups, n_resamples,
    seed)`` everywhere, so the vectorised headline metrics (:func:`bootstrap_metrics`) and a
    generic ``metric_fn`` (:func:`bootstrap_ci`) agree.

    :func:`bootstrap_metrics` computes all headline metrics for all resamples at once: a resample
    is a vector of row multiplicities ``w``, and every metric is a function of weighted sums
    (one matrix product for the counts) plus, for ROC-AUC and average precision, weighted sums per
    tied-score group in one global sort order. ROC-AUC is the Mann-Whitney form
    ``sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg)``; average
    precision is ``sum_t (R_t - R_{t-1}) P_t`` over distinct thresholds, as scikit-learn defines it.
    Both equal scikit-learn on the materialised resample (tests check 1e-12).

DeLong
    :func:`delong_test` compares two correlated ROC-AUCs on the same rows with DeLong's variance,
    computed by the O(n log n) midrank algorithm of Sun & Xu (2014), IEEE Signal Processing Letters
    21(11). ``delta = auc_b - auc_a``; z = delta / se; p = 2 * (1 - Phi(|z|)); CI = delta +- z_{1-alpha/2} se.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from tuneline.evaluation.metrics import (
    HEADLINE,
    ClassificationInput,
    binary_labels,
    ece_bin_index,
    metrics_from_input,
    prepare,
)
from tuneline.stats import (
    CHUNK_ELEMENTS as CHUNK_ELEMENTS,  # re-exported: the bootstrap's public names stay importable here
)
from tuneline.stats import (
    BootstrapCI,
    PairedComparison,
    Resampler,
    _ci,
    _paired,
    _try,
)
from tuneline.stats import bootstrap_ci as bootstrap_ci
from tuneline.stats import paired_bootstrap as paired_bootstrap
from tuneline.stats import two_sample_bootstrap as two_sample_bootstrap


@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    delta: float  # auc_b - auc_a
    se: float  # standard error of delta
    z: float
    p_value: float
    low: float  # normal CI of delta
    high: float
    alpha: float
    se_a: float
    se_b: float
    n_positive: int
    n_negative: int


# ---------------------------------------------------------------------------------------------
# Vectorised bootstrap of all headline classification metrics
# ---------------------------------------------------------------------------------------------


def bootstrap_metrics(
    y: Any,
    P: Any,
    classes: Sequence,
    *,
    positive: Any = None,
    threshold: float = 0.5,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 10,
) -> dict[str, BootstrapCI]:
    """CIs for every headline metric (:data:`metrics.HEADLINE`) from one set of resamples."""
    inp = prepare(y, P, classes, positive=positive, threshold=threshold)
    point = metrics_from_input(inp, n_bins=n_bins).headline()
    resampler = Resampler.create(inp.n, groups, n_resamples, seed)
    (values,) = resample_metric_values([inp], resampler, n_bins=n_bins)
    return {name: _ci(point[name], values[name], alpha, resampler) for name in HEADLINE}


def paired_bootstrap_metrics(
    y: Any,
    P_a: Any,
    P_b: Any,
    classes: Sequence,
    *,
    positive: Any = None,
    threshold_a: float = 0.5,
    threshold_b: float | None = None,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 10,
) -> dict[str, PairedComparison]:
    """B - A for every headline metric on the same resamples (``threshold_b`` defaults to A's)."""
    threshold_b = threshold_a if threshold_b is None else threshold_b
    inp_a = prepare(y, P_a, classes, positive=positive, threshold=threshold_a)
    inp_b = inp_a.with_probabilities(P_b, threshold=threshold_b)
    point_a = metrics_from_input(inp_a, n_bins=n_bins).headline()
    point_b = metrics_from_input(inp_b, n_bins=n_bins).headline()
    resampler = Resampler.create(inp_a.n, groups, n_resamples, seed)
    values_a, values_b = resample_metric_values([inp_a, inp_b], resampler, n_bins=n_bins)
    return {
        name: _paired(point_a[name], point_b[name], values_a[name], values_b[name], alpha, resampler)
        for name in HEADLINE
    }


def resample_metric_values(
    inputs: Sequence[ClassificationInput], resampler: Resampler, *, n_bins: int = 10
) -> list[dict[str, np.ndarray]]:
    """Each headline metric on each resample, for each input: ``[{name: (n_resamples,) array}]``."""
    out: list[dict[str, list]] = [{name: [] for name in HEADLINE} for _ in inputs]
    for W in resampler.row_weights():
        for inp, acc in zip(inputs, out, strict=True):
            for name, v in weighted_metrics(inp, W, n_bins=n_bins).items():
                acc[name].append(v)
    return [{name: np.concatenate(v) for name, v in acc.items()} for acc in out]


def weighted_metrics(inp: ClassificationInput, W: np.ndarray, *, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Headline metrics for each row of multiplicities ``W`` (c, n): row b equals the metrics of the
    data with row i repeated ``W[b, i]`` times (NaN where undefined)."""
    n, k = inp.n, len(inp.classes)
    W = np.asarray(W, dtype=np.float64).reshape(-1, n)
    eps = np.finfo(np.float64).eps
    rows = np.arange(n)
    loss = -np.log(np.clip(inp.P[rows, inp.y_idx], eps, 1 - eps))
    pred = inp.pred_idx
    if inp.binary:
        t = inp.y_pos.astype(np.float64)
        p = inp.p_pos
        yhat = (pred == inp.positive_idx).astype(np.float64)
        brier = (p - t) ** 2
        outcome, confidence = t, p
        Y, Yhat = t[:, None], yhat[:, None]
    else:
        Y = np.eye(k)[inp.y_idx]
        Yhat = np.eye(k)[pred]
        brier = ((inp.P - Y) ** 2).sum(axis=1)
        outcome, confidence = (pred == inp.y_idx).astype(np.float64), inp.P.max(axis=1)
    ece_gap = np.eye(n_bins)[ece_bin_index(confidence, n_bins)] * (outcome - confidence)[:, None]
    m = Y.shape[1]
    V = np.column_stack([np.ones(n), loss, brier, Y, Yhat, Y * Yhat, ece_gap])
    S = W @ V
    total, loss_sum, brier_sum = S[:, 0], S[:, 1], S[:, 2]
    support, predicted, tp = S[:, 3 : 3 + m], S[:, 3 + m : 3 + 2 * m], S[:, 3 + 2 * m : 3 + 3 * m]
    ece = np.abs(S[:, 3 + 3 * m :]).sum(axis=1) / total
    fp, fn = predicted - tp, support - tp
    tn = total[:, None] - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        if inp.binary:
            tp, fp, fn, tn, npos = tp[:, 0], fp[:, 0], fn[:, 0], tn[:, 0], support[:, 0]
            nneg = total - npos
            recall_pos, recall_neg = _div0(tp, npos), _div0(tn, nneg)
            per_class_recall = np.column_stack(
                [np.where(nneg > 0, recall_neg, np.nan), np.where(npos > 0, recall_pos, np.nan)]
            )
            result = {
                "accuracy": (tp + tn) / total,
                "precision": _div0(tp, tp + fp),
                "recall": recall_pos,
                "specificity": recall_neg,
                "f1": _div0(2 * tp, 2 * tp + fp + fn),
            }
            auc, ap = _rank_metrics(t, p, W)
            result["roc_auc"], result["pr_auc"] = auc, ap
        else:
            per_class_recall = np.where(support > 0, _div0(tp, support), np.nan)
            result = {
                "accuracy": tp.sum(axis=1) / total,
                "precision": _div0(tp, tp + fp).mean(axis=1),
                "recall": _div0(tp, support).mean(axis=1),
                "specificity": _div0(tn, tn + fp).mean(axis=1),
                "f1": _div0(2 * tp, 2 * tp + fp + fn).mean(axis=1),
            }
            ranks = [_rank_metrics(Y[:, j], inp.P[:, j], W) for j in range(k)]
            result["roc_auc"] = np.mean([r[0] for r in ranks], axis=0)
            result["pr_auc"] = np.mean([r[1] for r in ranks], axis=0)
        # scikit-learn's balanced accuracy: the mean recall over classes present in y.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result["balanced_accuracy"] = np.nanmean(per_class_recall, axis=1)
    result["log_loss"] = loss_sum / total
    result["brier"] = brier_sum / total
    result["ece"] = ece
    return {name: result[name] for name in HEADLINE}


def weighted_roc_auc(y_true: Any, score: Any, W: Any) -> np.ndarray:
    """ROC-AUC of each weight row of ``W`` (c, n) by the Mann-Whitney form (ties count 1/2)."""
    return _rank_metrics(binary_labels(y_true).astype(np.float64), np.asarray(score, np.float64), W)[0]


def weighted_average_precision(y_true: Any, score: Any, W: Any) -> np.ndarray:
    """Average precision (scikit-learn's definition) of each weight row of ``W`` (c, n)."""
    return _rank_metrics(binary_labels(y_true).astype(np.float64), np.asarray(score, np.float64), W)[1]


def _rank_metrics(t: np.ndarray, s: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ROC-AUC, average precision) per weight row; NaN where a class has zero weight."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    order = np.argsort(s, kind="stable")
    s_sorted, t_sorted = s[order], t[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    Ws = W[:, order]
    pos = np.add.reduceat(Ws * t_sorted, starts, axis=1)  # positive weight per distinct score, ascending
    neg = np.add.reduceat(Ws, starts, axis=1) - pos
    pos_total, neg_total = pos.sum(axis=1), neg.sum(axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (pos_total * neg_total)
        auc = np.where((pos_total > 0) & (neg_total > 0), auc, np.nan)
        # Average precision: thresholds from the highest score down.
        pos_desc, neg_desc = pos[:, ::-1], neg[:, ::-1]
        tp, fp = np.cumsum(pos_desc, axis=1), np.cumsum(neg_desc, axis=1)
        precision = _div0(tp, tp + fp)
        ap = np.where(pos_total > 0, (pos_desc * precision).sum(axis=1) / pos_total, np.nan)
    return auc, ap


# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------


def delong_test(y_true: Any, score_a: Any, score_b: Any, *, alpha: float = 0.05) -> DeLongResult:
    """DeLong's test for two correlated ROC-AUCs on the same rows (fast midrank algorithm).

    ``y_true`` is binary (1/True = positive). With one class only every number is NaN.
    """
    y = binary_labels(y_true)
    scores = np.vstack([np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)])
    if scores.shape[1] != len(y):
        raise ValueError(f"scores must have {len(y)} rows, got {scores.shape[1]}")
    m, n = int(y.sum()), int(len(y) - y.sum())
    if m == 0 or n == 0:
        nan = math.nan
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, alpha, nan, nan, m, n)
    aucs, cov = delong_covariance(y, scores)
    delta = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = delta / se
        p_value = float(2 * norm.sf(abs(z)))
    else:  # identical rankings: no variance in the difference
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        p_value = 1.0 if delta == 0 else 0.0
    half = norm.ppf(1 - alpha / 2) * se
    return DeLongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        delta=delta,
        se=se,
        z=float(z),
        p_value=p_value,
        low=delta - half,
        high=delta + half,
        alpha=alpha,
        se_a=math.sqrt(max(cov[0, 0], 0.0)),
        se_b=math.sqrt(max(cov[1, 1], 0.0)),
        n_positive=m,
        n_negative=n,
    )


def delong_covariance(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for k score rows (k, n), Sun & Xu's algorithm.

    Midranks of the positives among all rows (tz), among positives (tx) and of negatives among
    negatives (ty) give the placement values: V10 = (tz_pos - tx) / n (share of negatives below each
    positive) and V01 = 1 - (tz_neg - ty) / m (share of positives above each negative);
    AUC = mean(V10); cov = cov(V10) / m + cov(V01) / n.
    """
    y = binary_labels(y_true).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, y], scores[:, ~y]
    m, n = positives.shape[1], negatives.shape[1]
    ordered = np.hstack([positives, negatives])
    tz = rankdata(ordered, axis=1)
    tx = rankdata(positives, axis=1)
    ty = rankdata(negatives, axis=1)
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, s10 / m + s01 / n


def _div0(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


# ---------------------------------------------------------------------------------------------
# Label permutation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermutationResult:
    observed: float
    p_value: float  # (1 + #{null at least as good as observed}) / (1 + valid permutations)
    null_mean: float
    null_q95: float  # the null's 95th percentile in the metric's good direction
    n_permutations: int
    n_skipped: int  # permutations where the metric was undefined
    unit: str  # "rows" | "groups of the same size"


def permutation_indices(n_rows: int, groups: Any, rng: np.random.Generator) -> np.ndarray:
    """Row order for one permutation of the labels: ``y[order]`` is the permuted label vector.

    Without groups, a plain permutation of rows. With groups, whole groups trade their labels with
    groups of the same size (each group's rows in a fixed order), so labels correlated within a patient
    stay correlated; a group with no other of its size keeps its own labels (conservative).
    """
    return _permuted(n_rows, _same_size_blocks(n_rows, groups), rng)


def _same_size_blocks(n_rows: int, groups: Any) -> list[list[list[int]]] | None:
    """Groups' row lists, bucketed by group size (None without groups): computed once per test."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"groups must have one value per row ({n_rows}), got shape {groups.shape}")
    _, codes = np.unique(groups.astype(str) if groups.dtype == object else groups, return_inverse=True)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(codes.reshape(-1)):
        members.setdefault(int(c), []).append(i)
    by_size: dict[int, list[list[int]]] = {}
    for rows in members.values():
        by_size.setdefault(len(rows), []).append(rows)
    return [blocks for blocks in by_size.values() if len(blocks) > 1]


def _permuted(n_rows: int, blocks: list[list[list[int]]] | None, rng: np.random.Generator) -> np.ndarray:
    if blocks is None:
        return rng.permutation(n_rows)
    order = np.arange(n_rows)
    for same_size in blocks:
        perm = rng.permutation(len(same_size))
        for target, source in zip(same_size, perm, strict=True):
            order[target] = same_size[source]
    return order


def permutation_test(
    metric_fn: Callable[[np.ndarray], float],
    y: Any,
    *,
    groups: Any = None,
    n_permutations: int = 200,
    seed: int = 0,
    higher_is_better: bool = True,
) -> PermutationResult:
    """Is ``metric_fn(y)`` (the model's predictions fixed inside it) better than the same metric on
    labels that have nothing to do with the predictions? ``metric_fn`` takes a label vector."""
    y = np.asarray(y, dtype=object)
    observed = float(metric_fn(y))
    rng = np.random.default_rng(seed)
    blocks = _same_size_blocks(len(y), groups)
    null = np.array([_try(metric_fn, [y[_permuted(len(y), blocks, rng)]]) for _ in range(n_permutations)])
    valid = null[np.isfinite(null)]
    s = 1.0 if higher_is_better else -1.0
    if len(valid) == 0 or not math.isfinite(observed):
        p, mean, q95 = math.nan, math.nan, math.nan
    else:
        p = (1 + int((s * valid >= s * observed - 1e-12).sum())) / (1 + len(valid))
        mean = float(valid.mean())
        q95 = float(np.percentile(valid, 95 if higher_is_better else 5))
    return PermutationResult(
        observed=observed,
        p_value=float(p),
        null_mean=mean,
        null_q95=q95,
        n_permutations=n_permutations,
        n_skipped=int(len(null) - len(valid)),
        unit="rows" if groups is None else "groups of the same size",
    )
