"""Numbers, names and colours of the evaluation report: how each value is written on the page.

Formatting never raises: a missing, non-finite or non-numeric value is written as a dash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from tuneline.artifacts import EvalReport
from tuneline.config.schema import LOWER_IS_BETTER

DASH = "–"
MODEL_ORDER = ("tuned", "base", "few_shot", "embedding_logreg", "prior")
MODEL_COLOURS = {
    "tuned": "#1570ef",
    "base": "#667085",
    "few_shot": "#e04f16",
    "embedding_logreg": "#0e9384",
    "prior": "#98a2b3",
}
EXTRA_COLOURS = ("#7a5af8", "#c11574", "#b54708", "#4e5ba6", "#099250")
MODEL_NOTES = {
    "tuned": "fine-tuned model",
    "base": "base model, zero-shot",
    "few_shot": "base model with solved examples in the prompt",
    "embedding_logreg": "logistic regression on frozen base-model embeddings",
    "prior": "training class frequencies for every record (ignores the input)",
}
METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Bal. accuracy",
    "sensitivity": "Sensitivity",
    "recall": "Sensitivity",  # recall of the positive class (multiclass: macro average)
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1",
    "log_loss": "Log loss",
    "brier": "Brier",
    "ece": "ECE",
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "perplexity": "Perplexity",
    "loss": "Loss",
}
CLASSIFICATION_COLUMNS = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "log_loss",
    "brier",
    "ece",
)
GENERATION_COLUMNS = ("exact_match", "token_f1", "rouge_l", "perplexity", "accuracy")
# The same number under two names: sensitivity is recall of the positive class.
ALIASES = {"sensitivity": ("sensitivity", "recall"), "recall": ("recall", "sensitivity")}
THRESHOLD_METHODS = {
    "youden": "Youden's J: the threshold that maximises sensitivity + specificity − 1",
    "sensitivity": "the highest threshold whose sensitivity reaches the target",
    "fixed": "a fixed threshold from the config (eval.threshold.value)",
}
CALIBRATION_BINS = 10
# Classes in the per-class ROC plot: distinct hues, in order.
CLASS_COLOURS = (
    "#1570ef",
    "#e04f16",
    "#0e9384",
    "#7a5af8",
    "#c11574",
    "#ca8504",
    "#475467",
    "#099250",
    "#dd2590",
    "#2e90fa",
    "#854a0e",
    "#6172f3",
)


# --------------------------------------------------------------------------------------------------
# numbers


def _finite(value: Any) -> TypeGuard[float | np.integer | np.floating]:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and (math.isfinite(float(value)))
    )


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else DASH


def _signed(value: Any, digits: int = 3) -> str:
    return f"{float(value):+.{digits}f}".replace("-", "−") if _finite(value) else DASH


def _digits(metric: str) -> int:
    return 2 if metric in ("perplexity", "loss") else 3


def _pct(value: Any, digits: int = 1) -> str:
    return f"{float(value) * 100:.{digits}f}%" if _finite(value) else DASH


def _pvalue(value: Any) -> str:
    if not _finite(value):
        return DASH
    return "<0.001" if value < 0.001 else f"{float(value):.3f}"


def _seconds(value: Any) -> str:
    if not _finite(value):
        return DASH
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _cost(value: Any) -> str:
    if not _finite(value):
        return DASH
    return f"{value:.4f}" if value < 0.1 else f"{value:,.2f}"


def _ci_pair(ci: Any) -> tuple[Any, Any]:
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return ci[0], ci[1]
    return None, None


def _ci_text(ci: Any, digits: int = 3) -> str:
    low, high = _ci_pair(ci)
    if not (_finite(low) and _finite(high)):
        return f"CI {DASH}"
    return f"{_fmt(low, digits)}–{_fmt(high, digits)}"


def _delta_ci_text(ci: Any, digits: int = 3) -> str:
    low, high = _ci_pair(ci)
    if not (_finite(low) and _finite(high)):
        return f"CI {DASH}"
    return f"{_signed(low, digits)} to {_signed(high, digits)}"


def _lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _lookup(mapping: Mapping[str, Any] | None, metric: str) -> Any:
    if not mapping:
        return None
    for name in ALIASES.get(metric, (metric,)):
        if name in mapping:
            return mapping[name]
    return None


# --------------------------------------------------------------------------------------------------
# models and metrics


def _model_order(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [m for m in MODEL_ORDER if m in names]
    return known + sorted(n for n in names if n not in known)


def _colours(models: Sequence[str]) -> dict[str, str]:
    out, extra = {}, iter(EXTRA_COLOURS * 4)
    for m in models:
        out[m] = MODEL_COLOURS.get(m) or next(extra)
    return out


def _metric_columns(report: EvalReport, models: Sequence[str]) -> list[str]:
    task = report.task
    preferred = GENERATION_COLUMNS if task == "generation" else CLASSIFICATION_COLUMNS
    present: list[str] = []
    for m in models:
        for key in report.models[m].metrics:
            if key not in present:
                present.append(key)
    has = set(present)
    if "sensitivity" in has:
        has.discard("recall")  # the same number: shown once, as sensitivity
    columns = [c for c in preferred if c in has or any(a in has for a in ALIASES.get(c, ()))]
    columns += [
        c
        for c in present
        if c in has and c not in columns and not (c == "recall" and "sensitivity" in columns)
    ]
    primary = report.primary
    if primary:
        key = next((c for c in columns if primary in ALIASES.get(c, (c,))), primary)
        columns = [key] + [c for c in columns if c != key]
    return columns


def _best(values: Mapping[str, Any], metric: str) -> set[str]:
    finite = {m: float(v) for m, v in values.items() if _finite(v)}
    if len(finite) < 2:
        return set()
    target = (min if _lower_is_better(metric) else max)(finite.values())
    return {m for m, v in finite.items() if abs(v - target) <= 1e-12}
