"""Point metrics for the evaluation stage: classification, thresholds, slices, generation, latency.

Pure functions over numpy arrays; no model code. Classification metrics are computed WITH
scikit-learn wherever it has the function, so a report equals an independent scikit-learn
recomputation from the saved predictions. Uncertainty (bootstrap, paired tests, DeLong) lives
in :mod:`tuneline.evaluation.stats`.

Conventions (the same everywhere in this module and in ``stats``):

* ``P`` is an ``(n, K)`` array of class probabilities whose columns follow ``classes`` (the caller's
  order; it does not have to be sorted). Rows must sum to 1.
* Binary (``K == 2``): the positive class is ``positive`` (default ``classes[1]``); a row is
  predicted positive when ``P[:, positive] >= threshold``.
* Multiclass (``K >= 3``): the prediction is ``classes[argmax(P)]`` (first column on ties);
  precision, recall, F1 and specificity are macro averages over all ``classes``; ROC-AUC and
  PR-AUC are one-vs-rest macro averages.
* Zero divisions in precision, recall, F1 and specificity give 0 (scikit-learn's
  ``zero_division=0``). Rank metrics that are undefined give NaN, not an exception: ROC-AUC when
  ``y`` holds one class only (multiclass: when any class is absent), PR-AUC when there is no
  positive (multiclass: when any class is absent; scikit-learn returns 0.0 with a warning there).
  :func:`to_json_dict` turns NaN into ``None`` for ``report.json``.
* Specificity (binary) = TN / (TN + FP), i.e. recall of the negative class
  (``recall_score(y, pred, pos_label=negative, zero_division=0)``). Multiclass: the mean over
  classes k of TN_k / (TN_k + FP_k), each class one-vs-rest.
* Brier score: binary ``mean((p_pos - y_pos)^2)`` (``brier_score_loss``); multiclass
  ``mean(sum_k (P_k - onehot_k)^2)`` (``brier_score_loss(..., labels=)``, range [0, 2]).
* Expected calibration error: 10 (``n_bins``) equal-width bins over [0, 1], edges
  ``linspace(0, 1, n_bins + 1)``, bin b = ``[e_b, e_{b+1})`` with the last bin closed (the binning
  of ``sklearn.calibration.calibration_curve(strategy="uniform")``). The score is
  ``sum_b (n_b / n) * |mean(outcome in b) - mean(confidence in b)|``. Binary: confidence is the
  positive-class probability and the outcome is "is positive". Multiclass: confidence is the
  top-label probability ``max(P)`` and the outcome is "argmax is correct".
"""

from __future__ import annotations

from tuneline.evaluation.metrics.classification import (
    HEADLINE,
    ROW_SUM_TOLERANCE,
    ClassificationInput,
    ClassificationMetrics,
    binary_labels,
    classification_metrics,
    ece_bin_index,
    expected_calibration_error,
    macro_specificity,
    metrics_from_input,
    prepare,
)
from tuneline.evaluation.metrics.generation import (
    GENERATION_METRICS,
    GenerationMetrics,
    exact_match,
    generation_metrics,
    generation_scores,
    lcs_length,
    normalise_text,
    perplexity,
    rouge_l,
    token_f1,
)
from tuneline.evaluation.metrics.ops import (
    LatencySummary,
    cost_per_1k,
    latency_summary,
    nan_to_none,
    to_json_dict,
)
from tuneline.evaluation.metrics.slices import (
    MISSING,
    SliceMetrics,
    age_bands,
    metrics_by_slice,
    quantile_bands,
    slice_labels,
    subset,
)
from tuneline.evaluation.metrics.thresholds import (
    THRESHOLD_METHODS,
    ThresholdChoice,
    choose_threshold,
    operating_point,
)

__all__ = [
    "ClassificationInput",
    "ClassificationMetrics",
    "GENERATION_METRICS",
    "GenerationMetrics",
    "HEADLINE",
    "LatencySummary",
    "MISSING",
    "ROW_SUM_TOLERANCE",
    "SliceMetrics",
    "THRESHOLD_METHODS",
    "ThresholdChoice",
    "age_bands",
    "binary_labels",
    "choose_threshold",
    "classification_metrics",
    "cost_per_1k",
    "ece_bin_index",
    "exact_match",
    "expected_calibration_error",
    "generation_metrics",
    "generation_scores",
    "latency_summary",
    "lcs_length",
    "macro_specificity",
    "metrics_by_slice",
    "metrics_from_input",
    "nan_to_none",
    "normalise_text",
    "operating_point",
    "perplexity",
    "prepare",
    "quantile_bands",
    "rouge_l",
    "slice_labels",
    "subset",
    "to_json_dict",
    "token_f1",
]
