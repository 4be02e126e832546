"""The gate: what a tuned model must show before it may be promoted.

Rules (``eval.gate``):
- ``primary`` improves over ``against`` (the base model, or a baseline) by at least
  ``min_improvement``, in the metric's own direction (lower is better for log loss, Brier, ECE,
  perplexity, loss);
- with ``ci_excludes_zero``, the paired 95% CI of that improvement lies entirely on the good side of
  zero (a lucky draw of the test set is not an improvement);
- every guard holds on the tuned model (e.g. specificity ≥ 0.5).

A rule that cannot be evaluated (the reference model was not scored, the metric is undefined) fails:
the gate never passes by default. The result is written with the evaluation and read by the registry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tuneline.config.schema import LOWER_IS_BETTER, GateConfig


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

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "primary": self.primary,
            "against": self.against,
            "rules": [asdict(r) for r in self.rules],
        }


def _finite(x) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def evaluate_gate(
    gate: GateConfig,
    primary: str,
    tuned_metrics: dict[str, float],
    comparison: dict | None,
) -> GateResult:
    """``comparison``: the paired comparison of ``primary`` between ``against`` (a) and tuned (b):
    {"delta": b - a, "ci": [low, high], "p_value": ...}, or None when ``against`` was not scored."""
    sign = -1.0 if primary in LOWER_IS_BETTER else 1.0
    rules: list[RuleResult] = []
    if comparison is None or not _finite(comparison.get("delta")):
        rules.append(
            RuleResult(
                f"{primary} improves over {gate.against}",
                False,
                f"{gate.against} was not scored or {primary} is undefined; the gate cannot pass without it",
            )
        )
    else:
        gain = sign * comparison["delta"]
        rules.append(
            RuleResult(
                f"{primary} improves over {gate.against} by ≥ {gate.min_improvement}",
                gain >= gate.min_improvement,
                f"improvement {gain:+.4f} (tuned − {gate.against}, in the direction where better is "
                f"{'lower' if sign < 0 else 'higher'})",
                gain,
                gate.min_improvement,
            )
        )
        if gate.ci_excludes_zero:
            low, high = comparison["ci"]
            good_side = (sign * low > 0 and sign * high > 0) if _finite(low) and _finite(high) else False
            rules.append(
                RuleResult(
                    "95% CI of the improvement excludes zero",
                    good_side,
                    f"CI of tuned − {gate.against}: [{low:+.4f}, {high:+.4f}]"
                    if _finite(low) and _finite(high)
                    else "CI undefined",
                )
            )
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
    return GateResult(all(r.passed for r in rules), primary, gate.against, rules)
