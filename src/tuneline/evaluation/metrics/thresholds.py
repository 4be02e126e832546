"""Binary decision thresholds: chosen on one split (Youden or a sensitivity target), applied to another."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    roc_curve,
)

from tuneline.evaluation.metrics.classification import binary_labels

# ---------------------------------------------------------------------------------------------
# Threshold selection
# ---------------------------------------------------------------------------------------------

THRESHOLD_METHODS = ("youden", "sensitivity")


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold chosen on validation data, with its validation operating point."""

    threshold: float
    method: str
    target: float | None  # the sensitivity target, for method="sensitivity"
    sensitivity: float  # on the data it was chosen on, with the rule p >= threshold
    specificity: float
    youden_j: float


def choose_threshold(y_true: Any, p_pos: Any, method: str = "youden", target: float = 0.9) -> ThresholdChoice:
    """Choose a threshold on validation data (rows predicted positive when ``p_pos >= threshold``).

    ``method="youden"``: the roc_curve threshold maximising J = sensitivity + specificity - 1 (the
    highest such threshold on ties). ``method="sensitivity"``: the highest roc_curve threshold whose
    sensitivity reaches ``target``. roc_curve's first threshold is ``inf`` (nothing positive); it is
    clipped to 1.0, and the reported sensitivity/specificity are recomputed at the returned value.
    ``y_true`` is binary (1/True = positive). Raises ``ValueError`` if it holds one class only.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {list(THRESHOLD_METHODS)}, got {method!r}")
    y_true = binary_labels(y_true)
    p_pos = np.asarray(p_pos, dtype=np.float64)
    if len(y_true) != len(p_pos):
        raise ValueError(f"y_true has {len(y_true)} rows, p_pos {len(p_pos)}")
    if len(np.unique(y_true)) < 2:
        raise ValueError("cannot choose a threshold: the validation labels hold one class only")
    fpr, tpr, thresholds = roc_curve(y_true, p_pos, drop_intermediate=False)
    if method == "youden":
        index = int(np.argmax(tpr - fpr))
        chosen_target = None
    else:
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
        index = int(np.flatnonzero(tpr >= target - 1e-12)[0])
        chosen_target = float(target)
    threshold = float(min(thresholds[index], 1.0))
    sensitivity, specificity = operating_point(y_true, p_pos, threshold)
    return ThresholdChoice(
        threshold=threshold,
        method=method,
        target=chosen_target,
        sensitivity=sensitivity,
        specificity=specificity,
        youden_j=sensitivity + specificity - 1.0,
    )


def operating_point(y_true: Any, p_pos: Any, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of the rule ``p_pos >= threshold``; NaN where a class is absent."""
    y_true = binary_labels(y_true)
    pred = np.asarray(p_pos, dtype=np.float64) >= threshold
    pos, neg = y_true == 1, y_true == 0
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    spec = float((~pred[neg]).mean()) if neg.any() else math.nan
    return sens, spec
