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

import dataclasses
import math
import re
import warnings
from collections import Counter
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
    roc_curve,
)
from sklearn.preprocessing import label_binarize

HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
)
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
        if self.binary:
            negative_idx = 1 - self.positive_idx
            return np.where(self.p_pos >= self.threshold, self.positive_idx, negative_idx)
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


# ---------------------------------------------------------------------------------------------
# Slices
# ---------------------------------------------------------------------------------------------

MISSING = "missing"


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics per slice value; slices with fewer than ``min_size`` rows are only counted."""

    name: str
    min_size: int
    slices: dict  # str(value) -> ClassificationMetrics
    too_small: dict  # str(value) -> n


def slice_labels(values: Any) -> np.ndarray:
    """Slice values as strings; None and NaN become ``"missing"``."""
    out = []
    for v in np.asarray(values, dtype=object).tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(MISSING)
        else:
            out.append(str(_py(v)))
    return np.asarray(out, dtype=object)


def metrics_by_slice(
    y: Any,
    P: Any,
    slice_values: Any,
    classes: Sequence,
    *,
    positive: Any = None,
    threshold: float = 0.5,
    min_size: int = 30,
    name: str = "slice",
    n_bins: int = 10,
) -> SliceMetrics:
    """Per slice value (e.g. sex, site, age band): its metrics, skipping slices below ``min_size``."""
    inp = prepare(y, P, classes, positive=positive, threshold=threshold)
    labels = slice_labels(slice_values)
    if len(labels) != inp.n:
        raise ValueError(f"slice_values has {len(labels)} rows, y {inp.n}")
    slices, too_small = {}, {}
    for value in sorted(set(labels.tolist())):
        mask = labels == value
        n = int(mask.sum())
        if n < min_size:
            too_small[value] = n
            continue
        slices[value] = metrics_from_input(subset(inp, mask), n_bins=n_bins)
    return SliceMetrics(name=name, min_size=min_size, slices=slices, too_small=too_small)


def subset(inp: ClassificationInput, rows: Any) -> ClassificationInput:
    """The same task on a subset of rows (boolean mask or indices)."""
    return dataclasses.replace(inp, y=inp.y[rows], y_idx=inp.y_idx[rows], P=inp.P[rows])


def age_bands(ages: Any, edges: Sequence[float] = (30, 50, 70)) -> np.ndarray:
    """Numeric ages to bands: edges (30, 50, 70) give "<30", "30-49", "50-69", "70+" (missing: "missing").

    Band "30-49" holds 30 <= age < 50. Non-integer edges are written as "[a, b)".
    """
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must be strictly increasing, got {edges}")
    integral = all(e.is_integer() for e in edges)
    names = [f"<{_num(edges[0])}"]
    for lo, hi in zip(edges, edges[1:], strict=False):
        names.append(f"{_num(lo)}-{_num(hi - 1)}" if integral else f"[{_num(lo)}, {_num(hi)})")
    names.append(f"{_num(edges[-1])}+")
    return _bands(ages, np.asarray(edges), names)


def quantile_bands(values: Any, n_bands: int = 4) -> np.ndarray:
    """Bands at the quantiles of ``values`` ("Q1 [18, 35)", ..., last band closed); ties merge bands."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if len(finite) == 0:
        return np.full(len(x), MISSING, dtype=object)
    cuts = np.unique(np.quantile(finite, np.linspace(0, 1, n_bands + 1)))
    inner = cuts[1:-1]
    bounds = list(zip(cuts[:-1], cuts[1:], strict=True)) or [(cuts[0], cuts[0])]
    names = []
    for i, (lo, hi) in enumerate(bounds):
        close = "]" if i == len(bounds) - 1 else ")"
        names.append(f"Q{i + 1} [{_num(lo)}, {_num(hi)}{close}")
    return _bands(x, inner, names)


def _bands(values: Any, inner_edges: np.ndarray, names: list[str]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(inner_edges, x, side="right")
    out = np.asarray(names, dtype=object)[np.minimum(idx, len(names) - 1)]
    out[~np.isfinite(x)] = MISSING
    return out


# ---------------------------------------------------------------------------------------------
# Generation metrics
# ---------------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Strip, casefold and collapse runs of whitespace to one space (punctuation is kept)."""
    return _SPACE.sub(" ", str(text).strip().casefold())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalise_text(prediction) == normalise_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-tokens F1 over whitespace tokens of the normalised texts.

    Unlike SQuAD's script, articles and punctuation are not removed (language-neutral). Both empty:
    1.0; one empty: 0.0.
    """
    pred, ref = normalise_text(prediction).split(), normalise_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over whitespace tokens of the normalised texts.

    Own LCS implementation (no rouge-score dependency); its tokenizer differs from rouge-score's,
    which also drops non-alphanumerics. Both empty: 1.0; one empty: 0.0.
    """
    pred, ref = normalise_text(prediction).split(), normalise_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class GenerationMetrics:
    n: int
    exact_match: float
    token_f1: float
    rouge_l: float


GENERATION_METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example exact match, token F1 and ROUGE-L (arrays, e.g. for :func:`stats.bootstrap_ci`)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return {
        name: np.fromiter((fn(p, r) for p, r in zip(predictions, references, strict=True)), np.float64)
        for name, fn in GENERATION_METRICS.items()
    }


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> GenerationMetrics:
    """Means of :func:`generation_scores` (NaN when there are no examples)."""
    scores = generation_scores(predictions, references)
    n = len(predictions)
    means = {k: float(v.mean()) if n else math.nan for k, v in scores.items()}
    return GenerationMetrics(n=n, **means)


def perplexity(nll_sum: Any, n_tokens: Any) -> float:
    """Corpus perplexity ``exp(sum(nll) / sum(tokens))`` from summed natural-log NLLs and token counts.

    Accepts scalars or per-example arrays; NaN when there are no tokens.
    """
    total_nll = float(np.sum(nll_sum))
    total_tokens = float(np.sum(n_tokens))
    if total_tokens <= 0:
        return math.nan
    return math.exp(total_nll / total_tokens)


# ---------------------------------------------------------------------------------------------
# Latency and cost
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    n: int
    p50_s: float
    p95_s: float
    mean_s: float
    predictions_per_s: float


def latency_summary(latencies_s: Any, *, wall_seconds: float | None = None) -> LatencySummary:
    """p50/p95 (numpy's linear-interpolation percentiles) and throughput of per-prediction latencies.

    Throughput is ``n / wall_seconds`` when the wall time is given (batched or concurrent serving),
    else ``n / sum(latencies)`` (one prediction at a time).
    """
    lat = np.asarray(latencies_s, dtype=np.float64)
    n = len(lat)
    if n == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    if (lat < 0).any() or not np.isfinite(lat).all():
        raise ValueError("latencies must be finite and non-negative")
    elapsed = float(lat.sum()) if wall_seconds is None else float(wall_seconds)
    p50, p95 = np.percentile(lat, [50, 95])
    return LatencySummary(
        n=n,
        p50_s=float(p50),
        p95_s=float(p95),
        mean_s=float(lat.mean()),
        predictions_per_s=n / elapsed if elapsed > 0 else math.nan,
    )


def cost_per_1k(price_per_hour: float, predictions_per_s: float) -> float:
    """Cost of 1,000 predictions at ``price_per_hour`` and a sustained throughput."""
    if not predictions_per_s or predictions_per_s <= 0 or not math.isfinite(predictions_per_s):
        return math.nan
    return float(price_per_hour) / 3600.0 / predictions_per_s * 1000.0


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def nan_to_none(value: Any) -> Any:
    """NaN and ±inf floats become ``None``, recursively through dicts, lists and tuples."""
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return value


def to_json_dict(obj: Any) -> Any:
    """Dataclasses, numpy scalars/arrays, dicts and sequences to plain JSON values (NaN -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(_py(k)): to_json_dict(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_json_dict(v) for v in obj.tolist()]
    if isinstance(obj, list | tuple):
        return [to_json_dict(v) for v in obj]
    return nan_to_none(_py(obj))


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
