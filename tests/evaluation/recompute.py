"""An independent recomputation of report.json's classification metrics from predictions.parquet with
scikit-learn only (no tuneline code): acceptance check that every number can be re-derived."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize


def recompute(predictions, labels: list[str], positive: str | None) -> dict[str, dict[str, float]]:
    table = pq.read_table(predictions).to_pylist()
    out = {}
    for model in sorted({row["model"] for row in table}):
        rows = [r for r in table if r["model"] == model]
        y = np.array([r["label"] for r in rows])
        pred = np.array([r["prediction"] for r in rows])
        ordered = sorted(labels)  # scikit-learn's column order
        P = np.array([[r[f"p_{label}"] for label in ordered] for r in rows])
        m = {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        }
        m["log_loss"] = skm.log_loss(y, P, labels=ordered)
        if positive is not None:
            negative = next(label for label in labels if label != positive)
            p_pos = P[:, ordered.index(positive)]
            y_pos = (y == positive).astype(int)
            m["precision"] = skm.precision_score(y, pred, pos_label=positive, zero_division=0)
            m["recall"] = skm.recall_score(y, pred, pos_label=positive, zero_division=0)
            m["specificity"] = skm.recall_score(y, pred, pos_label=negative, zero_division=0)
            m["f1"] = skm.f1_score(y, pred, pos_label=positive, zero_division=0)
            if 0 < y_pos.sum() < len(y_pos):
                m["roc_auc"] = skm.roc_auc_score(y_pos, p_pos)
                m["pr_auc"] = skm.average_precision_score(y_pos, p_pos)
            m["brier"] = skm.brier_score_loss(y_pos, p_pos)
        else:
            for name, fn in (
                ("precision", skm.precision_score),
                ("recall", skm.recall_score),
                ("f1", skm.f1_score),
            ):
                m[name] = fn(y, pred, labels=labels, average="macro", zero_division=0)
            if set(y) == set(labels):
                m["roc_auc"] = skm.roc_auc_score(y, P, multi_class="ovr", average="macro", labels=ordered)
                m["pr_auc"] = skm.average_precision_score(
                    label_binarize(y, classes=ordered), P, average="macro"
                )
            m["brier"] = skm.brier_score_loss(y, P, labels=ordered)
        out[model] = m
    return out


def assert_report_matches(report: dict, predictions) -> None:
    again = recompute(predictions, report["labels"], report["positive"])
    assert set(again) == set(report["models"])
    for model, values in again.items():
        reported = report["models"][model]["metrics"]
        for name, value in values.items():
            assert reported[name] is not None, (model, name)
            assert abs(reported[name] - value) <= 1e-9, (model, name, reported[name], value)
