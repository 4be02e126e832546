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

The plots are scikit-learn's displays drawn by :mod:`tuneline.plots`; the page is the template
``tuneline/templates/eval_report.html.j2`` (package data). Number formatting lives in
:mod:`~tuneline.evaluation.report_format`, the tables in :mod:`~tuneline.evaluation.report_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from tuneline import plots
from tuneline.artifacts import EvalReport
from tuneline.evaluation.report_format import (
    CALIBRATION_BINS,
    CLASS_COLOURS,
    DASH,
    _colours,
    _finite,
    _label,
    _lookup,
    _metric_columns,
    _model_order,
    _pct,
)
from tuneline.evaluation.report_tables import (
    _comparisons,
    _metrics_table,
    _ops_table,
    _slices,
    _threshold,
    _verdict,
)

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


class _Curves:
    """Per model: binary (y, p) on the positive class, or multiclass (Y one-hot, P) on all classes."""

    def __init__(self, report: EvalReport, pred: Mapping[str, np.ndarray], models: Sequence[str]):
        self.labels = [str(x) for x in report.labels]
        self.binary = len(self.labels) == 2
        positive = report.positive
        self.positive = str(positive) if positive is not None else (self.labels[-1] if self.labels else None)
        self.notes: list[str] = []
        self.data: dict[str, dict[str, Any]] = {}  # arrays y, P, Y and the threshold (float or None)
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
            if t is None and m in report.models:
                t = report.models[m].threshold
            Y = np.column_stack([(y == label).astype(int) for label in self.labels])
            self.data[m] = {"y": y, "P": P, "Y": Y, "threshold": t}

    def _positive_column(self) -> int:
        """The positive label's column; only asked for binary tasks, which always have one."""
        assert self.positive is not None
        return self.labels.index(self.positive)

    def scores(self, m: str) -> tuple[np.ndarray, np.ndarray]:
        """(outcome, score) for ROC/PR: positive class (binary) or flattened one-vs-rest (micro)."""
        d = self.data[m]
        if self.binary:
            k = self._positive_column()
            return d["Y"][:, k], d["P"][:, k]
        return d["Y"].ravel(), d["P"].ravel()

    def confidence(self, m: str) -> tuple[np.ndarray, np.ndarray]:
        """(outcome, confidence) for calibration: positive-class probability, or the top label's."""
        d = self.data[m]
        if self.binary:
            k = self._positive_column()
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


def _curve_series(
    curves: _Curves, models: Sequence[str], colours: Mapping[str, str], kind: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One series per model with a defined curve (ROC: both classes present; PR: a positive)."""
    series, notes = [], []
    for m in models:
        if m not in curves.data:
            continue
        y, s = curves.scores(m)
        if kind == "roc" and (y.sum() == 0 or y.sum() == len(y)):
            notes.append(f"{m}: ROC undefined (one class only)")
            continue
        if kind == "pr" and y.sum() == 0:
            notes.append(f"{m}: PR curve undefined (no positives)")
            continue
        op = curves.operating_point(m)
        point = None
        if op is not None:
            point = (op[0], op[1]) if kind == "roc" else ((op[1], op[2]) if math.isfinite(op[2]) else None)
        tuned = m == "tuned"
        series.append(
            {"label": m, "y": y, "score": s, "colour": colours[m], "lw": 2.2 if tuned else 1.5}
            | {"zorder": 3 if tuned else 2, "point": point}
        )
    return series, notes


def _calibration_series(
    curves: _Curves, report: EvalReport, models: Sequence[str], colours: Mapping[str, str]
) -> list[dict[str, Any]]:
    series = []
    for m in models:
        if m not in curves.data:
            continue
        y, p = curves.confidence(m)
        if len(y) == 0:
            continue
        ece = _lookup(report.models[m].metrics, "ece") if m in report.models else None
        tuned = m == "tuned"
        series.append(
            {"label": f"{m}  ECE {ece:.3f}" if _finite(ece) else m, "y": y, "p": p, "colour": colours[m]}
            | {"lw": 2.0 if tuned else 1.3, "zorder": 3 if tuned else 2}
        )
    return series


def _per_class_series(curves: _Curves) -> list[dict[str, Any]]:
    """Multiclass: the tuned model's one-vs-rest ROC curve of every class."""
    if curves.binary or "tuned" not in curves.data:
        return []
    d, series = curves.data["tuned"], []
    for k, label in enumerate(curves.labels):
        y = d["Y"][:, k]
        if y.sum() == 0 or y.sum() == len(y):
            continue
        colour = CLASS_COLOURS[k % len(CLASS_COLOURS)]
        series.append({"label": label, "y": y, "score": d["P"][:, k], "colour": colour, "lw": 1.4})
    return series


def _confusion_matrix(
    report: EvalReport, model: str, curves: _Curves | None, labels: Sequence[str]
) -> np.ndarray | None:
    cm = report.models[model].confusion_matrix if model in report.models else None
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
    report: EvalReport,
    pred: Mapping[str, np.ndarray] | None,
    models: Sequence[str],
    colours: Mapping[str, str],
) -> dict[str, Any]:
    labels = [str(x) for x in report.labels]
    out: dict[str, Any] = {
        "roc": None,
        "pr": None,
        "calibration": None,
        "per_class": None,
        "confusion": [],
        "notes": [],
    }
    with plots.style():
        curves = None
        if pred is not None:
            curves = _Curves(report, pred, models)
            out["notes"] += curves.notes
            if curves.data:
                series, notes = _curve_series(curves, models, colours, "roc")
                out["notes"] += notes
                out["roc"] = plots.roc(
                    series,
                    xlabel="False positive rate (1 − specificity)",
                    ylabel="True positive rate (sensitivity)",
                )
                series, notes = _curve_series(curves, models, colours, "pr")
                out["notes"] += notes
                prevalence = float(series[0]["y"].mean()) if series else None
                out["pr"] = plots.precision_recall(series, prevalence=prevalence)
                out["calibration"] = plots.calibration(
                    _calibration_series(curves, report, models, colours),
                    n_bins=CALIBRATION_BINS,
                    ylabel="Observed frequency" if curves.binary else "Observed accuracy",
                    xlabel=f"Predicted probability of {curves.positive}"
                    if curves.binary
                    else "Confidence (top-class probability)",
                )
                per_class = _per_class_series(curves)
                for s in per_class:
                    s["chance"] = False
                out["per_class"] = plots.roc(
                    per_class, name="roc-per-class", xlabel="False positive rate", ylabel="True positive rate"
                )
        for m in models:
            matrix = _confusion_matrix(report, m, curves, labels) if labels else None
            if matrix is not None:
                svg, width = plots.confusion(m, matrix, labels, colours[m])
                out["confusion"].append({"model": m, "svg": svg, "width": width, "n": int(matrix.sum())})
    out["binary"] = len(labels) == 2
    out["positive"] = report.positive
    return out


# --------------------------------------------------------------------------------------------------
# page


def _overview(
    report: EvalReport, pred: Mapping[str, np.ndarray] | None, models: Sequence[str]
) -> list[tuple[str, str, str]]:
    labels = [str(x) for x in report.labels]
    task = report.task
    if task == "generation":
        kind = "Generation"
    elif len(labels) == 2:
        kind = "Binary classification"
    else:
        kind = f"{len(labels)}-class classification" if labels else "Classification"
    n = report.n
    cards = [
        ("Task", kind, ""),
        ("Evaluated on", f"{report.split or DASH} split", ""),
        ("Records", f"{int(n):,}" if _finite(n) else DASH, ""),
    ]
    if report.grouped_by and pred is not None and "group" in pred:
        rows = _model_rows(pred, "tuned")
        groups = {g for g in pred["group"][rows] if g is not None}
        cards.append(("Patients (groups)", f"{len(groups):,}" if groups else DASH, ""))
    positive = report.positive
    # label -> count: a map by nature (typed dict[str, Number])
    counts = report.models["tuned"].class_counts if "tuned" in report.models else {}
    if len(labels) == 2 and positive is not None:
        total = sum(v for v in counts.values() if v is not None and _finite(v))
        npos = counts.get(str(positive))
        prev = f" · {_pct(npos / total)}" if total and _finite(npos) else ""
        cards.append(("Positive class", f"{positive}{prev}", ""))
    cards.append(("Primary metric", _label(str(report.primary or DASH)), ""))
    return cards


def _ci_note(report: EvalReport, models: Sequence[str]) -> str:
    units = {str(report.models[m].ci_unit or "") for m in models}
    if "groups" in units or (units <= {""} and report.grouped_by):
        note = (
            "CIs resample patients (groups): every record of a patient is drawn together, "
            "so correlated records do not narrow the interval."
        )
    else:
        note = "CIs resample records (rows)."
    return note + _dropped_note(report, models)


def _dropped_note(report: EvalReport, models: Sequence[str]) -> str:
    """How many bootstrap draws each CI lost because the metric was undefined there (e.g. no positive
    record in the resample), so a CI built on fewer draws says so."""
    parts = []
    for m in models:
        entry = report.models[m]
        total = entry.ci_resamples
        for metric, n in entry.ci_skipped.items():
            if isinstance(n, int) and n > 0:
                parts.append(f"{m} {_label(metric)} {n}" + (f" of {total}" if total else ""))
    for c in report.comparisons:
        n = c.n_skipped
        if isinstance(n, int) and n > 0 and c.metric == report.primary:
            parts.append(f"tuned − {c.a} {_label(str(c.metric))} {n}")
    if not parts:
        return " No bootstrap draw was dropped: every metric was defined in every resample."
    return (
        " Bootstrap draws dropped because the metric was undefined in them (e.g. no positive record "
        "drawn), so these CIs rest on fewer draws: " + "; ".join(parts) + "."
    )


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("tuneline", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    report: EvalReport | Mapping[str, Any], predictions_parquet: Path | None, *, title: str | None = None
) -> str:
    """The evaluation report page as a string (see the module docstring for what it shows).

    ``report`` is ``report.json`` (typed, or the dict the evaluate stage is about to write);
    ``predictions_parquet`` the file written beside it (the curves and the reliability diagram are drawn
    from it; without it they are left out with a note). Never raises on a missing metric, a null CI or a
    single model.
    """
    if not isinstance(report, EvalReport):
        report = EvalReport.model_validate(report)
    models = _model_order(report.models)
    colours = _colours(models)
    task = report.task or "classification"
    pred, pred_note = (None, "") if task == "generation" else _load_predictions(predictions_parquet)
    columns = _metric_columns(report, models)
    plots = _plots(report, pred, models, colours) if task != "generation" else None
    if plots is not None and pred_note:
        plots["notes"].insert(0, f"Curves left out: {pred_note}.")
    ctx = {
        "title": title or f"tuneline evaluation — {task} on {report.split or 'test'}",
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
        "labels": [str(x) for x in report.labels],
        "dash": DASH,
    }
    return _environment().get_template("eval_report.html.j2").render(**ctx)
