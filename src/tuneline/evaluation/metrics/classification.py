"""Classification metrics: the validated input, the headline scalars, specificity and calibration."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from tuneline.config.metric_names import CLASSIFICATION

HEADLINE = CLASSIFICATION
"""Scalar classification metrics, in report order. ``recall`` is sensitivity."""

ROW_SUM_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClassificationInput:
    """Validated classification inputs, shared by point metrics and the bootstrap."""

    y: np.ndarray  # labels as given
    y_idx: np.ndarray  # (n,) column index of each label in P
    P: np.ndarray  # (n, K) float64
    classes: tuple
    positive_idx: int | None  # binary only
    threshold: float | None  # binary only

    @property
    def n(self) -> int:
        return len(self.y_idx)

    @property
    def binary(self) -> bool:
        return self.positive_idx is not None

    @property
    def p_pos(self) -> np.ndarray:
        return self.P[:, self.positive_idx]

    @property
    def y_pos(self) -> np.ndarray:
        """1 for the positive class, 0 otherwise (binary)."""
        return (self.y_idx == self.positive_idx).astype(np.int64)

    @property
    def pred_idx(self) -> np.ndarray:
        """Predicted column index per row: threshold on the positive class, or argmax."""
        k = self.positive_idx
        if k is not None:  # binary
            return np.where(self.p_pos >= self.threshold, k, 1 - k)
        return np.argmax(self.P, axis=1)

    def with_probabilities(self, P: Any, threshold: float | None = None) -> ClassificationInput:
        """Same labels and classes, another model's probabilities (for paired comparisons)."""
        return prepare(self.y, P, self.classes, positive=self.positive_class, threshold=threshold)

    @property
    def positive_class(self):
        return None if self.positive_idx is None else self.classes[self.positive_idx]


def prepare(
    y: Any, P: Any, classes: Sequence, *, positive: Any = None, threshold: float | None = 0.5
) -> ClassificationInput:
    """Validate labels and probabilities; map labels to columns of ``P``.

    Raises ``ValueError`` naming the problem (unknown labels, shape mismatch, rows not summing to 1).
    """
    y = np.asarray(y)
    P = np.asarray(P, dtype=np.float64)
    classes = tuple(_py(c) for c in classes)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be at least 2 distinct labels, got {list(classes)}")
    if P.ndim != 2 or P.shape != (len(y), len(classes)):
        raise ValueError(f"P must have shape (n, K) = ({len(y)}, {len(classes)}), got {P.shape}")
    if not np.all(np.isfinite(P)) or P.min(initial=0.0) < 0 or P.max(initial=0.0) > 1:
        raise ValueError("P must hold finite probabilities in [0, 1]")
    row_sums = P.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE)
    if len(bad):
        raise ValueError(f"rows of P must sum to 1; row {bad[0]} sums to {row_sums[bad[0]]!r}")
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({_py(v) for v in y.tolist()} - set(lookup), key=str)
    if unknown:
        raise ValueError(f"labels not in classes {list(classes)}: {unknown[:10]}")
    y_idx = np.fromiter((lookup[_py(v)] for v in y.tolist()), dtype=np.int64, count=len(y))

    positive_idx = None
    if len(classes) == 2:
        pos = classes[1] if positive is None else _py(positive)
        if pos not in lookup:
            raise ValueError(f"positive class {pos!r} is not one of {list(classes)}")
        positive_idx = lookup[pos]
        threshold = 0.5 if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    else:
        if positive is not None:
            raise ValueError(
                f"positive={positive!r} applies to binary tasks only; this task has {len(classes)} classes"
            )
        threshold = None
    return ClassificationInput(y, y_idx, P, classes, positive_idx, threshold)


# ---------------------------------------------------------------------------------------------
# Classification metrics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationMetrics:
    """Headline metrics of one model on one set of rows (see the module docstring for formulas)."""

    task: str  # "binary" | "multiclass"
    n: int
    n_positive: int | None  # binary only
    classes: tuple
    positive: Any
    threshold: float | None
    accuracy: float
    balanced_accuracy: float
    precision: float
    recall: float  # sensitivity
    specificity: float
    f1: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    confusion_matrix: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted, order = classes
    class_counts: dict

    def headline(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in HEADLINE}


def classification_metrics(
    y: Any,
    P: Any,
    classes: Sequence,
    *,
    positive: Any = None,
    threshold: float = 0.5,
    n_bins: int = 10,
) -> ClassificationMetrics:
    """All headline metrics from labels and probabilities (binary: threshold on ``P[:, positive]``)."""
    return metrics_from_input(prepare(y, P, classes, positive=positive, threshold=threshold), n_bins=n_bins)


def metrics_from_input(inp: ClassificationInput, *, n_bins: int = 10) -> ClassificationMetrics:
    """:func:`classification_metrics` on already validated inputs."""
    classes = inp.classes
    y_labels = _labels_array(classes)[inp.y_idx]
    pred_labels = _labels_array(classes)[inp.pred_idx]
    present = np.bincount(inp.y_idx, minlength=len(classes))
    # Probability metrics: scikit-learn assumes columns in sorted label order.
    order = _sorted_order(classes)
    sorted_labels = [classes[i] for i in order]
    P_sorted = inp.P[:, order]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        if inp.binary:
            y_bin, pred_bin, p_pos = inp.y_pos, (inp.pred_idx == inp.positive_idx).astype(int), inp.p_pos
            n_positive = int(y_bin.sum())
            precision = precision_score(y_bin, pred_bin, labels=[0, 1], pos_label=1, zero_division=0)
            recall = recall_score(y_bin, pred_bin, labels=[0, 1], pos_label=1, zero_division=0)
            f1 = f1_score(y_bin, pred_bin, labels=[0, 1], pos_label=1, zero_division=0)
            specificity = recall_score(y_bin, pred_bin, labels=[0, 1], pos_label=0, zero_division=0)
            one_class = n_positive in (0, inp.n)
            roc_auc = math.nan if one_class else roc_auc_score(y_bin, p_pos)
            pr_auc = math.nan if n_positive == 0 else average_precision_score(y_bin, p_pos)
            brier = brier_score_loss(y_bin, p_pos, pos_label=1)
            ece = expected_calibration_error(y_bin, p_pos, n_bins=n_bins)
        else:
            n_positive = None
            labels = list(classes)
            precision = precision_score(
                y_labels, pred_labels, labels=labels, average="macro", zero_division=0
            )
            recall = recall_score(y_labels, pred_labels, labels=labels, average="macro", zero_division=0)
            f1 = f1_score(y_labels, pred_labels, labels=labels, average="macro", zero_division=0)
            specificity = macro_specificity(confusion_matrix(y_labels, pred_labels, labels=labels))
            any_absent = bool((present == 0).any())
            roc_auc = (
                math.nan
                if any_absent
                else roc_auc_score(
                    y_labels, P_sorted, multi_class="ovr", average="macro", labels=sorted_labels
                )
            )
            pr_auc = (
                math.nan
                if any_absent
                else average_precision_score(
                    label_binarize(y_labels, classes=sorted_labels), P_sorted, average="macro"
                )
            )
            brier = brier_score_loss(y_labels, P_sorted, labels=sorted_labels)
            correct = (inp.pred_idx == inp.y_idx).astype(np.int64)
            ece = expected_calibration_error(correct, inp.P.max(axis=1), n_bins=n_bins)
        accuracy = accuracy_score(y_labels, pred_labels)
        balanced = balanced_accuracy_score(y_labels, pred_labels)
        loss = log_loss(y_labels, P_sorted, labels=sorted_labels)
        cm = confusion_matrix(y_labels, pred_labels, labels=list(classes))

    return ClassificationMetrics(
        task="binary" if inp.binary else "multiclass",
        n=inp.n,
        n_positive=n_positive,
        classes=classes,
        positive=inp.positive_class,
        threshold=inp.threshold,
        accuracy=float(accuracy),
        balanced_accuracy=float(balanced),
        precision=float(precision),
        recall=float(recall),
        specificity=float(specificity),
        f1=float(f1),
        roc_auc=float(roc_auc),
        pr_auc=float(pr_auc),
        log_loss=float(loss),
        brier=float(brier),
        ece=float(ece),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in cm),
        class_counts={str(c): int(k) for c, k in zip(classes, present, strict=True)},
    )


def macro_specificity(cm: np.ndarray) -> float:
    """Mean over classes of TN_k / (TN_k + FP_k) from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    return float(np.mean(_safe_div(tn, tn + fp)))


def ece_bin_index(confidence: Any, n_bins: int = 10) -> np.ndarray:
    """Bin of each confidence: equal-width bins on [0, 1], as ``calibration_curve(strategy="uniform")``."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(confidence, dtype=np.float64), side="right")


def expected_calibration_error(outcome: Any, confidence: Any, *, n_bins: int = 10) -> float:
    """``sum_b (n_b / n) * |mean(outcome in b) - mean(confidence in b)|`` over equal-width bins."""
    outcome = np.asarray(outcome, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(outcome) == 0:
        return math.nan
    bins = ece_bin_index(confidence, n_bins)
    gap = np.bincount(bins, weights=outcome - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / len(outcome))


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _py(value: Any) -> Any:
    """numpy scalars to Python scalars (so labels hash and print the same)."""
    return value.item() if isinstance(value, np.generic) else value


def _labels_array(classes: tuple) -> np.ndarray:
    return np.asarray(list(classes))


def _sorted_order(classes: tuple) -> list[int]:
    try:
        return sorted(range(len(classes)), key=lambda i: classes[i])
    except TypeError as exc:
        raise ValueError(f"classes must be mutually comparable (all str or all int): {classes}") from exc


def binary_labels(y: Any) -> np.ndarray:
    """0/1 int64 labels from 0/1 or bool values (ValueError otherwise)."""
    y = np.asarray(y)
    if y.dtype == bool:
        return y.astype(np.int64)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"binary labels must be 0/1 or bool, got values {sorted(values, key=str)[:10]}")
    return y.astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _num(x: float) -> str:
    return f"{x:g}"
