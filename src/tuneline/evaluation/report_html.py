"""``eval/report.html``: the evaluation report as one self-contained page.

:func:`render_report` turns ``report.json`` (shape in :mod:`tuneline.evaluation.report`) and
``predictions.parquet`` into HTML with no network references: CSS is inline and every plot is an
inline SVG drawn with matplotlib. The page reads top to bottom like a review:

1. the verdict: the gate's result rule by rule, and a plain sentence for every model the tuned
   model did not beat on the primary metric;
2. metrics per model with 95% CIs, and the operating side (threshold, invalid-label rate,
   latency, cost);
3. paired comparisons, tuned − each other model;
4. classification only: ROC and precision–recall curves of every model on one plot each, a
   reliability diagram and one confusion matrix per model, all recomputed here from the saved
   per-class probabilities with scikit-learn (binary: the positive class; multiclass:
   one-vs-rest micro-average, plus the tuned model per class);
5. metrics per slice; 6. how the decision threshold was chosen.

Everything taken from the report is escaped by Jinja2's autoescape; the SVGs are generated here
from numbers (text inside them is drawn as glyph paths). A missing metric, a null CI, a single
model or a missing predictions file each give a "–" or a note, never an exception.

Figures are ``matplotlib.figure.Figure`` objects rendered by the SVG canvas: nothing goes through
pyplot, so no global figure list grows and nothing needs closing.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

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


def _finite(value: Any) -> bool:
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


def _metric_columns(report: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    task = report.get("task")
    preferred = GENERATION_COLUMNS if task == "generation" else CLASSIFICATION_COLUMNS
    present: list[str] = []
    for m in models:
        for key in (report["models"][m].get("metrics") or {}).keys():
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
    primary = report.get("primary")
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


def _metrics_table(
    report: Mapping[str, Any], models: Sequence[str], columns: Sequence[str]
) -> dict[str, Any]:
    rows = []
    best = {c: _best({m: _lookup(report["models"][m].get("metrics"), c) for m in models}, c) for c in columns}
    for m in models:
        entry = report["models"][m]
        cells = []
        for c in columns:
            value = _lookup(entry.get("metrics"), c)
            ci = _lookup(entry.get("ci"), c)
            cells.append(
                {
                    "value": _fmt(value, _digits(c)),
                    "ci": _ci_text(ci, _digits(c)) if ci is not None or _finite(value) else "",
                    "best": m in best[c],
                }
            )
        note = entry.get("note") or MODEL_NOTES.get(m, "")  # a stage may say more
        rows.append({"model": m, "note": note, "cells": cells})
    return {
        "columns": [
            {"key": c, "label": _label(c), "arrow": "↓" if _lower_is_better(c) else "↑", "primary": i == 0}
            for i, c in enumerate(columns)
        ],
        "rows": rows,
    }


def _ops_table(report: Mapping[str, Any], models: Sequence[str]) -> dict[str, Any]:
    classification = report.get("task") != "generation"
    has_loss = any(_finite(report["models"][m].get("loss")) for m in models)
    rows = []
    for m in models:
        e = report["models"][m]
        lat = e.get("latency") or {}
        rows.append(
            {
                "model": m,
                "threshold": _fmt(e.get("threshold")),
                "invalid": _pct(e.get("invalid_label_rate")),
                "p50": _seconds(lat.get("p50_s")),
                "p95": _seconds(lat.get("p95_s")),
                "throughput": f"{lat['predictions_per_s']:.1f}/s"
                if _finite(lat.get("predictions_per_s"))
                else DASH,
                "cost": _cost(e.get("cost_per_1k")),
                "loss": _fmt(e.get("loss"), 3),
            }
        )
    return {"rows": rows, "classification": classification, "has_loss": has_loss}


def _comparisons(
    report: Mapping[str, Any], models: Sequence[str], columns: Sequence[str]
) -> dict[str, Any] | None:
    comps = [c for c in report.get("comparisons") or [] if isinstance(c, Mapping)]
    if not comps:
        return None
    others = _model_order(c.get("a") for c in comps if c.get("a") is not None)
    order = {c: i for i, c in enumerate(columns)}
    keys: list[tuple[str, str]] = []
    for c in comps:
        key = (str(c.get("metric")), str(c.get("method") or ""))
        if key not in keys:
            keys.append(key)

    def rank(key: tuple[str, str]) -> tuple[int, int]:
        metric, method = key
        idx = next((order[n] for n in ALIASES.get(metric, (metric,)) if n in order), len(order))
        return idx, 0 if method == "paired bootstrap" else 1

    keys.sort(key=rank)
    primary = report.get("primary")
    rows = []
    for metric, method in keys:
        cells = []
        for other in others:
            c = next(
                (
                    x
                    for x in comps
                    if x.get("a") == other and x.get("metric") == metric and (x.get("method") or "") == method
                ),
                None,
            )
            if c is None:
                cells.append(None)
                continue
            delta = c.get("delta")
            low, high = _ci_pair(c.get("ci"))
            sign = -1.0 if _lower_is_better(metric) else 1.0
            direction = ""
            if _finite(delta) and delta != 0:
                direction = "better" if sign * delta > 0 else "worse"
            significant = _finite(low) and _finite(high) and (low > 0 or high < 0)
            cells.append(
                {
                    "delta": _signed(delta, _digits(metric)),
                    "ci": _delta_ci_text(c.get("ci"), _digits(metric)),
                    "p": _pvalue(c.get("p_value")),
                    "pair": f"{other} {_fmt(c.get('value_a'), _digits(metric))} → tuned "
                    f"{_fmt(c.get('value_b'), _digits(metric))}",
                    "direction": direction,
                    "significant": significant,
                    "unit": c.get("unit") or "",
                }
            )
        rows.append(
            {
                "metric": _label(metric),
                "code": metric,
                "method": method or DASH,
                "arrow": "↓" if _lower_is_better(metric) else "↑",
                "primary": metric == primary and method == "paired bootstrap",
                "cells": cells,
            }
        )
    return {"others": others, "rows": rows, "delong": any(m == "delong" for _, m in keys)}


def _verdict(report: Mapping[str, Any], models: Sequence[str]) -> dict[str, Any]:
    gate = report.get("gate") if isinstance(report.get("gate"), Mapping) else None
    primary = str(report.get("primary") or "")
    comps = [c for c in report.get("comparisons") or [] if isinstance(c, Mapping)]

    def comparison(other: str) -> Mapping[str, Any] | None:
        return next(
            (
                c
                for c in comps
                if c.get("a") == other
                and c.get("metric") == primary
                and c.get("method") == "paired bootstrap"
            ),
            next((c for c in comps if c.get("a") == other and c.get("metric") == primary), None),
        )

    sentences = []
    for other in report.get("not_beaten") or []:
        c = comparison(str(other))
        text = f"Fine-tuning did not beat {other} on {primary}"
        if c is not None:
            d = _digits(primary)
            text += (
                f": tuned {_fmt(c.get('value_b'), d)} vs {other} {_fmt(c.get('value_a'), d)}, "
                f"difference {_signed(c.get('delta'), d)} (95% CI {_delta_ci_text(c.get('ci'), d)})"
            )
        sentences.append(text + ".")
    beaten = [
        m
        for m in models
        if m != "tuned" and m not in (report.get("not_beaten") or []) and comparison(m) is not None
    ]
    tuned = report["models"].get("tuned") or {}
    head = {
        "metric": _label(primary) if primary else DASH,
        "value": _fmt(_lookup(tuned.get("metrics"), primary), _digits(primary)),
        "ci": _ci_text(_lookup(tuned.get("ci"), primary), _digits(primary)),
    }
    against = gate.get("against") if gate else None
    if against and against in report["models"]:
        head["against"] = against
        head["against_value"] = _fmt(
            _lookup(report["models"][against].get("metrics"), primary), _digits(primary)
        )
    else:
        head["against"] = None
        head["against_value"] = DASH
    rules = []
    if gate:
        for r in gate.get("rules") or []:
            rules.append(
                {
                    "passed": bool(r.get("passed")),
                    "rule": str(r.get("rule", "")),
                    "detail": str(r.get("detail") or ""),
                }
            )
    state = "none" if gate is None else ("pass" if gate.get("passed") else "fail")
    red = [str(b.get("sentence")) for b in report.get("beaten_by") or [] if isinstance(b, Mapping)]
    perm = report.get("permutation") if isinstance(report.get("permutation"), Mapping) else None
    perm_text = ""
    if perm and _finite(perm.get("p_value")):
        perm_text = (
            f"Label-permutation test: tuned {_label(str(perm.get('metric')))} "
            f"{_fmt(perm.get('observed'), 3)} against {_fmt(perm.get('null_mean'), 3)} on average "
            f"(95th percentile {_fmt(perm.get('null_q95'), 3)}) with the test labels permuted "
            f"{perm.get('n_permutations')} times ({perm.get('unit')}): p = {_pvalue(perm.get('p_value'))}."
        )
    return {
        "beaten_by": red,
        "permutation": perm_text,
        "state": state,
        "primary": primary,
        "primary_label": _label(primary),
        "against": against,
        "rules": rules,
        "not_beaten": sentences,
        "beaten": beaten,
        "head": head,
    }


# --------------------------------------------------------------------------------------------------
# predictions


def _load_predictions(path: Path | None) -> tuple[dict[str, np.ndarray] | None, str]:
    if path is None:
        return None, "no predictions file was given"
    path = Path(path)
    if not path.is_file():
        return None, f"{path.name} was not found"
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file costs the plots, not the page
        return None, f"{path.name} could not be read ({type(exc).__name__})"
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name.startswith("p_") or name in ("latency_s", "threshold"):
            cols[name] = np.asarray(
                [np.nan if v is None else float(v) for v in col.to_pylist()], dtype=np.float64
            )
        else:
            cols[name] = np.asarray([None if v is None else str(v) for v in col.to_pylist()], dtype=object)
    if "model" not in cols or "label" not in cols:
        return None, f"{path.name} has no model or label column"
    return cols, ""


def _model_rows(pred: Mapping[str, np.ndarray], model: str) -> np.ndarray:
    return np.flatnonzero(pred["model"] == model)


# --------------------------------------------------------------------------------------------------
# plots (matplotlib → inline SVG)


_RC = {
    "svg.fonttype": "path",  # text as glyph paths: the same on every machine, nothing to inject
    "text.parse_math": False,  # a label with "$" is text, not mathtext
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.labelsize": 9,
    "axes.edgecolor": "#98a2b3",
    "axes.labelcolor": "#344054",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#eaecf0",
    "grid.linewidth": 0.8,
    "xtick.color": "#475467",
    "ytick.color": "#475467",
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.frameon": True,
    "legend.framealpha": 0.92,
    "legend.edgecolor": "#eaecf0",
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}

_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def _svg(fig: Any, name: str) -> Markup:
    """The figure as an inline ``<svg>``: no XML prolog or DOCTYPE, ids made unique on the page."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"tuneline-{name}"}):
        fig.savefig(
            buf,
            format="svg",
            bbox_inches="tight",
            pad_inches=0.04,
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", name)
    referenced = {m.group(2) for m in _REF.finditer(text)}

    def rename_id(m: re.Match[str]) -> str:
        return f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else ""

    text = _ID.sub(rename_id, text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    text = re.sub(r"<svg ", f'<svg class="plot" role="img" aria-label="{prefix}" ', text, count=1)
    return Markup(text.strip())


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


class _Curves:
    """Per model: binary (y, p) on the positive class, or multiclass (Y one-hot, P) on all classes."""

    def __init__(self, report: Mapping[str, Any], pred: Mapping[str, np.ndarray], models: Sequence[str]):
        self.labels = [str(x) for x in report.get("labels") or []]
        self.binary = len(self.labels) == 2
        positive = report.get("positive")
        self.positive = str(positive) if positive is not None else (self.labels[-1] if self.labels else None)
        self.notes: list[str] = []
        self.data: dict[str, dict[str, np.ndarray]] = {}
        missing = [label for label in self.labels if f"p_{label}" not in pred]
        if not self.labels or missing:
            self.notes.append(
                "predictions.parquet has no probability column for "
                + ", ".join(f"p_{x}" for x in missing or ["<labels>"])
            )
            return
        for m in models:
            rows = _model_rows(pred, m)
            if len(rows) == 0:
                self.notes.append(f"{m}: no rows in predictions.parquet")
                continue
            y = np.asarray([str(v) for v in pred["label"][rows]], dtype=object)
            P = np.column_stack([pred[f"p_{label}"][rows] for label in self.labels])
            ok = np.isfinite(P).all(axis=1)
            y, P = y[ok], P[ok]
            thr = pred["threshold"][rows][ok] if "threshold" in pred else np.full(len(y), np.nan)
            t = next((float(v) for v in thr if math.isfinite(v)), None)
            if t is None:
                t = report["models"].get(m, {}).get("threshold")
            Y = np.column_stack([(y == label).astype(int) for label in self.labels])
            self.data[m] = {"y": y, "P": P, "Y": Y, "threshold": t}

    def scores(self, m: str) -> tuple[np.ndarray, np.ndarray]:
        """(outcome, score) for ROC/PR: positive class (binary) or flattened one-vs-rest (micro)."""
        d = self.data[m]
        if self.binary:
            k = self.labels.index(self.positive)
            return d["Y"][:, k], d["P"][:, k]
        return d["Y"].ravel(), d["P"].ravel()

    def confidence(self, m: str) -> tuple[np.ndarray, np.ndarray]:
        """(outcome, confidence) for calibration: positive-class probability, or the top label's."""
        d = self.data[m]
        if self.binary:
            k = self.labels.index(self.positive)
            return d["Y"][:, k], d["P"][:, k]
        top = d["P"].argmax(axis=1)
        return (d["Y"][np.arange(len(top)), top] == 1).astype(int), d["P"].max(axis=1)

    def operating_point(self, m: str) -> tuple[float, float, float] | None:
        """(false positive rate, sensitivity, precision) at the model's threshold (binary only)."""
        d = self.data[m]
        t = d["threshold"]
        if not self.binary or not _finite(t):
            return None
        y, p = self.scores(m)
        pred = p >= t
        if y.sum() == 0 or y.sum() == len(y):
            return None
        tpr = float(pred[y == 1].mean())
        fpr = float(pred[y == 0].mean())
        precision = float(y[pred].mean()) if pred.any() else math.nan
        return fpr, tpr, precision


def _legend_line(ax: Any, loc: str) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc=loc, handlelength=1.8, borderpad=0.5, labelspacing=0.35)


def _roc_plot(
    curves: _Curves, models: Sequence[str], colours: Mapping[str, str]
) -> tuple[Markup | None, list[str]]:
    from sklearn.metrics import auc, roc_curve

    fig = _figure(3.7, 3.55)
    ax = fig.subplots()
    notes, drawn = [], 0
    ax.plot([0, 1], [0, 1], ls="--", lw=0.9, color="#98a2b3", label="chance")
    for m in models:
        if m not in curves.data:
            continue
        y, s = curves.scores(m)
        if y.sum() == 0 or y.sum() == len(y):
            notes.append(f"{m}: ROC undefined (one class only)")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(
            fpr,
            tpr,
            lw=2.2 if m == "tuned" else 1.5,
            color=colours[m],
            label=f"{m}  AUC {auc(fpr, tpr):.3f}",
            zorder=3 if m == "tuned" else 2,
        )
        op = curves.operating_point(m)
        if op is not None:
            ax.plot(op[0], op[1], "o", ms=6, color=colours[m], mec="white", mew=1.2, zorder=4)
        drawn += 1
    if not drawn:
        return None, notes
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    _legend_line(ax, "lower right")
    return _svg(fig, "roc"), notes


def _pr_plot(
    curves: _Curves, models: Sequence[str], colours: Mapping[str, str]
) -> tuple[Markup | None, list[str]]:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure(3.7, 3.55)
    ax = fig.subplots()
    notes, drawn, prevalence = [], 0, None
    for m in models:
        if m not in curves.data:
            continue
        y, s = curves.scores(m)
        if y.sum() == 0:
            notes.append(f"{m}: PR curve undefined (no positives)")
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        ax.plot(
            recall,
            precision,
            lw=2.2 if m == "tuned" else 1.5,
            color=colours[m],
            label=f"{m}  AP {ap:.3f}",
            drawstyle="steps-post",
            zorder=3 if m == "tuned" else 2,
        )
        op = curves.operating_point(m)
        if op is not None and math.isfinite(op[2]):
            ax.plot(op[1], op[2], "o", ms=6, color=colours[m], mec="white", mew=1.2, zorder=4)
        prevalence = float(y.mean()) if prevalence is None else prevalence
        drawn += 1
    if not drawn:
        return None, notes
    if prevalence is not None:
        ax.axhline(prevalence, ls="--", lw=0.9, color="#98a2b3", label=f"prevalence {prevalence:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    _legend_line(ax, "best")
    return _svg(fig, "pr"), notes


def _calibration_plot(
    curves: _Curves, report: Mapping[str, Any], models: Sequence[str], colours: Mapping[str, str]
) -> Markup | None:
    from sklearn.calibration import calibration_curve

    fig = _figure(3.7, 3.55)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.6, 1]})
    ax.plot([0, 1], [0, 1], ls="--", lw=0.9, color="#98a2b3", label="perfectly calibrated")
    bins = np.linspace(0, 1, CALIBRATION_BINS + 1)
    drawn = 0
    for m in models:
        if m not in curves.data:
            continue
        y, p = curves.confidence(m)
        if len(y) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frac, mean = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="uniform")
        ece = _lookup((report["models"].get(m) or {}).get("metrics"), "ece")
        label = f"{m}  ECE {ece:.3f}" if _finite(ece) else m
        ax.plot(
            mean,
            frac,
            "o-",
            lw=2.0 if m == "tuned" else 1.3,
            ms=3.5,
            color=colours[m],
            label=label,
            zorder=3 if m == "tuned" else 2,
        )
        hist.hist(p, bins=bins, histtype="step", lw=1.4 if m == "tuned" else 1.0, color=colours[m])
        drawn += 1
    if not drawn:
        return None
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_ylabel("Observed frequency" if curves.binary else "Observed accuracy")
    _legend_line(ax, "best")
    hist.set_xlabel(
        f"Predicted probability of {curves.positive}"
        if curves.binary
        else "Confidence (top-class probability)"
    )
    hist.set_ylabel("Records")
    hist.grid(axis="x", visible=False)
    return _svg(fig, "calibration")


def _per_class_roc(curves: _Curves, colours: Sequence[str]) -> Markup | None:
    """Multiclass: the tuned model's one-vs-rest ROC curve of every class."""
    from sklearn.metrics import auc, roc_curve

    if curves.binary or "tuned" not in curves.data:
        return None
    d = curves.data["tuned"]
    fig = _figure(3.7, 3.55)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", lw=0.9, color="#98a2b3")
    drawn = 0
    palette = list(colours)
    for k, label in enumerate(curves.labels):
        y = d["Y"][:, k]
        if y.sum() == 0 or y.sum() == len(y):
            continue
        fpr, tpr, _ = roc_curve(y, d["P"][:, k])
        ax.plot(fpr, tpr, lw=1.4, color=palette[k % len(palette)], label=f"{label}  AUC {auc(fpr, tpr):.3f}")
        drawn += 1
    if not drawn:
        return None
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    if drawn <= 12:
        _legend_line(ax, "lower right")
    return _svg(fig, "roc-per-class")


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _confusion_plot(model: str, matrix: np.ndarray, labels: Sequence[str], colour: str) -> tuple[Markup, int]:
    """One model's heatmap (colour: share of the true class; text: count and share) and its width in px."""
    from matplotlib.colors import LinearSegmentedColormap

    k = len(labels)
    side = min(7.0, max(2.5, 0.5 * k + 1.4))
    fig = _figure(side, side * 0.92)
    ax = fig.subplots()
    ax.grid(False)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    cmap = LinearSegmentedColormap.from_list("tl", ["#ffffff", colour])
    ax.imshow(share, cmap=cmap, vmin=0, vmax=1, aspect="equal")
    if k <= 15:
        size = 9 if k <= 4 else (7.5 if k <= 8 else 6)
        for i in range(k):
            for j in range(k):
                dark = share[i, j] > 0.55
                text = f"{int(matrix[i, j]):,}"
                if k <= 6 and totals[i, 0] > 0:
                    text += f"\n{share[i, j] * 100:.0f}%"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=size,
                    linespacing=1.15,
                    color="white" if dark else "#101828",
                    fontweight="bold" if i == j else "normal",
                )
    ticks = [_short(str(x)) for x in labels]
    ax.set_xticks(range(k), ticks, rotation=0 if k <= 4 else 45, ha="center" if k <= 4 else "right")
    ax.set_yticks(range(k), ticks)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _svg(fig, f"confusion-{model}"), round(side * 96)


def _confusion_matrix(
    report: Mapping[str, Any], model: str, curves: _Curves | None, labels: Sequence[str]
) -> np.ndarray | None:
    cm = (report["models"].get(model) or {}).get("confusion_matrix")
    k = len(labels)
    try:
        arr = np.asarray(cm, dtype=float)
        if arr.shape == (k, k):
            return np.nan_to_num(arr)
    except (TypeError, ValueError):
        pass
    if curves is None or model not in curves.data:
        return None
    d = curves.data[model]
    if curves.binary and _finite(d["threshold"]):
        pos = labels.index(curves.positive)
        pred_pos = d["P"][:, pos] >= d["threshold"]
        pred = np.where(pred_pos, pos, 1 - pos)
    else:
        pred = d["P"].argmax(axis=1)
    true = d["Y"].argmax(axis=1)
    out = np.zeros((k, k))
    np.add.at(out, (true, pred), 1)
    return out


def _plots(
    report: Mapping[str, Any],
    pred: Mapping[str, np.ndarray] | None,
    models: Sequence[str],
    colours: Mapping[str, str],
) -> dict[str, Any]:
    labels = [str(x) for x in report.get("labels") or []]
    out: dict[str, Any] = {
        "roc": None,
        "pr": None,
        "calibration": None,
        "per_class": None,
        "confusion": [],
        "notes": [],
    }
    import matplotlib

    with matplotlib.rc_context(_RC), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curves = None
        if pred is not None:
            curves = _Curves(report, pred, models)
            out["notes"] += curves.notes
            if curves.data:
                out["roc"], notes = _roc_plot(curves, models, colours)
                out["notes"] += notes
                out["pr"], notes = _pr_plot(curves, models, colours)
                out["notes"] += notes
                out["calibration"] = _calibration_plot(curves, report, models, colours)
                out["per_class"] = _per_class_roc(curves, CLASS_COLOURS)
        for m in models:
            matrix = _confusion_matrix(report, m, curves, labels) if labels else None
            if matrix is not None:
                svg, width = _confusion_plot(m, matrix, labels, colours[m])
                out["confusion"].append({"model": m, "svg": svg, "width": width, "n": int(matrix.sum())})
    out["binary"] = len(labels) == 2
    out["positive"] = report.get("positive")
    return out


# --------------------------------------------------------------------------------------------------
# slices and threshold


def _slices(report: Mapping[str, Any], models: Sequence[str]) -> list[dict[str, Any]]:
    """Per slice column: one row per (value, model), metrics as columns (narrow for any model count)."""
    slices = report.get("slices") or {}
    primary = str(report.get("primary") or "")
    labels = report.get("labels") or []
    if report.get("task") == "generation":
        wanted = [primary]
    elif len(labels) == 2:
        wanted = [primary, "sensitivity", "specificity", "accuracy"]
    else:
        wanted = [primary, "accuracy", "balanced_accuracy", "f1"]
    wanted = [w for i, w in enumerate(wanted) if w and w not in wanted[:i]]
    out = []
    for column, entry in slices.items():
        if not isinstance(entry, Mapping):
            continue
        values = {str(k): (v or {}) for k, v in (entry.get("values") or {}).items()}
        present = [m for m in models if any(m in v for v in values.values())]
        present += _model_order(m for v in values.values() for m in v if m not in present)
        metrics = [
            w
            for w in wanted
            if any(_lookup(v.get(m), w) is not None for v in values.values() for m in present)
        ] or wanted[:1]
        groups = []
        for value, per_model in values.items():
            shown = [m for m in present if m in per_model]
            n = next(
                (per_model[m].get("n") for m in shown if (per_model[m] or {}).get("n") is not None), None
            )
            best = {w: _best({m: _lookup(per_model[m], w) for m in shown}, w) for w in metrics}
            rows = [
                {
                    "model": m,
                    "cells": [
                        {"value": _fmt(_lookup(per_model[m], w), _digits(w)), "best": m in best[w]}
                        for w in metrics
                    ],
                }
                for m in shown
            ]
            groups.append({"value": value, "n": f"{int(n):,}" if _finite(n) else DASH, "rows": rows})
        too_small = entry.get("too_small") or {}
        out.append(
            {
                "column": str(column),
                "metrics": [
                    {"key": w, "label": _label(w), "arrow": "↓" if _lower_is_better(w) else "↑"}
                    for w in metrics
                ],
                "groups": groups,
                "too_small": [
                    {"value": str(v), "n": f"{int(n):,}" if _finite(n) else DASH}
                    for v, n in too_small.items()
                ],
            }
        )
    return out


def _threshold(report: Mapping[str, Any], models: Sequence[str]) -> dict[str, Any] | None:
    th = report.get("threshold")
    if not isinstance(th, Mapping):
        return None
    method = str(th.get("method") or "fixed")
    per_model = th.get("per_model") or {}
    rows = []
    for m in models:
        e = report["models"].get(m) or {}
        choice = e.get("threshold_choice") or {}
        t = per_model.get(m, e.get("threshold"))
        metrics = e.get("metrics") or {}
        rows.append(
            {
                "model": m,
                "threshold": _fmt(t),
                "method": str(choice.get("method") or (method if choice else "fixed")),
                "val_sens": _fmt(choice.get("sensitivity")),
                "val_spec": _fmt(choice.get("specificity")),
                "val_j": _fmt(choice.get("youden_j")),
                "test_sens": _fmt(_lookup(metrics, "sensitivity")),
                "test_spec": _fmt(_lookup(metrics, "specificity")),
            }
        )
    target = th.get("target_sensitivity")
    return {
        "method": method,
        "explain": THRESHOLD_METHODS.get(method, ""),
        "target": _fmt(target, 2) if _finite(target) else None,
        "split": th.get("split"),
        "evaluated": (report.get("splits") or {}).get("evaluated") or report.get("split"),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------------
# page


def _overview(
    report: Mapping[str, Any], pred: Mapping[str, np.ndarray] | None, models: Sequence[str]
) -> list[tuple[str, str, str]]:
    labels = [str(x) for x in report.get("labels") or []]
    task = report.get("task")
    if task == "generation":
        kind = "Generation"
    elif len(labels) == 2:
        kind = "Binary classification"
    else:
        kind = f"{len(labels)}-class classification" if labels else "Classification"
    n = report.get("n")
    cards = [
        ("Task", kind, ""),
        ("Evaluated on", f"{report.get('split') or DASH} split", ""),
        ("Records", f"{int(n):,}" if _finite(n) else DASH, ""),
    ]
    if report.get("grouped_by") and pred is not None and "group" in pred:
        rows = _model_rows(pred, "tuned")
        groups = {g for g in pred["group"][rows] if g is not None}
        cards.append(("Patients (groups)", f"{len(groups):,}" if groups else DASH, ""))
    positive = report.get("positive")
    counts = (report["models"].get("tuned") or {}).get("class_counts") or {}
    if len(labels) == 2 and positive is not None:
        total = sum(v for v in counts.values() if _finite(v))
        npos = counts.get(str(positive), counts.get(positive))
        prev = f" · {_pct(npos / total)}" if total and _finite(npos) else ""
        cards.append(("Positive class", f"{positive}{prev}", ""))
    cards.append(("Primary metric", _label(str(report.get("primary") or DASH)), ""))
    return cards


def _ci_note(report: Mapping[str, Any], models: Sequence[str]) -> str:
    units = {str((report["models"][m] or {}).get("ci_unit") or "") for m in models}
    if "groups" in units or (units <= {""} and report.get("grouped_by")):
        note = (
            "CIs resample patients (groups): every record of a patient is drawn together, "
            "so correlated records do not narrow the interval."
        )
    else:
        note = "CIs resample records (rows)."
    return note + _dropped_note(report, models)


def _dropped_note(report: Mapping[str, Any], models: Sequence[str]) -> str:
    """How many bootstrap draws each CI lost because the metric was undefined there (e.g. no positive
    record in the resample), so a CI built on fewer draws says so."""
    parts = []
    for m in models:
        entry = report["models"][m] or {}
        total = entry.get("ci_resamples")
        for metric, n in (entry.get("ci_skipped") or {}).items():
            if isinstance(n, int) and n > 0:
                parts.append(f"{m} {_label(metric)} {n}" + (f" of {total}" if total else ""))
    for c in report.get("comparisons") or []:
        n = c.get("n_skipped") if isinstance(c, Mapping) else None
        if isinstance(n, int) and n > 0 and c.get("metric") == report.get("primary"):
            parts.append(f"tuned − {c.get('a')} {_label(str(c.get('metric')))} {n}")
    if not parts:
        return " No bootstrap draw was dropped: every metric was defined in every resample."
    return (
        " Bootstrap draws dropped because the metric was undefined in them (e.g. no positive record "
        "drawn), so these CIs rest on fewer draws: " + "; ".join(parts) + "."
    )


def _environment() -> Environment:
    return Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(report: dict, predictions_parquet: Path | None, *, title: str | None = None) -> str:
    """The evaluation report page as a string (see the module docstring for what it shows).

    ``report`` is the ``report.json`` dict; ``predictions_parquet`` the file written beside it
    (the curves and the reliability diagram are drawn from it; without it they are left out with
    a note). Never raises on a missing metric, a null CI or a single model.
    """
    report = dict(report)
    report["models"] = {str(k): (v or {}) for k, v in (report.get("models") or {}).items()}
    models = _model_order(report["models"])
    colours = _colours(models)
    task = report.get("task") or "classification"
    pred, pred_note = (None, "") if task == "generation" else _load_predictions(predictions_parquet)
    columns = _metric_columns(report, models)
    plots = _plots(report, pred, models, colours) if task != "generation" else None
    if plots is not None and pred_note:
        plots["notes"].insert(0, f"Curves left out: {pred_note}.")
    ctx = {
        "title": title or f"tuneline evaluation — {task} on {report.get('split') or 'test'}",
        "task": task,
        "report": report,
        "models": models,
        "colours": colours,
        "verdict": _verdict(report, models),
        "overview": _overview(report, pred, models),
        "metrics": _metrics_table(report, models, columns),
        "ops": _ops_table(report, models),
        "ci_note": _ci_note(report, models),
        "comparisons": _comparisons(report, models, columns),
        "plots": plots,
        "slices": _slices(report, models),
        "threshold": _threshold(report, models),
        "labels": [str(x) for x in report.get("labels") or []],
        "dash": DASH,
    }
    return _environment().from_string(TEMPLATE).render(**ctx)


# --------------------------------------------------------------------------------------------------
# the template (the data report's look: same palette, cards, verdict banner and tables)

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tuneline">
<title>{{ title }}</title>
<style>
:root {
  --fg: #101828; --fg2: #344054; --muted: #667085; --line: #eaecf0; --line2: #d0d5dd;
  --bg: #f5f6f8; --card: #ffffff;
  --err: #b42318; --err-bg: #fef3f2; --err-line: #fecdca;
  --warn: #b54708; --warn-bg: #fffaeb; --warn-line: #fedf89;
  --info: #175cd3; --info-bg: #eff8ff; --info-line: #b2ddff;
  --ok: #067647; --ok-bg: #ecfdf3; --ok-line: #abefc6;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans",
    "Liberation Sans", Arial, sans-serif; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  "DejaVu Sans Mono", monospace; font-size: 12.5px; }
a { color: var(--info); text-decoration: none; }
a:hover { text-decoration: underline; }
header.top { background: #101828; color: #fff; }
header.top .wrap { display: flex; align-items: baseline; gap: 24px; padding-top: 14px; padding-bottom: 14px; }
header.top h1 { font-size: 17px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header.top nav { display: flex; gap: 16px; flex-wrap: wrap; font-size: 13px; }
header.top nav a { color: #d0d5dd; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
main.wrap { padding-top: 20px; padding-bottom: 48px; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px 20px; margin: 0 0 18px; }
h2 { font-size: 16px; margin: 0 0 4px; font-weight: 650; }
h3 { font-size: 14px; margin: 0 0 4px; font-weight: 600; }
p.sub { margin: 0 0 14px; color: var(--muted); font-size: 13px; }
.muted { color: var(--muted); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }

/* verdict */
.verdict { border-radius: 10px; padding: 16px 22px; margin: 0 0 18px; border: 1px solid; }
.verdict .head { display: flex; align-items: center; gap: 18px; }
.verdict.pass { background: var(--ok-bg); border-color: var(--ok-line); color: var(--ok); }
.verdict.fail { background: var(--err-bg); border-color: var(--err-line); color: var(--err); }
.verdict.none { background: #f9fafb; border-color: var(--line2); color: var(--fg2); }
.verdict .icon { width: 40px; height: 40px; border-radius: 50%; display: flex; align-items: center;
  justify-content: center; font-size: 22px; font-weight: 700; color: #fff; flex: none; }
.verdict.pass .icon { background: #17b26a; }
.verdict.fail .icon { background: #d92d20; }
.verdict.none .icon { background: #98a2b3; }
.verdict .what { font-size: 19px; font-weight: 650; line-height: 1.25; }
.verdict .why { color: var(--fg2); margin-top: 2px; }
.verdict .headline { margin-left: auto; text-align: right; color: var(--fg2); font-size: 12.5px; white-space: nowrap; }
.verdict .headline .big { font-size: 24px; font-weight: 650; color: var(--fg); font-variant-numeric: tabular-nums; line-height: 1.2; }
.rules { list-style: none; margin: 12px 0 0 58px; padding: 0; color: var(--fg2); font-size: 13px; }
.rules li { display: flex; gap: 10px; align-items: baseline; padding: 3px 0; }
.rules .mark { font-weight: 700; width: 14px; flex: none; }
.rules .ok .mark { color: #17b26a; } .rules .bad .mark { color: #d92d20; }
.rules .rule { font-weight: 600; color: var(--fg); }
.rules .detail { color: var(--muted); }
.notbeaten { margin: 10px 0 0 58px; padding: 8px 12px; border-radius: 8px; background: var(--warn-bg);
  border: 1px solid var(--warn-line); color: var(--warn); font-size: 13px; }
.notbeaten div + div { margin-top: 3px; }
.beatenby { margin: 10px 0 0 58px; padding: 8px 12px; border-radius: 8px; background: var(--err-bg);
  border: 1px solid var(--err-line); color: var(--err); font-weight: 600; }
.beatenby div + div { margin-top: 3px; }
.perm { margin: 10px 0 0 58px; color: var(--fg2); }
.beaten { margin: 8px 0 0 58px; color: var(--fg2); font-size: 13px; }

/* overview */
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; }
.stat { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fcfcfd; }
.stat .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .4px; }
.stat .v { font-size: 16px; font-weight: 650; font-variant-numeric: tabular-nums; line-height: 1.35;
  overflow-wrap: anywhere; }

/* tables */
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .3px; border-bottom: 1px solid var(--line2); padding: 6px 10px; white-space: nowrap; vertical-align: bottom; }
th.num { text-align: right; }
th.group { text-align: center; border-bottom: 1px solid var(--line); }
td { border-bottom: 1px solid var(--line); padding: 6px 10px; vertical-align: top; }
tbody tr:hover td { background: #f9fafb; }
.scroll { overflow-x: auto; }
td.model { white-space: nowrap; font-weight: 600; }
td.model .note { display: block; font-weight: 400; color: var(--muted); font-size: 11.5px; white-space: normal; max-width: 150px; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: 0; }
tr.tuned td { background: #f5f9ff; }
tbody tr.tuned:hover td { background: #eef4ff; }
th.primary, td.primary { background: #f4f3ff; }
tr.tuned td.primary { background: #ebe9fe; }
td .ci { display: block; color: var(--muted); font-size: 11px; font-weight: 400; }
td.best .v { font-weight: 700; }
.arrow { color: #98a2b3; font-weight: 400; margin-left: 2px; }
.better { color: var(--ok); } .worse { color: var(--err); }
td.cmp .v { font-weight: 600; font-size: 13.5px; }
td.cmp.sig .v::after { content: " *"; color: var(--muted); font-weight: 400; }
td.cmp .ci { white-space: nowrap; }
tr.primary-row td { background: #f4f3ff; }
.tag { display: inline-block; padding: 0 7px; border-radius: 999px; font-size: 11px; font-weight: 600; line-height: 18px;
  border: 1px solid var(--line2); color: var(--fg2); background: #f2f4f7; margin-left: 6px; vertical-align: 1px;
  text-transform: none; letter-spacing: 0; }
#metrics-table th, #metrics-table td { padding-left: 7px; padding-right: 7px; }
#metrics-table th.num { white-space: normal; min-width: 62px; }
.key { margin-top: 8px; color: var(--muted); font-size: 12px; }

/* plots */
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 20px 28px; }
.plots.four { grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); }
.plots figure, .cms figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12.5px; margin: 4px 0 0; }
svg.plot { display: block; width: 100%; height: auto; max-width: 460px; }
.cms { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; margin-top: 8px; }
.cms svg.plot { max-width: 100%; }
.cms h3 { display: flex; align-items: center; }
.notes { margin: 12px 0 0; padding: 0 0 0 18px; color: var(--muted); font-size: 12.5px; }
.divider { border-top: 1px solid var(--line); margin: 20px 0 16px; }

/* slices */
.slice + .slice { margin-top: 22px; }
td.sval { background: #fff !important; font-weight: 600; border-right: 1px solid var(--line); }
td.num.sval { font-weight: 400; color: var(--fg2); }
tbody.sgroup tr:last-child td { border-bottom: 1px solid var(--line2); }
.toosmall { margin-top: 8px; font-size: 12.5px; color: var(--muted); }
.toosmall code { color: var(--fg2); }

footer { color: var(--muted); font-size: 12px; text-align: center; padding: 8px 0 24px; }
@media (max-width: 900px) { .verdict .head { flex-wrap: wrap; } .verdict .headline { margin-left: 58px; text-align: left; } }
@media print { header.top nav { display: none; } }
</style>
</head>
<body>
{% macro model_name(m) %}<span class="sw" style="background: {{ colours[m] }}"></span>{{ m }}{% endmacro %}

<header class="top">
  <div class="wrap">
    <h1>{{ title }}</h1>
    <nav>
      <a href="#verdict">Verdict</a>
      <a href="#metrics">Metrics</a>
      {% if comparisons %}<a href="#comparisons">Comparisons</a>{% endif %}
      {% if plots %}<a href="#curves">Curves</a><a href="#confusion">Confusion</a>{% endif %}
      {% if slices %}<a href="#slices">Slices</a>{% endif %}
      {% if threshold %}<a href="#threshold">Threshold</a>{% endif %}
      {% if report.get('audit') %}<a href="#audit">Audit</a>{% endif %}
      <a href="#method">Method</a>
    </nav>
  </div>
</header>

<main class="wrap">
{% set v = verdict %}
<div class="verdict {{ v.state }}" id="verdict">
  <div class="head">
    <div class="icon">{% if v.state == 'pass' %}&#10003;{% elif v.state == 'fail' %}&#10005;{% else %}&ndash;{% endif %}</div>
    <div>
      <div class="what">
        {% if v.state == 'pass' %}Gate PASSED &mdash; the tuned model may be promoted
        {% elif v.state == 'fail' %}Gate FAILED &mdash; the tuned model must not be promoted
        {% else %}No gate was checked{% endif %}
      </div>
      <div class="why">
        {% if v.state != 'none' %}Primary metric <b>{{ v.primary_label }}</b> ({{ v.primary }}) of <b>tuned</b> against <b>{{ v.against }}</b>;
        {{ v.rules|selectattr('passed')|list|length }} of {{ v.rules|length }} rule{{ '' if v.rules|length == 1 else 's' }} hold.
        {% else %}Primary metric <b>{{ v.primary_label }}</b>; set <code>eval.gate.enabled</code> to check a gate.{% endif %}
      </div>
    </div>
    <div class="headline">
      <div>tuned {{ v.head.metric }}</div>
      <div class="big">{{ v.head.value }}</div>
      <div>95% CI {{ v.head.ci }}{% if v.head.against %} &middot; {{ v.head.against }} {{ v.head.against_value }}{% endif %}</div>
    </div>
  </div>
  {% if v.rules %}
  <ul class="rules">
    {% for r in v.rules %}
    <li class="{{ 'ok' if r.passed else 'bad' }}"><span class="mark">{% if r.passed %}&#10003;{% else %}&#10005;{% endif %}</span>
      <span><span class="rule">{{ r.rule }}</span>{% if r.detail %} &mdash; <span class="detail">{{ r.detail }}</span>{% endif %}
      <b>{{ 'passed' if r.passed else 'failed' }}</b></span></li>
    {% endfor %}
  </ul>
  {% endif %}
  {% if v.beaten_by %}
  <div class="beatenby">{% for s in v.beaten_by %}<div>&#10005; {{ s }}</div>{% endfor %}</div>
  {% endif %}
  {% if v.permutation %}
  <p class="perm">{{ v.permutation }}</p>
  {% endif %}
  {% if v.not_beaten %}
  <div class="notbeaten">{% for s in v.not_beaten %}<div>&#9888; {{ s }}</div>{% endfor %}</div>
  {% endif %}
  {% if v.beaten %}
  <div class="beaten">The tuned model is ahead of {{ v.beaten|join(', ') }} on {{ v.primary }}.</div>
  {% endif %}
</div>

<section class="card" id="overview">
  <div class="stats">
    {% for k, val, cls in overview %}
    <div class="stat {{ cls }}"><div class="k">{{ k }}</div><div class="v">{{ val }}</div></div>
    {% endfor %}
  </div>
</section>

<section class="card" id="metrics">
  <h2>Metrics</h2>
  <p class="sub">Every model on the same {{ report.get('n') or '' }} {{ report.get('split') or '' }} records. Under each value: its 95% bootstrap CI.
    {{ ci_note }} Bold: the best model in the column; &uarr; higher is better, &darr; lower is better.</p>
  <div class="scroll">
  <table id="metrics-table">
    <thead><tr><th>Model</th>
      {% for c in metrics.columns %}<th class="num{{ ' primary' if c.primary }}" title="{{ c.key }}">{{ c.label }}<span class="arrow">{{ c.arrow }}</span>{% if c.primary %}<br><span class="tag">primary</span>{% endif %}</th>{% endfor %}
    </tr></thead>
    <tbody>
    {% for r in metrics.rows %}
    <tr class="{{ 'tuned' if r.model == 'tuned' }}">
      <td class="model">{{ model_name(r.model) }}{% if r.note %}<span class="note">{{ r.note }}</span>{% endif %}</td>
      {% for c in r.cells %}
      <td class="num{{ ' best' if c.best }}{{ ' primary' if loop.first }}"><span class="v">{{ c.value }}</span>{% if c.ci %}<span class="ci">{{ c.ci }}</span>{% endif %}</td>
      {% endfor %}
    </tr>
    {% endfor %}
    </tbody>
  </table>
  </div>

  <h3 style="margin-top: 20px">Decision rule and serving cost</h3>
  <table id="ops-table">
    <thead><tr><th>Model</th>
      {% if ops.classification %}<th class="num">Threshold</th><th class="num">Invalid-label rate</th>{% endif %}
      <th class="num">Latency p50</th><th class="num">Latency p95</th><th class="num">Throughput</th><th class="num">Cost / 1k predictions</th>
      {% if ops.has_loss %}<th class="num" title="evaluation loss (mean negative log-likelihood)">Loss</th>{% endif %}
    </tr></thead>
    <tbody>
    {% for r in ops.rows %}
    <tr class="{{ 'tuned' if r.model == 'tuned' }}">
      <td class="model">{{ model_name(r.model) }}</td>
      {% if ops.classification %}<td class="num">{{ r.threshold }}</td><td class="num">{{ r.invalid }}</td>{% endif %}
      <td class="num">{{ r.p50 }}</td><td class="num">{{ r.p95 }}</td><td class="num">{{ r.throughput }}</td><td class="num">{{ r.cost }}</td>
      {% if ops.has_loss %}<td class="num">{{ r.loss }}</td>{% endif %}
    </tr>
    {% endfor %}
    </tbody>
  </table>
  <p class="key">{% if ops.classification %}Invalid-label rate: share of generated answers that are not one of the labels (the scores come from label log-probabilities either way).
    {% endif %}Cost: accelerator price per hour (<code>train.cost</code>) at the measured throughput, in the config's currency.</p>
</section>

{% if comparisons %}
<section class="card" id="comparisons">
  <h2>Comparisons: tuned &minus; each other model</h2>
  <p class="sub">Paired on the same records: difference, its 95% CI and two-sided p-value. Green: tuned is better in the metric's direction;
    * the CI excludes zero.{% if comparisons.delong %} DeLong rows test ROC-AUC analytically (no resampling).{% endif %}
    {% if report.get('delong') %} {{ report.get('delong').get('note') }}.{% endif %}</p>
  <div class="scroll">
  <table id="comparisons-table">
    <thead><tr><th>Metric</th><th>Method</th>
      {% for o in comparisons.others %}<th class="num">tuned &minus; {{ o }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for r in comparisons.rows %}
    <tr class="{{ 'primary-row' if r.primary }}">
      <td><b>{{ r.metric }}</b><span class="arrow">{{ r.arrow }}</span>{% if r.primary %}<span class="tag">primary</span>{% endif %}</td>
      <td class="muted">{{ r.method }}</td>
      {% for c in r.cells %}
      {% if c %}
      <td class="num cmp{{ ' sig' if c.significant }}" title="{{ c.pair }}; resampling {{ c.unit }}"><span class="v {{ c.direction }}">{{ c.delta }}</span>
        <span class="ci">{{ c.ci }} &middot; p {{ c.p }}</span></td>
      {% else %}<td class="num muted">{{ dash }}</td>{% endif %}
      {% endfor %}
    </tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  <p class="key">Under each difference: its 95% CI &middot; p-value. Hover a cell for both models' values.</p>
</section>
{% endif %}

{% if plots %}
<section class="card" id="curves">
  <h2>Curves</h2>
  <p class="sub">Recomputed from <code>predictions.parquet</code> with scikit-learn.
    {% if plots.binary %}Scores are the probability of the positive class <b>{{ plots.positive }}</b>; dots mark each model's operating point at its threshold.
    {% else %}One-vs-rest, micro-averaged over classes (the metrics table's ROC-AUC and PR-AUC are macro averages).{% endif %}</p>
  <div class="plots{{ ' four' if plots.per_class }}">
    {% if plots.roc %}<figure id="roc"><h3>ROC curves</h3>{{ plots.roc }}<figcaption>AUC in the legend{{ '' if plots.binary else ' (micro-average)' }}; dashed: chance.</figcaption></figure>{% endif %}
    {% if plots.per_class %}<figure id="roc-per-class"><h3>ROC per class &mdash; tuned</h3>{{ plots.per_class }}<figcaption>Each class against the rest{{ ' (no legend above 12 classes)' if labels|length > 12 }}.</figcaption></figure>{% endif %}
    {% if plots.pr %}<figure id="pr"><h3>Precision&ndash;recall curves</h3>{{ plots.pr }}<figcaption>Average precision (AP) in the legend; dashed: prevalence, the precision of guessing.</figcaption></figure>{% endif %}
    {% if plots.calibration %}<figure id="calibration"><h3>Calibration (reliability)</h3>{{ plots.calibration }}<figcaption>Ten equal-width bins; a calibrated model lies on the diagonal. Below: how many records fall in each bin.</figcaption></figure>{% endif %}
  </div>
  {% if plots.notes %}<ul class="notes">{% for n in plots.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</section>

{% if plots.confusion %}
<section class="card" id="confusion">
  <h2>Confusion matrices</h2>
  <p class="sub">Rows: true class; columns: predicted class{{ " at each model's threshold" if plots.binary }}. {% if labels|length <= 15 %}Cells show counts{% if labels|length <= 6 %} and the share of the true class (row){% endif %}; colour{% else %}Colour{% endif %} follows the share of the true class (row).</p>
  <div class="cms">
    {% for cm in plots.confusion %}
    <figure class="confusion" style="width: {{ cm.width }}px"><h3>{{ model_name(cm.model) }}</h3>{{ cm.svg }}<figcaption>{{ '{:,}'.format(cm.n) }} records</figcaption></figure>
    {% endfor %}
  </div>
</section>
{% endif %}
{% endif %}

{% if slices %}
<section class="card" id="slices">
  <h2>Slices</h2>
  <p class="sub">The same metrics within each value of a metadata column (numbers are binned). Bold: the best model in the slice.
    Small slices are listed, not scored.</p>
  <div class="slices">
  {% for s in slices %}
  <div class="slice" id="slice-{{ loop.index }}">
    <h3>By <code>{{ s.column }}</code></h3>
    {% if s.groups %}
    <table>
      <thead><tr><th>{{ s.column }}</th><th class="num">n</th><th>Model</th>
        {% for m in s.metrics %}<th class="num{{ ' primary' if loop.first }}">{{ m.label }}<span class="arrow">{{ m.arrow }}</span></th>{% endfor %}</tr></thead>
      {% for g in s.groups %}
      <tbody class="sgroup">
      {% for r in g.rows %}
      <tr class="{{ 'tuned' if r.model == 'tuned' }}">
        {% if loop.first %}<td rowspan="{{ g.rows|length }}" class="sval">{{ g.value }}</td><td rowspan="{{ g.rows|length }}" class="num sval">{{ g.n }}</td>{% endif %}
        <td class="model">{{ model_name(r.model) }}</td>
        {% for c in r.cells %}<td class="num{{ ' best' if c.best }}{{ ' primary' if loop.first }}"><span class="v">{{ c.value }}</span></td>{% endfor %}
      </tr>
      {% endfor %}
      </tbody>
      {% endfor %}
    </table>
    {% else %}<p class="sub">No slice of this column was large enough to score.</p>{% endif %}
    {% if s.too_small %}
    <div class="toosmall">Too small to score (fewer rows than <code>eval.min_slice_size</code>):
      {% for t in s.too_small %}<code>{{ t.value }}</code> (n = {{ t.n }}){{ ', ' if not loop.last }}{% endfor %}.</div>
    {% endif %}
  </div>
  {% endfor %}
  </div>
</section>
{% endif %}

{% if threshold %}
<section class="card" id="threshold">
  <h2>Decision threshold</h2>
  <p class="sub">Method <b>{{ threshold.method }}</b>{% if threshold.explain %}: {{ threshold.explain }}{% endif %}{% if threshold.target %} (target sensitivity {{ threshold.target }}){% endif %}.
    {% if threshold.split %}Chosen on the <b>{{ threshold.split }}</b> split, then applied unchanged to <b>{{ threshold.evaluated }}</b>,
    so the {{ threshold.evaluated }} numbers are not tuned to the {{ threshold.evaluated }} labels.{% else %}No validation split was used.{% endif %}
    A row is predicted positive when its probability is at least the threshold.</p>
  <table id="threshold-table">
    <thead><tr><th>Model</th><th class="num">Threshold</th><th>Method</th>
      <th class="num">{{ threshold.split or 'val' }} sensitivity</th><th class="num">{{ threshold.split or 'val' }} specificity</th><th class="num">{{ threshold.split or 'val' }} Youden J</th>
      <th class="num">{{ threshold.evaluated }} sensitivity</th><th class="num">{{ threshold.evaluated }} specificity</th></tr></thead>
    <tbody>
    {% for r in threshold.rows %}
    <tr class="{{ 'tuned' if r.model == 'tuned' }}"><td class="model">{{ model_name(r.model) }}</td><td class="num">{{ r.threshold }}</td><td>{{ r.method }}</td>
      <td class="num">{{ r.val_sens }}</td><td class="num">{{ r.val_spec }}</td><td class="num">{{ r.val_j }}</td>
      <td class="num">{{ r.test_sens }}</td><td class="num">{{ r.test_spec }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>
{% endif %}

{% if report.get('audit') %}
<section class="card" id="audit">
  <h2>Memorisation audit</h2>
  <p class="sub">{{ report.audit.canaries }} secret-sharer canaries (a random {{ report.audit.digits }}-digit secret in a fixed template) were planted in training only and are in no metric above.
    Each secret is ranked against {{ report.audit.candidates }} random candidates by the tuned model's log-likelihood; exposure = log2({{ report.audit.candidates + 1 }}) − log2(rank), at most {{ '%.2f'|format(report.audit.max_exposure) }} bits.</p>
  <table><thead><tr><th></th><th class="num">mean exposure (bits)</th></tr></thead><tbody>
    <tr><td>planted canaries (trained on)</td><td class="num">{{ '%.2f'|format(report.audit.exposure_mean) }}</td></tr>
    <tr><td>control canaries (never trained on)</td><td class="num">{{ '%.2f'|format(report.audit.control_exposure_mean) }}</td></tr>
  </tbody></table>
  {% if report.privacy and report.privacy.dp %}<p class="sub">Trained with differential privacy: ε = {{ '%.3g'|format(report.privacy.dp.epsilon) }} at δ = {{ '%.2g'|format(report.privacy.dp.delta) }}.</p>{% endif %}
</section>
{% endif %}

<section class="card" id="method">
  <h2>How these numbers were made</h2>
  <ul class="notes" style="margin-top: 4px">
    {% if task != 'generation' %}
    <li>Metrics: scikit-learn on the per-record class probabilities stored in <code>predictions.parquet</code>, so each number can be recomputed independently.</li>
    {% else %}
    <li>Metrics: exact match, token F1 and ROUGE-L per record on normalised text, averaged; perplexity from the evaluation loss. No class probabilities, so no curves.</li>
    {% endif %}
    <li>95% CIs: percentile bootstrap. {{ ci_note }}</li>
    <li>Comparisons: paired bootstrap of tuned &minus; other on the same resamples{% if comparisons and comparisons.delong %}, and DeLong's test for ROC-AUC{% endif %}.</li>
    {% if task != 'generation' %}<li>Expected calibration error (ECE): 10 equal-width bins; {{ 'positive-class probability' if labels|length == 2 else 'top-class confidence against correctness' }}.</li>{% endif %}
    <li>Full numbers: <code>report.json</code> beside this page.</li>
  </ul>
</section>
</main>
<footer>Generated by tuneline &middot; task {{ task }} &middot; split {{ report.get('split') or dash }} &middot; {{ models|length }} model{{ '' if models|length == 1 else 's' }}</footer>
</body>
</html>
"""  # noqa: E501 - markup lines are kept whole for readability
