"""The default gate on synthetic scores: a model that learned nothing cannot pass it, a model a simple
baseline beats cannot pass it, a good model passes; the permutation p-value separates the two; the
report carries the evidence (dropped bootstrap draws, DeLong's unit, string ages banded)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.data.records import Record
from tuneline.evaluation.report import build_report
from tuneline.stages.evaluate import ModelScores, prior_baseline

LABELS = ["a", "b", "c"]

CONFIG = """
run: {{name: gate-unit, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: data.jsonl}}]
eval:
  bootstrap_resamples: 300
  permutation_test: 200
{extra}
"""


def _cfg(tmp_path, extra: str = ""):
    return load_config(write_config(tmp_path, CONFIG.format(extra=extra)))


def _records(y, groups=None, metadata=None) -> list[Record]:
    out = []
    for i, label in enumerate(y):
        out.append(
            Record(
                id=f"r{i}",
                source=f"data.jsonl:{i + 1}",
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": f"q{i}"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": label}]},
                ],
                label=label,
                group=None if groups is None else groups[i],
                metadata=(metadata[i] if metadata else {}),
            )
        )
    return out


def _onehotish(y_idx, k, strength, rng, noise=1.0):
    logits = rng.normal(0, noise, (len(y_idx), k))
    logits[np.arange(len(y_idx)), y_idx] += strength
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def _scores(name, P, generated=None):
    return ModelScores(name, probabilities=P, generated=generated, latency=np.full(len(P), 0.01))


def _report(cfg, y, scored, train_y=None, groups=None, metadata=None):
    records = _records(y, groups, metadata)
    train = _records(train_y if train_y is not None else y)
    scored = dict(scored)
    scored = {
        **{k: v for k, v in scored.items() if k != "tuned"},
        "prior": prior_baseline("classification", LABELS, train, records, []),
        "tuned": scored["tuned"],
    }
    return build_report(cfg, "classification", LABELS, None, records, scored)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y_idx = rng.integers(0, 3, 300)
    y = [LABELS[i] for i in y_idx]
    return rng, y_idx, y


def test_a_collapsed_model_whose_roc_auc_improves_over_a_below_chance_base_fails(tmp_path, data):
    rng, y_idx, y = data
    # Base: worse than chance. Tuned: always predicts "a", but its scores rank class "b" well,
    # so one-vs-rest ROC-AUC "improves" a lot: the shuffled-label failure the issue found.
    base = _onehotish((y_idx + 1) % 3, 3, 0.7, rng)
    tuned = np.zeros((300, 3))
    tuned[:, 0] = 0.9
    tuned[:, 1] = 0.05 + 0.04 * (y_idx == 1) + rng.uniform(0, 0.005, 300)
    tuned[:, 2] = 1 - tuned[:, 0] - tuned[:, 1]
    report = _report(_cfg(tmp_path), y, {"base": _scores("base", base), "tuned": _scores("tuned", tuned)})
    roc = next(c for c in report["comparisons"] if c["a"] == "base" and c["metric"] == "roc_auc")
    assert roc["delta"] > 0.2 and roc["ci"][0] > 0  # the old default (roc_auc over base) would pass
    gate = report["gate"]
    assert report["primary"] == "balanced_accuracy"
    assert not gate["passed"]
    failed = {r["rule"] for r in gate["rules"] if not r["passed"]}
    assert "sanity: predicts more than one class" in failed
    assert any(r.startswith("balanced_accuracy improves over") for r in failed)
    assert gate["against_rule"] == "strongest"
    assert gate["against"] in report["models"] and gate["against"] != "tuned"
    assert report["permutation"]["p_value"] > 0.2


def test_a_model_beaten_by_embedding_logreg_fails_and_the_report_says_so(tmp_path, data):
    rng, y_idx, y = data
    base = _onehotish(y_idx, 3, 0.3, rng)
    tuned = _onehotish(y_idx, 3, 1.5, rng)
    probe = _onehotish(y_idx, 3, 4.0, rng)
    report = _report(
        _cfg(tmp_path),
        y,
        {
            "base": _scores("base", base),
            "embedding_logreg": _scores("embedding_logreg", probe),
            "tuned": _scores("tuned", tuned),
        },
    )
    gate = report["gate"]
    assert not gate["passed"]
    assert gate["against"] == "embedding_logreg"  # the strongest model scored, not the base
    assert gate["comparison"]["a"] == "embedding_logreg"
    red = [b for b in report["beaten_by"] if b["model"] == "embedding_logreg"]
    assert {b["metric"] for b in red} == {"balanced_accuracy", "roc_auc"}
    assert all(b["significant"] and b["margin"] > 0 for b in red)
    assert "embedding_logreg beats the fine-tune on roc_auc by" in red[-1]["sentence"]
    assert "you may not need fine-tuning" in red[-1]["sentence"]
    # Tuned against the base alone would pass: the default compares against the strongest.
    base_cmp = next(
        c for c in report["comparisons"] if c["a"] == "base" and c["metric"] == "balanced_accuracy"
    )
    assert base_cmp["ci"][0] > 0


def test_a_good_model_passes_with_a_small_permutation_p_value(tmp_path, data):
    rng, y_idx, y = data
    base = _onehotish(y_idx, 3, 0.3, rng)
    tuned = _onehotish(y_idx, 3, 3.0, rng)
    report = _report(_cfg(tmp_path), y, {"base": _scores("base", base), "tuned": _scores("tuned", tuned)})
    gate = report["gate"]
    assert gate["passed"], gate
    assert gate["against"] == "base"
    assert report["permutation"]["p_value"] < 0.01
    assert report["permutation"]["n_permutations"] == 200
    assert report["beaten_by"] == []
    rules = {r["rule"] for r in gate["rules"]}
    assert "sanity: beats the prior baseline on balanced_accuracy" in rules
    assert "sanity: ROC-AUC's 95% CI lower bound above 0.5" in rules
    # Every CI says how many draws it dropped (here: none, every class is in every resample).
    assert report["models"]["tuned"]["ci_skipped"]["roc_auc"] == 0
    assert all("n_skipped" in c for c in report["comparisons"])


def test_random_models_are_refused_and_their_permutation_p_values_are_chance(tmp_path, data):
    """Models whose scores have nothing to do with the labels: the p-value is uniform under that null,
    so about 1 in 20 falls below 0.05; the gate, which also needs the CI against the strongest model,
    refuses them all."""
    rng, _, y = data
    cfg = _cfg(tmp_path)
    p_values, passed = [], 0
    for _ in range(10):
        base = _onehotish(rng.integers(0, 3, 300), 3, 0.3, rng)
        tuned = _onehotish(rng.integers(0, 3, 300), 3, 2.0, rng)  # confident, unrelated to the labels
        report = _report(cfg, y, {"base": _scores("base", base), "tuned": _scores("tuned", tuned)})
        p_values.append(report["permutation"]["p_value"])
        passed += report["gate"]["passed"]
    assert passed == 0
    assert sum(p < 0.05 for p in p_values) <= 3  # P(>= 4 of 10 | uniform) = 0.001
    assert 0.2 < float(np.median(p_values)) < 0.8


def test_sanity_rules_hold_even_under_a_permissive_custom_gate(tmp_path, data):
    rng, y_idx, y = data
    base = _onehotish((y_idx + 1) % 3, 3, 0.7, rng)
    tuned = np.tile([0.9, 0.06, 0.04], (300, 1))
    tuned[:, 1] += 0.01 * (y_idx == 1)
    tuned[:, 0] -= 0.01 * (y_idx == 1)
    cfg = _cfg(tmp_path, "  gate: {primary: roc_auc, against: base, ci_excludes_zero: false}")
    report = _report(cfg, y, {"base": _scores("base", base), "tuned": _scores("tuned", tuned)})
    gate = report["gate"]
    assert gate["rules"][0]["passed"]  # roc_auc does improve over the base...
    assert not gate["passed"]  # ...but it predicts one class and does not beat the prior
    cfg = _cfg(tmp_path, "  gate: {primary: roc_auc, against: base, ci_excludes_zero: false, sanity: false}")
    report = _report(cfg, y, {"base": _scores("base", base), "tuned": _scores("tuned", tuned)})
    assert report["gate"]["passed"]  # only a user who switches sanity off gets the old behaviour


def test_binary_grouped_bootstrap_counts_dropped_draws_and_states_delong_unit(tmp_path):
    rng = np.random.default_rng(1)
    n = 120
    groups = [f"p{i // 4}" for i in range(n)]
    y = ["neg"] * n
    for i in (3, 50, 97):  # three positives: many resamples hold none
        y[i] = "pos"
    y_idx = np.array([v == "pos" for v in y], dtype=int)
    tuned = _onehotish(y_idx, 2, 2.0, rng)
    base = _onehotish(y_idx, 2, 0.2, rng)
    records = _records(y, groups)
    labels = ["neg", "pos"]
    cfg = _cfg(tmp_path, "  positive_label: pos")
    scored = {
        "base": _scores("base", base),
        "prior": prior_baseline("classification", labels, records, records, []),
        "tuned": _scores("tuned", tuned),
    }
    report = build_report(cfg, "classification", labels, "pos", records, scored)
    skipped = report["models"]["tuned"]["ci_skipped"]["roc_auc"]
    assert 0 < skipped < 300
    assert report["delong"]["unit"] == "rows" and "cluster bootstrap" in report["delong"]["note"]
    assert report["permutation"]["unit"] == "groups of the same size"


def test_string_ages_are_banded_in_slices(tmp_path, data):
    rng, y_idx, y = data
    ages = [{"age_approx": str(float(20 + (i * 7) % 60)) if i % 10 else ""} for i in range(300)]
    cfg = _cfg(tmp_path, "  slices: [age_approx]\n  min_slice_size: 5")
    tuned = _onehotish(y_idx, 3, 3.0, rng)
    report = _report(cfg, y, {"tuned": _scores("tuned", tuned)}, metadata=ages)
    values = set(report["slices"]["age_approx"]["values"]) | set(report["slices"]["age_approx"]["too_small"])
    assert {"<30", "30-49", "50-69", "70+"} <= values and "missing" in values
    assert not any(v.replace(".", "").isdigit() for v in values)


def test_permutation_keeps_whole_groups_together():
    from tuneline.evaluation.stats import permutation_indices

    groups = np.array(["a", "a", "b", "b", "c", "c", "d"], dtype=object)
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = permutation_indices(len(groups), groups, rng)
        assert sorted(order) == list(range(7))
        assert order[6] == 6  # the only group of size 1 keeps its label
        for start in (0, 2, 4):  # each pair of rows takes its labels from one pair
            assert groups[order[start]] == groups[order[start + 1]]


def test_the_html_report_shows_red_lines_permutation_dropped_draws_and_delong_unit(tmp_path):
    from tuneline.evaluation.report_html import render_report

    rng = np.random.default_rng(2)
    n = 160
    groups = [f"p{i // 4}" for i in range(n)]
    y = ["pos" if i % 40 == 3 else "neg" for i in range(n)]  # 4 positives: resamples without any
    y_idx = np.array([v == "pos" for v in y], dtype=int)
    records = _records(y, groups)
    labels = ["neg", "pos"]
    scored = {
        "base": _scores("base", _onehotish(y_idx, 2, 0.2, rng)),
        "embedding_logreg": _scores("embedding_logreg", _onehotish(y_idx, 2, 6.0, rng, noise=0.3)),
        "prior": prior_baseline("classification", labels, records, records, []),
        "tuned": _scores("tuned", _onehotish(y_idx, 2, 1.0, rng)),
    }
    report = build_report(
        _cfg(tmp_path, "  positive_label: pos"), "classification", labels, "pos", records, scored
    )
    html = render_report(report, None)
    assert report["beaten_by"] and not report["gate"]["passed"]
    for beaten in report["beaten_by"]:
        assert beaten["sentence"] in html
    assert "Label-permutation test" in html and f"{report['permutation']['n_permutations']} times" in html
    assert "Bootstrap draws dropped because the metric was undefined" in html
    assert "cluster bootstrap" in html  # DeLong is row-level here, and the page says so


def test_the_run_summary_has_a_column_per_model_the_gate_reference_and_the_red_line(
    tmp_path, data, capsys, monkeypatch
):
    from tuneline.cli import print_summary
    from tuneline.stages.evaluate import _headline

    monkeypatch.setenv("COLUMNS", "200")
    rng, y_idx, y = data
    report = _report(
        _cfg(tmp_path),
        y,
        {
            "base": _scores("base", _onehotish(y_idx, 3, 0.3, rng)),
            "embedding_logreg": _scores("embedding_logreg", _onehotish(y_idx, 3, 4.0, rng)),
            "tuned": _scores("tuned", _onehotish(y_idx, 3, 1.5, rng)),
        },
    )
    ev = {name: _headline(report, name) for name in report["models"]}
    ev.update(
        task="classification",
        split="test",
        primary=report["primary"],
        gate=report["gate"],
        models=list(report["models"]),
        beaten_by=report["beaten_by"],
        permutation=report["permutation"],
    )
    print_summary({"data": {"counts": {"train": 1, "val": 1, "test": 300}}, "eval": ev, "run_dir": "r"})
    text = " ".join(capsys.readouterr().out.split())
    header = text.split("┡")[0]  # the table's header row
    for name in ("prior", "base", "embedding_logreg", "tuned"):
        assert name in header
    assert "gate vs embedding_logreg (strongest scored)" in text and "FAILED" in text
    delta = report["gate"]["comparison"]["delta"]
    assert f"Δ {delta:+.3f}" in text
    assert "embedding_logreg beats the fine-tune on balanced_accuracy by" in text
    assert "you may not need fine-tuning" in text
    assert "answer-token loss" not in text or "not the gate metric" in text
