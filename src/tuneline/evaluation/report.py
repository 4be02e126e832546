"""report.json and predictions.parquet from every model's scores on the same records.

Shape of the report (JSON, NaN written as null):

    {"task", "split", "n", "labels", "positive", "primary", "grouped_by": "group" | null,
     "splits": {"evaluated": "test", "threshold": "val" | null},
     "models": {name: {"metrics": {...}, "ci": {metric: [low, high]}, "threshold": t | null,
                       "threshold_choice": {...} | null, "loss", "invalid_label_rate",
                       "confusion_matrix": [[...]], "latency": {...}, "cost_per_1k": ...}},
     "comparisons": [{"a", "b", "metric", "delta", "ci", "p_value", "method"}],
     "slices": {column: {"values": {value: {model: {"n", metrics...}}}, "too_small": {value: n}}},
     "threshold": {"method", "target", "split", "per_model": {name: t}},
     "gate": {"passed", "primary", "against", "against_rule", "comparison", "rules": [...]} | null,
     "permutation": {"metric", "observed", "p_value", "null_mean", "null_q95", "n_permutations",
                     "n_skipped", "unit"} | null,
     "not_beaten": [names of models the tuned model did not beat on the primary metric],
     "beaten_by": [{"model", "metric", "margin", "ci", "significant", "sentence"}],
     "delong": {"unit": "rows", "note"} | null}

Every CI carries how many bootstrap draws were dropped because the metric was undefined there
(``models[name]["ci_skipped"][metric]``, ``comparisons[i]["n_skipped"]``).

``delta`` is always ``b − a`` with ``b = "tuned"``. Every classification number is computed with
scikit-learn from the per-class probabilities stored in predictions.parquet (see metrics.py), so it can
be recomputed independently.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from tuneline.artifacts import (
    EvalReport as EvalReport,  # re-exported: the typed view of what this module writes
)
from tuneline.config import Config
from tuneline.config.schema import LOWER_IS_BETTER
from tuneline.data.records import Record
from tuneline.data.sources.manifest import numbers_from_text
from tuneline.evaluation import metrics as M
from tuneline.evaluation import stats as S
from tuneline.evaluation.gate import GateEvidence, beaten_by, evaluate_gate
from tuneline.sections import Privacy


def default_primary(cfg: Config, task: str) -> str:
    """eval.gate.primary, or balanced accuracy (classification; a collapsed predictor scores exactly
    1/K on it) / exact match (generation)."""
    return cfg.eval.gate.primary or ("balanced_accuracy" if task == "classification" else "exact_match")


def _permutation(cfg, task, labels, positive, records, scored, report, groups, primary) -> dict | None:
    """The tuned model's primary metric against the same metric on permuted test labels."""
    n = cfg.eval.permutation_test
    tuned = scored["tuned"]
    if not n or len(records) < 2:
        return None
    if task == "classification":
        threshold = _t(report["models"]["tuned"]["threshold"])
        y = np.array([r.target for r in records], dtype=object)
        inp = M.prepare(y, tuned.probabilities, labels, positive=positive, threshold=threshold)
        name = "recall" if primary == "sensitivity" else primary
        if name not in M.HEADLINE:
            return None
        ones = np.ones((1, len(y)))
        y = inp.y_idx  # permute the label indices the metrics read

        def metric(permuted: np.ndarray) -> float:
            # the vectorised headline metrics (equal to scikit-learn's, see stats.py) on permuted labels
            return float(S.weighted_metrics(replace(inp, y_idx=permuted.astype(np.int64)), ones)[name][0])

    else:
        scores_name = "exact_match" if primary == "accuracy" else primary
        if tuned.generated is None or scores_name not in ("exact_match", "token_f1", "rouge_l"):
            return None
        generated = tuned.generated

        def metric(permuted: np.ndarray) -> float:  # the references, permuted
            return float(np.mean(M.generation_scores(generated, list(permuted))[scores_name]))

        y = np.array([r.answer for r in records], dtype=object)
    result = S.permutation_test(
        metric,
        y,
        groups=groups,
        n_permutations=n,
        seed=cfg.run.seed,
        higher_is_better=primary not in LOWER_IS_BETTER,
    )
    return M.nan_to_none({"metric": primary, **M.to_json_dict(result)})


def _t(threshold: float | None) -> float:
    return 0.5 if threshold is None else threshold


def _groups(records: list[Record]) -> np.ndarray | None:
    if not any(r.group is not None for r in records):
        return None
    return np.array([r.group if r.group is not None else f"record:{r.id}" for r in records], dtype=object)


def _ci(ci: S.BootstrapCI) -> list[float | None]:
    return M.nan_to_none([ci.low, ci.high])


def _comparison(a: str, metric: str, c: S.PairedComparison, method: str = "paired bootstrap") -> dict:
    return M.nan_to_none(
        {
            "a": a,
            "b": "tuned",
            "metric": metric,
            "value_a": c.metric_a,
            "value_b": c.metric_b,
            "delta": c.delta,
            "ci": [c.low, c.high],
            "p_value": c.p_value,
            "method": method,
            "unit": c.unit,
            "n_skipped": c.n_skipped,
            "n_resamples": c.n_resamples,
        }
    )


def slice_values(records: list[Record], column: str) -> np.ndarray:
    raw = [r.metadata.get(column) for r in records]
    # numbers a CSV wrote as text (a snapshot from before manifests typed them): the data layer's rule
    present = [v for v in raw if v is not None]
    converted = numbers_from_text(present)
    if converted is not None:
        it = iter(converted)
        raw = [None if v is None else next(it) for v in raw]
    numbers = [v for v in raw if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == sum(v is not None and v != "" for v in raw):
        values = np.array([np.nan if v is None or v == "" else float(v) for v in raw])
        if "age" in column.lower():
            return M.age_bands(values)
        return M.quantile_bands(values)
    return np.array(["missing" if v is None or v == "" else str(v) for v in raw], dtype=object)


def build_report(
    cfg: Config,
    task: str,
    labels: list[str],
    positive: str | None,
    records,
    scored,
    privacy: Privacy | None = None,
) -> dict:
    """``privacy``: the training summary's privacy section (train.privacy.dp), for report.json and the
    gate's dp_epsilon guard."""
    ev = cfg.eval
    groups = _groups(records)
    report: dict[str, Any] = {
        "task": task,
        "split": ev.split,
        "n": len(records),
        "labels": labels,
        "positive": positive,
        "grouped_by": "group" if groups is not None else None,
        "splits": {"evaluated": ev.split, "threshold": None},
        "models": {},
        "comparisons": [],
        "slices": {},
        "threshold": None,
        "gate": None,
        "delong": None,
    }
    boot = {"n_resamples": ev.bootstrap_resamples, "seed": cfg.run.seed}
    if task == "classification":
        _classification(cfg, report, labels, positive, records, scored, groups, boot)
    else:
        _generation(report, records, scored, groups, boot)
    for name, s in scored.items():
        lat = M.latency_summary(s.latency)
        entry = report["models"][name]
        entry["latency"] = M.to_json_dict(lat)
        price = cfg.train.cost.price_per_hour * cfg.train.cost.count
        entry["cost_per_1k"] = M.nan_to_none(M.cost_per_1k(price, lat.predictions_per_s)) if price else None
        if s.loss is not None:
            entry["loss"] = s.loss
        entry.update(s.extra)

    primary = default_primary(cfg, task)
    report["primary"] = primary
    sign = -1 if primary in LOWER_IS_BETTER else 1
    report["not_beaten"] = [
        c["a"]
        for c in report["comparisons"]
        if c["metric"] == primary
        and c["method"] == "paired bootstrap"
        and (c["delta"] is None or sign * c["delta"] <= 0)
    ]
    report["beaten_by"] = beaten_by(M.nan_to_none(report["comparisons"]), primary, task)
    report["permutation"] = _permutation(
        cfg, task, labels, positive, records, scored, report, groups, primary
    )
    if ev.gate.enabled:
        tuned_metrics = dict(report["models"]["tuned"]["metrics"])
        if privacy and privacy.dp:
            tuned_metrics["dp_epsilon"] = privacy.dp.epsilon
        evidence = GateEvidence(
            task=task,
            models=M.nan_to_none(report["models"]),
            comparisons=M.nan_to_none(report["comparisons"]),
            tuned_metrics=M.nan_to_none(tuned_metrics),
            permutation=report["permutation"],
            order=list(scored),
        )
        report["gate"] = evaluate_gate(ev.gate, primary, evidence).to_json()
    report["privacy"] = privacy.model_dump(mode="json", exclude_unset=True) if privacy else None
    return M.nan_to_none(report)


def _classification(cfg, report, labels, positive, records, scored, groups, boot) -> None:
    ev = cfg.eval
    y = np.array([r.target for r in records], dtype=object)
    binary = len(labels) == 2
    thresholds: dict[str, float | None] = {}
    for name, s in scored.items():
        threshold, choice = None, None
        if binary:
            threshold = ev.threshold.value
            if s.val_probabilities is not None and ev.threshold.method != "fixed":
                # val labels are not passed around: the stage puts them into extra under "val_labels"
                y_val = np.array(s.extra.pop("val_labels"), dtype=object) == positive
                p_val = s.val_probabilities[:, labels.index(positive)]
                choice = M.choose_threshold(
                    y_val.astype(int),
                    p_val,
                    method=ev.threshold.method,
                    target=ev.threshold.target_sensitivity,
                )
                threshold = choice.threshold
                report["splits"]["threshold"] = "val"
        thresholds[name] = threshold
        m = M.classification_metrics(y, s.probabilities, labels, positive=positive, threshold=_t(threshold))
        ci = S.bootstrap_metrics(
            y, s.probabilities, labels, positive=positive, threshold=_t(threshold), groups=groups, **boot
        )
        valid = {M.normalise_text(label) for label in labels}
        invalid = (
            float(np.mean([M.normalise_text(g) not in valid for g in s.generated])) if s.generated else None
        )
        metrics = m.headline()
        metrics["sensitivity"] = metrics["recall"]
        report["models"][name] = {
            "metrics": metrics,
            "ci": {k: _ci(v) for k, v in ci.items()},
            "ci_unit": next(iter(ci.values())).unit,
            "ci_skipped": {k: v.n_skipped for k, v in ci.items()},
            "ci_resamples": ev.bootstrap_resamples,
            "threshold": threshold,
            "threshold_choice": M.to_json_dict(choice) if choice else None,
            "invalid_label_rate": invalid,
            "confusion_matrix": [list(row) for row in m.confusion_matrix],
            "class_counts": M.to_json_dict(m.class_counts),
        }
    report["threshold"] = (
        {
            "method": ev.threshold.method if report["splits"]["threshold"] else "fixed",
            "target_sensitivity": ev.threshold.target_sensitivity
            if ev.threshold.method == "sensitivity"
            else None,
            "split": report["splits"]["threshold"],
            "per_model": thresholds,
        }
        if binary
        else None
    )

    tuned = scored["tuned"]
    for name, s in scored.items():
        if name == "tuned":
            continue
        paired = S.paired_bootstrap_metrics(
            y,
            s.probabilities,
            tuned.probabilities,
            labels,
            positive=positive,
            threshold_a=_t(thresholds[name]),
            threshold_b=_t(thresholds["tuned"]),
            groups=groups,
            **boot,
        )
        report["comparisons"] += [_comparison(name, metric, c) for metric, c in paired.items()]
        if binary:
            pos = labels.index(positive)
            y_bin = (y == positive).astype(int)
            if 0 < y_bin.sum() < len(y_bin):
                d = S.delong_test(y_bin, s.probabilities[:, pos], tuned.probabilities[:, pos])
                report["comparisons"].append(
                    M.nan_to_none(
                        {
                            "a": name,
                            "b": "tuned",
                            "metric": "roc_auc",
                            "value_a": d.auc_a,
                            "value_b": d.auc_b,
                            "delta": d.delta,
                            "ci": [d.low, d.high],
                            "p_value": d.p_value,
                            "method": "delong",
                            "unit": "rows",
                            "n_skipped": 0,
                        }
                    )
                )
                report["delong"] = {
                    "unit": "rows",
                    "note": (
                        "DeLong's variance treats rows as independent; records share groups here, so "
                        "the gate decides on the paired cluster bootstrap (groups resampled), and DeLong "
                        "is shown for reference only"
                        if groups is not None
                        else "DeLong's test on rows (records have no groups); the gate decides on the "
                        "paired bootstrap"
                    ),
                }

    for column in ev.slices:
        values = slice_values(records, column)
        entry: dict[str, Any] = {"values": {}, "too_small": {}}
        for name, s in scored.items():
            sm = M.metrics_by_slice(
                y,
                s.probabilities,
                values,
                labels,
                positive=positive,
                threshold=_t(thresholds[name]),
                min_size=ev.min_slice_size,
                name=column,
            )
            for value, met in sm.slices.items():
                entry["values"].setdefault(value, {})[name] = {"n": met.n, **met.headline()}
            entry["too_small"] = dict(sm.too_small)
        report["slices"][column] = entry


def _generation(report, records, scored, groups, boot) -> None:
    references = [r.answer for r in records]
    per_record: dict[str, dict[str, np.ndarray]] = {}
    for name, s in scored.items():
        scores = M.generation_scores(s.generated, references)
        per_record[name] = scores
        metrics = {k: float(np.mean(v)) for k, v in scores.items()}
        metrics["accuracy"] = metrics["exact_match"]
        cis = {k: S.bootstrap_ci(np.mean, v, groups=groups, **boot) for k, v in scores.items()}
        if s.loss is not None:
            metrics["perplexity"] = math.exp(s.loss) if s.loss < 700 else math.inf
        report["models"][name] = {
            "metrics": metrics,
            "ci": {k: _ci(v) for k, v in cis.items()},
            "ci_skipped": {k: v.n_skipped for k, v in cis.items()},
            "ci_resamples": boot["n_resamples"],
            "threshold": None,
        }
    for name in scored:
        if name == "tuned":
            continue
        for metric in per_record["tuned"]:
            c = S.paired_bootstrap(
                lambda _y, p: float(np.mean(p)),
                np.zeros(len(records)),
                per_record[name][metric],
                per_record["tuned"][metric],
                groups=groups,
                **boot,
            )
            report["comparisons"].append(_comparison(name, metric, c))


def predictions_table(task: str, labels: list[str], records: list[Record], scored, report: dict):
    """One row per record and model: id, group, label, per-class probabilities, prediction, latency."""
    import pyarrow as pa

    rows = []
    for name, s in scored.items():
        threshold = report["models"][name]["threshold"]
        for i, r in enumerate(records):
            row: dict[str, Any] = {
                "record_id": r.id,
                "group": r.group,
                "split": report["split"],
                "model": name,
                "label": r.target if task == "classification" else r.answer,
                "generated": s.generated[i] if s.generated is not None else None,
                "latency_s": float(s.latency[i]),
            }
            if task == "classification":
                probs = s.probabilities[i]
                for j, label in enumerate(labels):
                    row[f"p_{label}"] = float(probs[j])
                if len(labels) == 2:
                    pos = labels.index(report["positive"])
                    neg = 1 - pos
                    row["prediction"] = labels[pos] if probs[pos] >= threshold else labels[neg]
                else:
                    row["prediction"] = labels[int(np.argmax(probs))]
                row["threshold"] = threshold
            else:
                row["prediction"] = s.generated[i]
            rows.append(row)
    return pa.Table.from_pylist(rows)
