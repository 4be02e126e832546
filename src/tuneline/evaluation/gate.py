"""The gate: what a tuned model must show before it may be promoted.

Rules (``eval.gate``):
- ``primary`` improves over ``against`` by at least ``min_improvement``, in the metric's own
  direction (lower is better for log loss, Brier, ECE, perplexity, loss). ``against: strongest`` (the
  default) is the best of every model scored on ``primary``: the base model, the prior baseline
  (always scored), ``embedding_logreg`` and ``few_shot`` when on;
- with ``ci_excludes_zero``, the paired 95% CI of that improvement lies entirely on the good side of
  zero (a lucky draw of the test set is not an improvement);
- with ``sanity`` (default), checks that a model which learned nothing cannot pass whatever the rules
  above say (found by training on shuffled labels: such a model predicts one class for everything, yet
  its ROC-AUC may "improve" over a below-chance base):
  it predicts more than one class when the split has several; it beats the prior baseline with the CI
  above zero; its ROC-AUC's CI lower bound is above 0.5, and no model scored is significantly above it
  on ROC-AUC; its label-permutation p-value (``eval.permutation_test``) is below 0.05;
- every guard holds on the tuned model (e.g. specificity ≥ 0.5).

The default primary for classification is balanced accuracy: a collapsed predictor scores exactly
1/K on it, where ROC-AUC can be gamed by any input-dependent score.

A rule that cannot be evaluated (the reference model was not scored, the metric is undefined) fails:
the gate never passes by default. The result is written with the evaluation and read by the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeGuard

from tuneline.config.schema import LOWER_IS_BETTER, GateConfig

PERMUTATION_ALPHA = 0.05


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class GateResult:
    passed: bool
    primary: str
    against: str
    rules: list[RuleResult]
    against_rule: str = ""  # what eval.gate.against said ("strongest" or a name)
    comparison: dict | None = None  # the paired comparison the decision used

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "primary": self.primary,
            "against": self.against,
            "against_rule": self.against_rule or self.against,
            "comparison": self.comparison,
            "rules": [asdict(r) for r in self.rules],
        }


@dataclass(frozen=True)
class GateEvidence:
    """What the evaluation measured, as the gate reads it (built by evaluation/report.py)."""

    task: str  # classification | generation
    models: Mapping[str, Mapping]  # report["models"]: name -> {"metrics", "ci", "confusion_matrix"}
    comparisons: Sequence[Mapping]  # report["comparisons"]: tuned (b) against each other model (a)
    tuned_metrics: Mapping[str, float | None]  # the tuned model's metrics (+ dp_epsilon under DP)
    permutation: Mapping | None = None  # {"metric", "p_value", "n_permutations"} or None
    order: Sequence[str] = field(default_factory=tuple)  # models in scoring order (ties: first wins)


def _finite(x: object) -> TypeGuard[float]:
    """A real, finite number (not a bool); narrows ``x`` to a number for the type checker."""
    return x is not None and isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def sign_of(metric: str) -> float:
    return -1.0 if metric in LOWER_IS_BETTER else 1.0


def find_comparison(comparisons: Sequence[Mapping], other: str, metric: str) -> Mapping | None:
    return next(
        (
            c
            for c in comparisons
            if c.get("a") == other and c.get("metric") == metric and c.get("method") == "paired bootstrap"
        ),
        None,
    )


def strongest(evidence: GateEvidence, primary: str) -> str | None:
    """The model other than the tuned one with the best ``primary`` (first in scoring order on ties)."""
    sign = sign_of(primary)
    best, best_value = None, -math.inf
    names = list(evidence.order) or list(evidence.models)
    for name in names:
        if name == "tuned" or name not in evidence.models:
            continue
        value = (evidence.models[name].get("metrics") or {}).get(primary)
        if _finite(value) and sign * value > best_value:
            best, best_value = name, sign * value
    return best


def _good_side(ci, sign: float) -> bool:
    if not ci or len(ci) != 2 or not (_finite(ci[0]) and _finite(ci[1])):
        return False
    return sign * ci[0] > 0 and sign * ci[1] > 0


def _ci_text(ci) -> str:
    if not ci or not (_finite(ci[0]) and _finite(ci[1])):
        return "CI undefined"
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def evaluate_gate(gate: GateConfig, primary: str, evidence: GateEvidence) -> GateResult:
    sign = sign_of(primary)
    against = strongest(evidence, primary) if gate.against == "strongest" else gate.against
    rules: list[RuleResult] = []
    comparison = find_comparison(evidence.comparisons, against, primary) if against else None
    if comparison is None or not _finite(comparison.get("delta")):
        rules.append(
            RuleResult(
                f"{primary} improves over {against or gate.against}",
                False,
                f"{against or 'no reference model'} was not scored or {primary} is undefined; "
                "the gate cannot pass without it",
            )
        )
    else:
        gain = sign * comparison["delta"]
        rules.append(
            RuleResult(
                f"{primary} improves over {against} by ≥ {gate.min_improvement}",
                gain >= gate.min_improvement and gain > 0,
                f"improvement {gain:+.4f} (tuned {comparison.get('value_b', math.nan):.4f} − {against} "
                f"{comparison.get('value_a', math.nan):.4f}, in the direction where better is "
                f"{'lower' if sign < 0 else 'higher'})"
                + (f"; {against} is the strongest model scored" if gate.against == "strongest" else ""),
                gain,
                gate.min_improvement,
            )
        )
        if gate.ci_excludes_zero:
            rules.append(
                RuleResult(
                    "95% CI of the improvement excludes zero",
                    _good_side(comparison.get("ci"), sign),
                    f"CI of tuned − {against}: {_ci_text(comparison.get('ci'))}",
                )
            )
    if gate.sanity:
        rules += _sanity(evidence, primary, against)
    rules += _guards(gate, evidence.tuned_metrics)
    return GateResult(
        all(r.passed for r in rules),
        primary,
        against or gate.against,
        rules,
        against_rule=gate.against,
        comparison=dict(comparison) if comparison is not None else None,
    )


def _sanity(evidence: GateEvidence, primary: str, against: str | None) -> list[RuleResult]:
    rules: list[RuleResult] = []
    sign = sign_of(primary)
    tuned = evidence.models.get("tuned") or {}
    if evidence.task == "classification":
        matrix = tuned.get("confusion_matrix") or []
        in_split = sum(1 for row in matrix if sum(row) > 0)
        predicted = sum(1 for j in range(len(matrix)) if sum(row[j] for row in matrix) > 0)
        if in_split >= 2:
            rules.append(
                RuleResult(
                    "sanity: predicts more than one class",
                    predicted >= 2,
                    f"the tuned model predicts {predicted} of the {in_split} classes in the split"
                    + (" (one answer for everything: it learned nothing usable)" if predicted < 2 else ""),
                    float(predicted),
                    2.0,
                )
            )
    if against != "prior":
        c = find_comparison(evidence.comparisons, "prior", primary)
        ok = (
            c is not None
            and _finite(c.get("delta"))
            and sign * c["delta"] > 0
            and _good_side(c.get("ci"), sign)
        )
        rules.append(
            RuleResult(
                f"sanity: beats the prior baseline on {primary}",
                ok,
                "the prior baseline was not scored"
                if c is None
                else f"tuned − prior: {c.get('delta') if c.get('delta') is not None else math.nan:+.4f}, "
                f"CI {_ci_text(c.get('ci'))}",
            )
        )
    if evidence.task == "classification":
        ci = (tuned.get("ci") or {}).get("roc_auc")
        low = ci[0] if ci else None
        rules.append(
            RuleResult(
                "sanity: ROC-AUC's 95% CI lower bound above 0.5",
                _finite(low) and low > 0.5,
                f"tuned ROC-AUC {(tuned.get('metrics') or {}).get('roc_auc')}, CI lower bound {low}"
                if _finite(low)
                else "ROC-AUC or its CI is undefined",
                low if _finite(low) else None,
                0.5,
            )
        )
        above = []
        for c in evidence.comparisons:
            if c.get("metric") != "roc_auc" or c.get("method") != "paired bootstrap" or c.get("a") == "prior":
                continue
            ci = c.get("ci") or [None, None]
            if _finite(ci[1]) and ci[1] < 0:
                above.append(f"{c['a']} by {-c['delta']:.4f} (CI of tuned − {c['a']}: {_ci_text(ci)})")
        rules.append(
            RuleResult(
                "sanity: no model scored is significantly above it on ROC-AUC",
                not above,
                "; ".join(above)
                if above
                else "every model's ROC-AUC is below or within the CI of the tuned one",
            )
        )
    perm = evidence.permutation
    if perm and _finite(perm.get("p_value")):
        rules.append(
            RuleResult(
                f"sanity: better than chance (label-permutation p < {PERMUTATION_ALPHA})",
                perm["p_value"] < PERMUTATION_ALPHA,
                f"p = {perm['p_value']:.4f} over {perm.get('n_permutations')} permutations "
                "of the test labels",
                perm["p_value"],
                PERMUTATION_ALPHA,
            )
        )
    return rules


def _guards(gate: GateConfig, tuned_metrics: Mapping) -> list[RuleResult]:
    rules: list[RuleResult] = []
    for guard in gate.guards:
        value = tuned_metrics.get(guard.metric)
        if not _finite(value):
            rules.append(RuleResult(f"guard {guard.metric}", False, f"{guard.metric} is undefined", None))
            continue
        ok = (guard.min is None or value >= guard.min) and (guard.max is None or value <= guard.max)
        bounds = " and ".join(
            b
            for b in (
                f"≥ {guard.min}" if guard.min is not None else "",
                f"≤ {guard.max}" if guard.max is not None else "",
            )
            if b
        )
        rules.append(
            RuleResult(
                f"guard {guard.metric} {bounds}",
                ok,
                f"tuned {guard.metric} = {value:.4f}",
                value,
                guard.min if guard.min is not None else guard.max,
            )
        )
    return rules


def beaten_by(comparisons: Sequence[Mapping], primary: str, task: str) -> list[dict]:
    """Every model whose point estimate beats the tuned one on ``primary`` (and on ROC-AUC for
    classification), with the margin and its CI as other − tuned: the report's red lines."""
    metrics = [primary] + (["roc_auc"] if task == "classification" and primary != "roc_auc" else [])
    out = []
    for metric in metrics:
        sign = sign_of(metric)
        for c in comparisons:
            if c.get("metric") != metric or c.get("method") != "paired bootstrap":
                continue
            delta = c.get("delta")  # tuned − other
            if not _finite(delta) or sign * delta >= 0:
                continue
            ci = c.get("ci") or [None, None]
            margin_ci = [-ci[1], -ci[0]] if _finite(ci[0]) and _finite(ci[1]) else [None, None]
            significant = _finite(margin_ci[0]) and sign * margin_ci[0] > 0
            out.append(
                {
                    "model": c["a"],
                    "metric": metric,
                    "margin": -delta,
                    "ci": margin_ci,
                    "significant": bool(significant),
                    "sentence": beaten_sentence(c["a"], metric, -delta, margin_ci, significant),
                }
            )
    return out


def beaten_sentence(model: str, metric: str, margin: float, ci, significant: bool) -> str:
    ci_text = f"95% CI {ci[0]:+.3f} to {ci[1]:+.3f}" if _finite(ci[0]) and _finite(ci[1]) else "CI undefined"
    tail = "you may not need fine-tuning" if model != "prior" else "the fine-tune is worse than guessing"
    if not significant:
        tail = "the CI includes zero, but " + tail
    return f"{model} beats the fine-tune on {metric} by {abs(margin):.3f} ({ci_text}): {tail}"
