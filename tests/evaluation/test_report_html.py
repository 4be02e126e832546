"""The evaluation report page: self-contained, every section present, robust to gaps in the report.

The reports here are built the way the evaluation stage builds them (metrics, bootstrap CIs and
paired comparisons from :mod:`tuneline.evaluation.metrics` and :mod:`~tuneline.evaluation.stats`)
on synthetic probabilities, with a matching predictions.parquet.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneline.evaluation import metrics as M
from tuneline.evaluation import stats as S
from tuneline.evaluation.report_html import render_report

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
BOOT = {"n_resamples": 60, "seed": 0}


# --------------------------------------------------------------------------------------------------
# synthetic evaluations


def _probabilities(rng, y_idx: np.ndarray, k: int, signal: float, temperature: float = 1.0) -> np.ndarray:
    logits = rng.normal(0.0, 1.0, (len(y_idx), k))
    logits[np.arange(len(y_idx)), y_idx] += signal
    logits /= temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _classification_example(
    tmp_path: Path,
    labels: list[str],
    signals: dict[str, float],
    *,
    positive: str | None,
    n: int = 360,
    groups: bool = True,
    slices: dict[str, list[str]] | None = None,
    gate_against: str = "base",
    seed: int = 0,
) -> tuple[dict, Path]:
    rng = np.random.default_rng(seed)
    k = len(labels)
    binary = k == 2
    weights = np.array([0.72, 0.28]) if binary else np.linspace(1.5, 0.6, k) / np.linspace(1.5, 0.6, k).sum()
    y_idx = rng.choice(k, size=n, p=weights)
    y = np.array([labels[i] for i in y_idx], dtype=object)
    patient = np.array([f"patient-{i // 3:04d}" for i in range(n)], dtype=object) if groups else None
    meta = {c: np.array([rng.choice(v) for _ in range(n)], dtype=object) for c, v in (slices or {}).items()}
    temperatures = {"base": 2.2, "few_shot": 1.6}
    probs = {m: _probabilities(rng, y_idx, k, s, temperatures.get(m, 1.0)) for m, s in signals.items()}

    report: dict = {
        "task": "classification",
        "split": "test",
        "n": n,
        "labels": labels,
        "positive": positive,
        "grouped_by": "group" if groups else None,
        "splits": {"evaluated": "test", "threshold": "val" if binary else None},
        "models": {},
        "comparisons": [],
        "slices": {},
        "threshold": None,
        "gate": None,
    }
    thresholds: dict[str, float | None] = {}
    latency = {"tuned": 0.041, "base": 0.038, "few_shot": 0.19, "embedding_logreg": 0.004}
    for name, P in probs.items():
        threshold, choice = None, None
        if binary:
            val_idx = rng.choice(2, size=200, p=weights)
            pv = _probabilities(rng, val_idx, 2, signals[name], temperatures.get(name, 1.0))
            choice = M.choose_threshold(
                (val_idx == labels.index(positive)).astype(int), pv[:, labels.index(positive)]
            )
            threshold = choice.threshold
        thresholds[name] = threshold
        t = 0.5 if threshold is None else threshold
        m = M.classification_metrics(y, P, labels, positive=positive, threshold=t)
        ci = S.bootstrap_metrics(y, P, labels, positive=positive, threshold=t, groups=patient, **BOOT)
        metrics = m.headline()
        metrics["sensitivity"] = metrics["recall"]
        lat = M.latency_summary(rng.gamma(8.0, latency.get(name, 0.05) / 8.0, n))
        report["models"][name] = M.nan_to_none(
            {
                "metrics": metrics,
                "ci": {key: [v.low, v.high] for key, v in ci.items()},
                "ci_unit": next(iter(ci.values())).unit,
                "threshold": threshold,
                "threshold_choice": M.to_json_dict(choice) if choice else None,
                "invalid_label_rate": None if name == "embedding_logreg" else float(rng.uniform(0, 0.04)),
                "confusion_matrix": [list(row) for row in m.confusion_matrix],
                "class_counts": M.to_json_dict(m.class_counts),
                "latency": M.to_json_dict(lat),
                "cost_per_1k": M.nan_to_none(M.cost_per_1k(2.5, lat.predictions_per_s)),
            }
        )
    for name, P in probs.items():
        if name == "tuned":
            continue
        paired = S.paired_bootstrap_metrics(
            y,
            P,
            probs["tuned"],
            labels,
            positive=positive,
            threshold_a=0.5 if thresholds[name] is None else thresholds[name],
            threshold_b=0.5 if thresholds["tuned"] is None else thresholds["tuned"],
            groups=patient,
            **BOOT,
        )
        for metric, c in paired.items():
            report["comparisons"].append(
                M.nan_to_none(
                    {
                        "a": name,
                        "b": "tuned",
                        "metric": metric,
                        "value_a": c.metric_a,
                        "value_b": c.metric_b,
                        "delta": c.delta,
                        "ci": [c.low, c.high],
                        "p_value": c.p_value,
                        "method": "paired bootstrap",
                        "unit": c.unit,
                    }
                )
            )
        if binary:
            pos = labels.index(positive)
            d = S.delong_test((y == positive).astype(int), P[:, pos], probs["tuned"][:, pos])
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
                    }
                )
            )
    for column, values in meta.items():
        entry: dict = {"values": {}, "too_small": {}}
        for name, P in probs.items():
            t = 0.5 if thresholds[name] is None else thresholds[name]
            sm = M.metrics_by_slice(
                y, P, values, labels, positive=positive, threshold=t, min_size=25, name=column
            )
            for value, met in sm.slices.items():
                entry["values"].setdefault(value, {})[name] = M.nan_to_none({"n": met.n, **met.headline()})
            entry["too_small"] = dict(sm.too_small)
        report["slices"][column] = entry
    if binary:
        report["threshold"] = {
            "method": "youden",
            "target_sensitivity": None,
            "split": "val",
            "per_model": thresholds,
        }
    primary = "roc_auc"
    report["primary"] = primary
    report["not_beaten"] = [
        c["a"]
        for c in report["comparisons"]
        if c["metric"] == primary and c["method"] == "paired bootstrap" and not (c["delta"] or 0) > 0
    ]
    gate_c = next(
        c
        for c in report["comparisons"]
        if c["a"] == gate_against and c["metric"] == primary and c["method"] == "paired bootstrap"
    )
    gain_ok = gate_c["delta"] is not None and gate_c["delta"] > 0
    ci_ok = gate_c["ci"][0] is not None and gate_c["ci"][0] > 0
    spec = report["models"]["tuned"]["metrics"]["specificity"]
    report["gate"] = {
        "passed": gain_ok and ci_ok and spec >= 0.5,
        "primary": primary,
        "against": gate_against,
        "rules": [
            {
                "rule": f"{primary} improves over {gate_against} by ≥ 0.0",
                "passed": gain_ok,
                "detail": f"improvement {gate_c['delta']:+.4f} (tuned − {gate_against})",
                "value": gate_c["delta"],
                "threshold": 0.0,
            },
            {
                "rule": "95% CI of the improvement excludes zero",
                "passed": ci_ok,
                "detail": f"CI of tuned − {gate_against}: [{gate_c['ci'][0]:+.4f}, {gate_c['ci'][1]:+.4f}]",
                "value": None,
                "threshold": None,
            },
            {
                "rule": "guard specificity ≥ 0.5",
                "passed": spec >= 0.5,
                "detail": f"tuned specificity = {spec:.4f}",
                "value": spec,
                "threshold": 0.5,
            },
        ],
    }

    rows = []
    for name, P in probs.items():
        t = thresholds[name]
        for i in range(n):
            row = {
                "record_id": f"rec-{i:05d}",
                "group": patient[i] if patient is not None else None,
                "split": "test",
                "model": name,
                "label": y[i],
                "generated": labels[int(np.argmax(P[i]))] if name != "embedding_logreg" else None,
                "latency_s": float(rng.gamma(8.0, latency.get(name, 0.05) / 8.0)),
            }
            for j, label in enumerate(labels):
                row[f"p_{label}"] = float(P[i, j])
            if binary:
                pos = labels.index(positive)
                row["prediction"] = labels[pos] if P[i, pos] >= t else labels[1 - pos]
            else:
                row["prediction"] = labels[int(np.argmax(P[i]))]
            row["threshold"] = t
            rows.append(row)
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return report, path


def binary_example(tmp_path: Path) -> tuple[dict, Path]:
    """Melanoma-like: 3 models, patients as groups, two slice columns; tuned beats base, not the logreg."""
    return _classification_example(
        tmp_path,
        ["benign", "malignant"],
        {"tuned": 1.55, "base": 0.55, "embedding_logreg": 1.9},
        positive="malignant",
        slices={"sex": ["female", "male"], "site": ["back", "face", "arm", "leg", "scalp"] + ["palm"] * 0},
    )


def multiclass_example(tmp_path: Path) -> tuple[dict, Path]:
    return _classification_example(
        tmp_path,
        ["circle", "square", "triangle", "star"],
        {"tuned": 2.2, "base": 0.6, "few_shot": 1.2},
        positive=None,
        groups=False,
        slices={"colour": ["red", "green", "blue"]},
        seed=1,
    )


def generation_example() -> dict:
    models = {}
    for name, em in (("tuned", 0.62), ("base", 0.21)):
        models[name] = {
            "metrics": {
                "exact_match": em,
                "token_f1": em + 0.12,
                "rouge_l": em + 0.1,
                "perplexity": 3.4 if name == "tuned" else 11.8,
                "accuracy": em,
            },
            "ci": {
                "exact_match": [em - 0.05, em + 0.05],
                "token_f1": [em + 0.07, em + 0.17],
                "rouge_l": None,
            },
            "threshold": None,
            "latency": {"n": 200, "p50_s": 0.31, "p95_s": 0.62, "mean_s": 0.35, "predictions_per_s": 2.8},
            "cost_per_1k": None,
            "loss": 1.22 if name == "tuned" else 2.47,
        }
    return {
        "task": "generation",
        "split": "test",
        "n": 200,
        "labels": [],
        "positive": None,
        "primary": "exact_match",
        "grouped_by": None,
        "splits": {"evaluated": "test", "threshold": None},
        "models": models,
        "comparisons": [
            {
                "a": "base",
                "b": "tuned",
                "metric": metric,
                "value_a": 0.21,
                "value_b": 0.62,
                "delta": 0.41,
                "ci": [0.33, 0.49],
                "p_value": 0.0005,
                "method": "paired bootstrap",
                "unit": "rows",
            }
            for metric in ("exact_match", "token_f1", "rouge_l")
        ],
        "slices": {},
        "threshold": None,
        "gate": {
            "passed": True,
            "primary": "exact_match",
            "against": "base",
            "rules": [
                {
                    "rule": "exact_match improves over base by ≥ 0.0",
                    "passed": True,
                    "detail": "improvement +0.4100",
                    "value": 0.41,
                    "threshold": 0.0,
                }
            ],
        },
        "not_beaten": [],
    }


# --------------------------------------------------------------------------------------------------
# checks


def assert_self_contained(html: str) -> None:
    """No resource is fetched: no external src/href, no <script src>, <link href>, @import or url(http)."""
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", html, re.I)
    assert not re.search(r"<img[^>]*\bsrc\s*=\s*[\"']?https?:", html, re.I)
    assert not re.search(r"\b(?:src|href|xlink:href)\s*=\s*[\"']?(?:https?:)?//", html, re.I)
    assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", html, re.I)
    assert "@import" not in html
    # The only absolute URLs allowed are SVG namespace declarations.
    without_xmlns = re.sub(r'\sxmlns(?::\w+)?="[^"]*"', "", html)
    assert "http://" not in without_xmlns and "https://" not in without_xmlns
    assert "<!DOCTYPE svg" not in html and "<?xml" not in html


def _figure(html: str, fid: str) -> str:
    m = re.search(rf'<figure id="{fid}">(.*?)</figure>', html, re.S)
    assert m, f"no figure {fid}"
    return m.group(1)


def _confusion_svgs(html: str) -> list[str]:
    return re.findall(r'<figure class="confusion"[^>]*>.*?<svg.*?</figure>', html, re.S)


def _ids_unique(html: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', html)
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, sorted(dupes)[:10]
    for ref in set(re.findall(r'(?:href="#|url\(#)([^")]+)', html)):
        assert ref in ids, ref


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("binary")
    report, path = binary_example(tmp)
    return report, path, render_report(report, path)


def test_binary_page_is_self_contained_with_every_plot(binary):
    report, _, html = binary
    assert html.startswith("<!DOCTYPE html>")
    assert_self_contained(html)
    _ids_unique(html)
    for fid in ("roc", "pr", "calibration"):
        assert "<svg" in _figure(html, fid)
    assert "roc-per-class" not in html  # multiclass only
    assert len(_confusion_svgs(html)) == 3
    for model in ("tuned", "base", "embedding_logreg"):
        assert model in html


def test_binary_verdict_rules_and_not_beaten_sentence(binary):
    report, _, html = binary
    assert report["gate"]["passed"] is True
    assert report["not_beaten"] == ["embedding_logreg"]
    assert "Gate PASSED" in html and "Gate FAILED" not in html
    for rule in report["gate"]["rules"]:
        assert str(rule["rule"]).replace("≥", "&ge;") in html or rule["rule"] in html
    assert "Fine-tuning did not beat embedding_logreg on roc_auc" in html
    assert "The tuned model is ahead of base on roc_auc" in html


def test_binary_tables_ci_unit_comparisons_slices_threshold(binary):
    report, _, html = binary
    metrics = re.search(r'<table id="metrics-table">.*?</table>', html, re.S).group(0)
    auc = report["models"]["tuned"]["metrics"]["roc_auc"]
    low, high = report["models"]["tuned"]["ci"]["roc_auc"]
    assert f"{auc:.3f}" in metrics and f"{low:.3f}–{high:.3f}" in metrics
    assert "CIs resample patients (groups)" in html
    assert metrics.count("<tr") == 1 + 3  # header + one row per model
    comparisons = re.search(r'<table id="comparisons-table">.*?</table>', html, re.S).group(0)
    assert "tuned &minus; base" in comparisons and "tuned &minus; embedding_logreg" in comparisons
    assert "delong" in comparisons and "paired bootstrap" in comparisons
    c = next(x for x in report["comparisons"] if x["a"] == "base" and x["metric"] == "roc_auc")
    assert f"{c['delta']:+.3f}".replace("-", "−") in comparisons
    # slices: both columns, each value, and the too-small list
    assert "By <code>sex</code>" in html and "By <code>site</code>" in html
    for value in report["slices"]["site"]["values"]:
        assert f'class="sval">{value}</td>' in html
    # threshold section: method, split, per-model values from threshold_choice
    threshold = re.search(r'<table id="threshold-table">.*?</table>', html, re.S).group(0)
    assert "Youden" in html and "<b>val</b>" in html
    choice = report["models"]["tuned"]["threshold_choice"]
    assert f"{choice['threshold']:.3f}" in threshold and f"{choice['sensitivity']:.3f}" in threshold


def test_binary_too_small_slices_are_listed(tmp_path):
    report, path = binary_example(tmp_path)
    report["slices"]["site"]["too_small"] = {"scalp": 7, "palm": 2}
    html = render_report(report, path)
    assert "Too small to score" in html and "<code>palm</code> (n = 2)" in html


def test_failed_gate_and_escaping(tmp_path):
    report, path = binary_example(tmp_path)
    report["gate"]["passed"] = False
    report["gate"]["rules"][1]["passed"] = False
    report["gate"]["rules"][1]["detail"] = "<script>alert(1)</script> & more"
    html = render_report(report, path)
    assert "Gate FAILED" in html and "Gate PASSED" not in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_multiclass_page(tmp_path):
    report, path = multiclass_example(tmp_path)
    html = render_report(report, path)
    assert_self_contained(html)
    _ids_unique(html)
    for fid in ("roc", "pr", "calibration", "roc-per-class"):
        assert "<svg" in _figure(html, fid)
    assert "micro-averaged" in html
    assert len(_confusion_svgs(html)) == 3
    assert 'id="threshold"' not in html  # no threshold for multiclass
    assert "CIs resample records (rows)" in html
    for model in ("tuned", "base", "few_shot"):
        assert model in html


def test_generation_page_has_tables_and_no_plots():
    report = generation_example()
    html = render_report(report, Path("/nonexistent/predictions.parquet"))
    assert_self_contained(html)
    assert '<svg class="plot"' not in html and 'id="curves"' not in html
    assert "Gate PASSED" in html
    for metric in ("Exact match", "Token F1", "ROUGE-L", "Perplexity"):
        assert metric in html
    assert "0.620" in html and "3.40" in html
    assert "tuned &minus; base" in html
    assert "CI –" in html  # rouge_l has a null CI


def test_missing_metrics_null_cis_and_single_model(tmp_path):
    report, path = binary_example(tmp_path)
    single = copy.deepcopy(report)
    single["models"] = {"tuned": single["models"]["tuned"]}
    single["comparisons"] = []
    single["not_beaten"] = []
    single["gate"] = None
    single["slices"] = {
        c: {"values": {v: {"tuned": e["tuned"]} for v, e in s["values"].items()}, "too_small": {}}
        for c, s in single["slices"].items()
    }
    del single["models"]["tuned"]["metrics"]["pr_auc"]
    single["models"]["tuned"]["ci"] = {"roc_auc": None, "accuracy": [None, None]}
    single["models"]["tuned"]["metrics"]["ece"] = None
    single["models"]["tuned"]["latency"] = None
    single["models"]["tuned"]["threshold_choice"] = None
    html = render_report(single, path)
    assert_self_contained(html)
    assert "No gate was checked" in html
    assert 'id="comparisons"' not in html
    assert "<svg" in _figure(html, "roc")
    assert "–" in html and not re.search(r"\bnan\b", html, re.I)


def test_predictions_missing_or_without_probabilities(tmp_path):
    report, path = binary_example(tmp_path)
    html = render_report(report, tmp_path / "absent.parquet")
    assert "absent.parquet was not found" in html
    assert 'id="roc"' not in html
    assert len(_confusion_svgs(html)) == 3  # from report.json
    table = pq.read_table(path).drop_columns(["p_benign", "p_malignant"])
    pq.write_table(table, tmp_path / "noprob.parquet")
    html = render_report(report, tmp_path / "noprob.parquet")
    assert "no probability column" in html and 'id="roc"' not in html


def test_nan_values_render_as_dash(tmp_path):
    report, path = binary_example(tmp_path)
    report["models"]["base"]["metrics"]["roc_auc"] = math.nan
    report["models"]["base"]["cost_per_1k"] = None
    html = render_report(report, path)
    row = re.search(
        r'<tr class="">\s*<td class="model"><span class="sw"[^>]*></span>base.*?</tr>', html, re.S
    )
    assert row and "–" in row.group(0) and not re.search(r"\bnan\b", row.group(0), re.I)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="chromium is not installed",
)
@pytest.mark.integration
def test_screenshot_of_binary_report(tmp_path):
    report, path = binary_example(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(render_report(report, path), encoding="utf-8")
    out = tmp_path / "shot.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--html",
            str(page),
            "--out",
            str(out),
            "--height",
            "3600",
            "--chromium",
            chromium,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.stat().st_size > 20_000
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] == 1280
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 8  # not a blank page
