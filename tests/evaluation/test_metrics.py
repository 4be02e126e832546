"""Point metrics equal scikit-learn; thresholds, slices, generation, latency and JSON helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
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

from tuneline.evaluation.metrics import (
    HEADLINE,
    age_bands,
    choose_threshold,
    classification_metrics,
    cost_per_1k,
    exact_match,
    expected_calibration_error,
    generation_metrics,
    latency_summary,
    lcs_length,
    metrics_by_slice,
    nan_to_none,
    perplexity,
    quantile_bands,
    rouge_l,
    to_json_dict,
    token_f1,
)

TOL = 1e-9


def _binary_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.35, "mel", "nev")
    signal = (y == "mel") * 0.25
    p_mel = np.clip(signal + rng.random(n) * 0.75, 0.0, 1.0)
    # Column order ("nev", "mel") is deliberately not sorted.
    return y, np.column_stack([1 - p_mel, p_mel]), ["nev", "mel"]


def _multiclass_data(n=500, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, P


def _ece_via_calibration_curve(outcome, confidence, n_bins=10):
    prob_true, prob_pred = calibration_curve(outcome, confidence, n_bins=n_bins, strategy="uniform")
    counts, _ = np.histogram(confidence, bins=np.linspace(0, 1, n_bins + 1))
    counts = counts[counts > 0]
    return float(np.sum(counts / len(confidence) * np.abs(prob_true - prob_pred)))


@pytest.mark.parametrize("threshold", [0.5, 0.31])
def test_binary_metrics_equal_sklearn(threshold):
    y, P, classes = _binary_data()
    m = classification_metrics(y, P, classes, positive="mel", threshold=threshold)
    y_bin = (y == "mel").astype(int)
    p = P[:, 1]
    pred = (p >= threshold).astype(int)
    cm = confusion_matrix(y_bin, pred, labels=[0, 1])
    tn, fp = cm[0, 0], cm[0, 1]
    sorted_P = P[:, [1, 0]]  # columns for sorted labels ("mel", "nev")
    expected = {
        "accuracy": accuracy_score(y_bin, pred),
        "balanced_accuracy": balanced_accuracy_score(y_bin, pred),
        "precision": precision_score(y_bin, pred, zero_division=0),
        "recall": recall_score(y_bin, pred, zero_division=0),
        "specificity": tn / (tn + fp),
        "f1": f1_score(y_bin, pred, zero_division=0),
        "roc_auc": roc_auc_score(y_bin, p),
        "pr_auc": average_precision_score(y_bin, p),
        "log_loss": log_loss(y, sorted_P, labels=["mel", "nev"]),
        "brier": brier_score_loss(y_bin, p),
        "ece": _ece_via_calibration_curve(y_bin, p),
    }
    for name in HEADLINE:
        assert getattr(m, name) == pytest.approx(expected[name], abs=TOL), name
    pred_labels = np.where(pred == 1, "mel", "nev")
    assert np.array_equal(m.confusion_matrix, confusion_matrix(y, pred_labels, labels=classes))
    assert (m.task, m.n, m.n_positive, m.positive, m.threshold) == (
        "binary",
        len(y),
        int(y_bin.sum()),
        "mel",
        threshold,
    )


def test_multiclass_metrics_equal_sklearn():
    y, P = _multiclass_data()
    # Classes given in an unsorted order: columns follow `classes`.
    classes = [2, 0, 1]
    Pc = P[:, classes]
    m = classification_metrics(y, Pc, classes)
    pred = np.argmax(P, axis=1)
    cm = confusion_matrix(y, pred, labels=[0, 1, 2])
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    top = P.max(axis=1)
    expected = {
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "precision": precision_score(y, pred, average="macro", zero_division=0),
        "recall": recall_score(y, pred, average="macro", zero_division=0),
        "specificity": np.mean(tn / (tn + fp)),
        "f1": f1_score(y, pred, average="macro", zero_division=0),
        "roc_auc": roc_auc_score(y, P, multi_class="ovr", average="macro"),
        "pr_auc": average_precision_score(label_binarize(y, classes=[0, 1, 2]), P, average="macro"),
        "log_loss": log_loss(y, P),
        "brier": brier_score_loss(y, P, labels=[0, 1, 2]),
        "ece": _ece_via_calibration_curve((pred == y).astype(int), top),
    }
    for name in HEADLINE:
        assert getattr(m, name) == pytest.approx(expected[name], abs=TOL), name
    assert np.array_equal(m.confusion_matrix, confusion_matrix(y, pred, labels=classes))
    assert m.task == "multiclass" and m.n_positive is None and m.threshold is None
    assert m.class_counts == {str(c): int((y == c).sum()) for c in classes}


def test_ece_by_hand():
    # Bin [0.1, 0.2): p 0.15, 0.15, outcomes 1, 0 -> |0.5 - 0.15| * 2/4.
    # Bin [0.9, 1]: p 1.0, 0.95, outcomes 1, 1 -> |1 - 0.975| * 2/4.
    ece = expected_calibration_error([1, 0, 1, 1], [0.15, 0.15, 1.0, 0.95])
    assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.025)


def test_one_class_gives_nan_not_exception_and_null_in_json():
    y = np.array(["nev"] * 20)
    P = np.column_stack([np.full(20, 0.8), np.full(20, 0.2)])
    m = classification_metrics(y, P, ["nev", "mel"], positive="mel")
    assert math.isnan(m.roc_auc) and math.isnan(m.pr_auc)
    assert m.n_positive == 0 and m.accuracy == 1.0 and m.recall == 0.0 and m.specificity == 1.0
    out = to_json_dict(m)
    assert out["roc_auc"] is None and out["pr_auc"] is None
    json.dumps(out, allow_nan=False)
    # Multiclass with an absent class: the one-vs-rest macro AUC is undefined.
    y3, P3 = _multiclass_data(60)
    keep = y3 != 2
    m3 = classification_metrics(y3[keep], P3[keep], [0, 1, 2])
    assert math.isnan(m3.roc_auc) and math.isnan(m3.pr_auc) and not math.isnan(m3.log_loss)


def test_invalid_inputs_are_reported():
    y, P, classes = _binary_data(20)
    with pytest.raises(ValueError, match="not in classes"):
        classification_metrics(np.where(y == "mel", "melanoma", y), P, classes)
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics(y, P * 0.9, classes)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(y, P[:, :1], classes)
    with pytest.raises(ValueError, match="positive class"):
        classification_metrics(y, P, classes, positive="bcc")
    y3, P3 = _multiclass_data(30)
    with pytest.raises(ValueError, match="binary tasks only"):
        classification_metrics(y3, P3, [0, 1, 2], positive=1)


def test_choose_threshold_youden_and_sensitivity():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # J is 0.75 at 0.7 (sens 3/4, spec 1) and at 0.4 (sens 1, spec 3/4): the higher threshold wins.
    youden = choose_threshold(y, p, "youden")
    assert (youden.threshold, youden.sensitivity, youden.specificity) == (0.7, 0.75, 1.0)
    assert youden.youden_j == pytest.approx(0.75) and youden.target is None
    sens = choose_threshold(y, p, "sensitivity", target=0.9)
    assert (sens.threshold, sens.sensitivity, sens.specificity, sens.target) == (0.4, 1.0, 0.75, 0.9)
    assert choose_threshold(y, p, "sensitivity", target=0.75).threshold == 0.7
    # Sensitivity reached exactly at the target counts.
    assert choose_threshold(y, p, "sensitivity", target=0.5).threshold == 0.8


def test_choose_threshold_clips_infinite_threshold():
    # An uninformative model: J is 0 everywhere and roc_curve's first threshold (inf) wins.
    choice = choose_threshold([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    assert choice.threshold == 1.0 and math.isfinite(choice.threshold)
    assert (choice.sensitivity, choice.specificity) == (0.0, 1.0)
    # Positives scored 1.0: the threshold 1.0 keeps them positive.
    choice = choose_threshold([0, 0, 1, 1], [0.2, 0.9, 1.0, 1.0])
    assert (choice.threshold, choice.sensitivity, choice.specificity) == (1.0, 1.0, 1.0)


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="one class"):
        choose_threshold([1, 1, 1], [0.2, 0.4, 0.9])
    with pytest.raises(ValueError, match="youden"):
        choose_threshold([0, 1], [0.2, 0.9], method="f1")
    with pytest.raises(ValueError, match="0/1"):
        choose_threshold(["a", "b"], [0.2, 0.9])


def test_metrics_by_slice():
    y, P, classes = _binary_data(300, seed=4)
    rng = np.random.default_rng(5)
    sex = rng.choice(np.array(["F", "M"], dtype=object), size=300)
    sex[:12] = None
    sex[12:20] = "X"
    report = metrics_by_slice(y, P, sex, classes, positive="mel", threshold=0.4, min_size=15, name="sex")
    assert set(report.slices) == {"F", "M"}
    assert report.too_small == {"X": 8, "missing": 12}
    for value, m in report.slices.items():
        mask = sex == value
        expected = classification_metrics(y[mask], P[mask], classes, positive="mel", threshold=0.4)
        assert m == expected
    json.dumps(to_json_dict(report), allow_nan=False)


def test_age_and_quantile_bands():
    ages = [12, 29.9, 30, 49, 49.5, 50, 69, 70, 95, float("nan")]
    assert age_bands(ages).tolist() == [
        "<30",
        "<30",
        "30-49",
        "30-49",
        "30-49",
        "50-69",
        "50-69",
        "70+",
        "70+",
        "missing",
    ]
    assert age_bands([17, 18, 65], edges=(18, 65)).tolist() == ["<18", "18-64", "65+"]
    bands = quantile_bands(np.arange(1, 9), n_bands=4)
    assert bands.tolist() == [
        "Q1 [1, 2.75)",
        "Q1 [1, 2.75)",
        "Q2 [2.75, 4.5)",
        "Q2 [2.75, 4.5)",
        "Q3 [4.5, 6.25)",
        "Q3 [4.5, 6.25)",
        "Q4 [6.25, 8]",
        "Q4 [6.25, 8]",
    ]
    assert quantile_bands([5, 5, 5, np.nan]).tolist() == ["Q1 [5, 5]"] * 3 + ["missing"]


def test_generation_metrics_by_hand():
    assert exact_match("  Paris ", "paris") == 1.0
    assert exact_match("New   York\n", "new york") == 1.0
    assert exact_match("Paris.", "paris") == 0.0  # punctuation is kept
    assert token_f1("the cat sat", "the cat sat down") == pytest.approx(2 * 0.75 / 1.75)
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # counts clip: a x1, b x1
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length([], [1, 2]) == 0
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides.
    assert rouge_l("The cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a b"): precision 2/2, recall 2/4.
    assert rouge_l("a b", "a x b y") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0
    g = generation_metrics(["Paris", "the cat sat"], ["paris", "the cat sat down"])
    assert g.n == 2 and g.exact_match == 0.5
    assert g.token_f1 == pytest.approx((1 + 6 / 7) / 2)
    assert g.rouge_l == pytest.approx((1 + 6 / 7) / 2)
    assert math.isnan(generation_metrics([], []).exact_match)


def test_perplexity():
    assert perplexity([2.0, 4.0], [2, 4]) == pytest.approx(math.e)
    assert perplexity(0.0, 10) == 1.0
    assert math.isnan(perplexity([], []))


def test_latency_and_cost():
    s = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert s.p50_s == pytest.approx(0.25) and s.p95_s == pytest.approx(0.385)
    assert s.predictions_per_s == pytest.approx(4.0) and s.mean_s == pytest.approx(0.25)
    assert latency_summary([0.1, 0.2, 0.3, 0.4], wall_seconds=0.5).predictions_per_s == pytest.approx(8.0)
    assert cost_per_1k(3.6, 10.0) == pytest.approx(0.1)  # $3.60/h at 10/s: 36,000 per hour
    assert math.isnan(cost_per_1k(3.6, 0.0))
    assert latency_summary([]).n == 0


def test_json_helpers():
    assert nan_to_none({"a": float("nan"), "b": [1.0, np.float64("inf")], "c": "x"}) == {
        "a": None,
        "b": [1.0, None],
        "c": "x",
    }
    out = to_json_dict({np.int64(1): np.array([np.float32(0.5), np.nan]), "k": (np.int32(3),)})
    assert out == {"1": [0.5, None], "k": [3]}
    assert type(out["k"][0]) is int
