"""The evaluation report's tables as plain dicts for the template: verdict, metrics, serving side,
paired comparisons, slices and the decision threshold (everything but the plots). Each reads the typed
:class:`~tuneline.artifacts.EvalReport`; what stays a map is one by nature (metric name → value)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneline.artifacts import EvalReport
from tuneline.evaluation.report_format import (
    ALIASES,
    DASH,
    MODEL_NOTES,
    THRESHOLD_METHODS,
    _best,
    _ci_pair,
    _ci_text,
    _cost,
    _delta_ci_text,
    _digits,
    _finite,
    _fmt,
    _label,
    _lookup,
    _lower_is_better,
    _model_order,
    _pct,
    _pvalue,
    _seconds,
    _signed,
)
from tuneline.sections import Comparison, Latency, ModelEntry


def _metrics_table(report: EvalReport, models: Sequence[str], columns: Sequence[str]) -> dict[str, Any]:
    rows = []
    best = {c: _best({m: _lookup(report.models[m].metrics, c) for m in models}, c) for c in columns}
    for m in models:
        entry = report.models[m]
        cells = []
        for c in columns:
            value = _lookup(entry.metrics, c)
            ci = _lookup(entry.ci, c)
            cells.append(
                {
                    "value": _fmt(value, _digits(c)),
                    "ci": _ci_text(ci, _digits(c)) if ci is not None or _finite(value) else "",
                    "best": m in best[c],
                }
            )
        note = entry.note or MODEL_NOTES.get(m, "")  # a stage may say more
        rows.append({"model": m, "note": note, "cells": cells})
    return {
        "columns": [
            {"key": c, "label": _label(c), "arrow": "↓" if _lower_is_better(c) else "↑", "primary": i == 0}
            for i, c in enumerate(columns)
        ],
        "rows": rows,
    }


def _ops_table(report: EvalReport, models: Sequence[str]) -> dict[str, Any]:
    classification = report.task != "generation"
    has_loss = any(_finite(report.models[m].loss) for m in models)
    rows = []
    for m in models:
        e = report.models[m]
        lat = e.latency or Latency()
        rows.append(
            {
                "model": m,
                "threshold": _fmt(e.threshold),
                "invalid": _pct(e.invalid_label_rate),
                "p50": _seconds(lat.p50_s),
                "p95": _seconds(lat.p95_s),
                "throughput": f"{lat.predictions_per_s:.1f}/s" if _finite(lat.predictions_per_s) else DASH,
                "cost": _cost(e.cost_per_1k),
                "loss": _fmt(e.loss, 3),
            }
        )
    return {"rows": rows, "classification": classification, "has_loss": has_loss}


def _comparisons(report: EvalReport, models: Sequence[str], columns: Sequence[str]) -> dict[str, Any] | None:
    comps = report.comparisons
    if not comps:
        return None
    others = _model_order(c.a for c in comps if c.a is not None)
    order = {c: i for i, c in enumerate(columns)}
    keys: list[tuple[str, str]] = []
    for c in comps:
        key = (str(c.metric), str(c.method or ""))
        if key not in keys:
            keys.append(key)

    def rank(key: tuple[str, str]) -> tuple[int, int]:
        metric, method = key
        idx = next((order[n] for n in ALIASES.get(metric, (metric,)) if n in order), len(order))
        return idx, 0 if method == "paired bootstrap" else 1

    keys.sort(key=rank)
    primary = report.primary
    rows = []
    for metric, method in keys:
        cells: list[dict[str, Any] | None] = []
        for other in others:
            comp = next(
                (x for x in comps if x.a == other and str(x.metric) == metric and (x.method or "") == method),
                None,
            )
            if comp is None:
                cells.append(None)
                continue
            delta = comp.delta
            low, high = _ci_pair(comp.ci)
            sign = -1.0 if _lower_is_better(metric) else 1.0
            direction = ""
            if _finite(delta) and delta != 0:
                direction = "better" if sign * delta > 0 else "worse"
            significant = _finite(low) and _finite(high) and (low > 0 or high < 0)
            cells.append(
                {
                    "delta": _signed(delta, _digits(metric)),
                    "ci": _delta_ci_text(comp.ci, _digits(metric)),
                    "p": _pvalue(comp.p_value),
                    "pair": f"{other} {_fmt(comp.value_a, _digits(metric))} → tuned "
                    f"{_fmt(comp.value_b, _digits(metric))}",
                    "direction": direction,
                    "significant": significant,
                    "unit": comp.unit or "",
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


def _verdict(report: EvalReport, models: Sequence[str]) -> dict[str, Any]:
    gate = report.gate
    primary = str(report.primary or "")
    comps = report.comparisons

    def comparison(other: str) -> Comparison | None:
        return next(
            (c for c in comps if c.a == other and c.metric == primary and c.method == "paired bootstrap"),
            next((c for c in comps if c.a == other and c.metric == primary), None),
        )

    sentences = []
    for other in report.not_beaten:
        c = comparison(str(other))
        text = f"Fine-tuning did not beat {other} on {primary}"
        if c is not None:
            d = _digits(primary)
            text += (
                f": tuned {_fmt(c.value_b, d)} vs {other} {_fmt(c.value_a, d)}, "
                f"difference {_signed(c.delta, d)} (95% CI {_delta_ci_text(c.ci, d)})"
            )
        sentences.append(text + ".")
    beaten = [m for m in models if m != "tuned" and m not in report.not_beaten and comparison(m) is not None]
    tuned = report.models.get("tuned") or ModelEntry()  # model name -> entry: a map by nature
    head: dict[str, str | None] = {
        "metric": _label(primary) if primary else DASH,
        "value": _fmt(_lookup(tuned.metrics, primary), _digits(primary)),
        "ci": _ci_text(_lookup(tuned.ci, primary), _digits(primary)),
    }
    against = gate.against if gate else None
    if against and against in report.models:
        head["against"] = against
        head["against_value"] = _fmt(_lookup(report.models[against].metrics, primary), _digits(primary))
    else:
        head["against"] = None
        head["against_value"] = DASH
    rules = []
    if gate:
        for r in gate.rules:
            rules.append({"passed": bool(r.passed), "rule": str(r.rule), "detail": str(r.detail or "")})
    state = "none" if gate is None else ("pass" if gate.passed else "fail")
    red = [str(b.sentence) for b in report.beaten_by]
    perm = report.permutation
    perm_text = ""
    if perm and _finite(perm.p_value):
        perm_text = (
            f"Label-permutation test: tuned {_label(str(perm.metric))} "
            f"{_fmt(perm.observed, 3)} against {_fmt(perm.null_mean, 3)} on average "
            f"(95th percentile {_fmt(perm.null_q95, 3)}) with the test labels permuted "
            f"{perm.n_permutations} times ({perm.unit}): p = {_pvalue(perm.p_value)}."
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


def _slices(report: EvalReport, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per slice column: one row per (value, model), metrics as columns (narrow for any model count)."""
    primary = str(report.primary or "")
    labels = report.labels
    if report.task == "generation":
        wanted = [primary]
    elif len(labels) == 2:
        wanted = [primary, "sensitivity", "specificity", "accuracy"]
    else:
        wanted = [primary, "accuracy", "balanced_accuracy", "f1"]
    wanted = [w for i, w in enumerate(wanted) if w and w not in wanted[:i]]
    out = []
    for column, entry in report.slices.items():
        # value -> model -> {"n", metric...}: maps by nature (typed dict[str, dict[str, dict[str, Number]]])
        values = entry.values
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
            n = next((per_model[m]["n"] for m in shown if per_model[m].get("n") is not None), None)
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
        too_small = entry.too_small
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


def _threshold(report: EvalReport, models: Sequence[str]) -> dict[str, Any] | None:
    th = report.threshold
    if th is None:
        return None
    method = str(th.method or "fixed")
    rows = []
    for m in models:
        e = report.models.get(m) or ModelEntry()
        choice = e.threshold_choice
        # model name -> threshold (a map by nature); a model it does not name keeps its own
        t = th.per_model[m] if m in th.per_model else e.threshold
        rows.append(
            {
                "model": m,
                "threshold": _fmt(t),
                "method": str((choice.method if choice else None) or (method if choice else "fixed")),
                "val_sens": _fmt(choice.sensitivity if choice else None),
                "val_spec": _fmt(choice.specificity if choice else None),
                "val_j": _fmt(choice.youden_j if choice else None),
                "test_sens": _fmt(_lookup(e.metrics, "sensitivity")),
                "test_spec": _fmt(_lookup(e.metrics, "specificity")),
            }
        )
    target = th.target_sensitivity
    return {
        "method": method,
        "explain": THRESHOLD_METHODS.get(method, ""),
        "target": _fmt(target, 2) if _finite(target) else None,
        "split": th.split,
        "evaluated": (report.splits.evaluated if report.splits else None) or report.split,
        "rows": rows,
    }
