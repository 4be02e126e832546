"""The eval section: the task, thresholds, the gate and its guards, baselines, the memorisation audit."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.metric_names import MetricName
from tuneline.config.schema.base import Section


class ThresholdConfig(Section):
    method: Literal["youden", "sensitivity", "fixed"] = Field(
        "youden",
        description="How the binary decision threshold is chosen on the val split (then applied unchanged "
        "to the evaluated split): youden (max sensitivity + specificity - 1), sensitivity (the highest "
        "threshold reaching target_sensitivity), fixed (value).",
    )
    target_sensitivity: float = Field(0.9, gt=0, le=1, description="For method: sensitivity.")
    value: float = Field(0.5, gt=0, lt=1, description="For method: fixed.")


class GuardRule(Section):
    metric: Literal[MetricName, "dp_epsilon"] = Field(
        ...,
        description="Metric of the tuned model to bound; dp_epsilon: the epsilon its differentially private "
        "training spent (train.privacy.dp; undefined, so failing, for a model trained without DP).",
    )
    min: float | None = Field(None, description="Fail when the metric is below this.")
    max: float | None = Field(None, description="Fail when the metric is above this.")

    @model_validator(mode="after")
    def _bounded(self) -> GuardRule:
        if self.min is None and self.max is None:
            raise ValueError(f"guard on {self.metric} needs min or max")
        return self


class GateConfig(Section):
    enabled: bool = Field(
        True, description="Check the gate; `tuneline evaluate` and `tuneline run` exit 7 when it fails."
    )
    primary: MetricName | None = Field(
        None,
        description="Metric the tuned model must improve (default: balanced_accuracy for classification, "
        "which a model predicting one class for everything cannot game; exact_match for generation).",
    )
    against: str = Field(
        "strongest",
        description="Model to beat: strongest (the best of every model scored on primary: base, prior, "
        "embedding_logreg, few_shot), or one of them by name.",
    )
    min_improvement: float = Field(
        0.0, description="Required improvement of primary over `against` (in the metric's units)."
    )
    ci_excludes_zero: bool = Field(
        True, description="The paired 95% CI of the improvement must exclude zero."
    )
    sanity: bool = Field(
        True,
        description="Checks a model that learned nothing cannot pass, whatever primary and against say: "
        "it predicts more than one class when the split has several; it beats the prior baseline "
        "(CI above zero); its ROC-AUC's CI lower bound is above 0.5 and it is not significantly below "
        "any model scored on ROC-AUC; the label-permutation p-value (eval.permutation_test) is below 0.05.",
    )
    guards: list[GuardRule] = Field(
        default_factory=list, description="Floors and ceilings, e.g. {metric: specificity, min: 0.5}."
    )


class BaselinesConfig(Section):
    few_shot: int = Field(
        0, ge=0, description="The base model with this many solved training examples in the prompt (0: off)."
    )
    embedding_logreg: bool = Field(
        True,
        description="Logistic regression on the base model's frozen prompt embeddings (classification).",
    )


class AuditConfig(Section):
    canaries: int = Field(
        0,
        ge=0,
        le=1000,
        description="Memorisation audit: plant this many secret-sharer canaries (a random digit string in a "
        "fixed template) into training only, and report their exposure after training (0: off).",
    )
    candidates: int = Field(
        99,
        ge=9,
        le=100_000,
        description="Random candidates each canary's secret is ranked against (exposure).",
    )
    digits: int = Field(6, ge=4, le=16, description="Digits of each canary's secret.")

    @model_validator(mode="after")
    def _room_for_candidates(self) -> AuditConfig:
        if self.candidates >= 10**self.digits:
            raise ValueError(
                f"eval.audit.candidates {self.candidates} needs more distinct {self.digits}-digit strings "
                f"than exist ({10**self.digits} with the secret); raise eval.audit.digits or lower candidates"
            )
        return self


class EvalConfig(Section):
    split: Literal["test", "val"] = Field("test", description="Split to evaluate on.")
    task: Literal["auto", "classification", "generation"] = Field(
        "auto",
        description="classification: a probability per label from the model's log-probabilities; "
        "generation: exact match, token F1, ROUGE-L, perplexity. auto: classification when the records "
        "carry labels (or eval.labels is set), else generation.",
    )
    labels: list[str] | None = Field(
        None, description="The classes (answer texts). Default: the labels of the training split."
    )
    positive_label: str | None = Field(
        None, description="Binary tasks: the positive class (default: the rarer class in training)."
    )
    threshold: ThresholdConfig = Field(
        default_factory=ThresholdConfig, description="Binary decision threshold, chosen on val."
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="Bootstrap resamples for 95% CIs (groups resampled when present)."
    )
    slices: list[str] = Field(
        default_factory=list,
        description="Metadata columns to report metrics by (e.g. sex, anatom_site_general_challenge, "
        "age_approx: numbers become age bands).",
    )
    min_slice_size: int = Field(20, gt=0, description="Slices smaller than this are listed, not scored.")
    baselines: BaselinesConfig = Field(
        default_factory=BaselinesConfig,
        description="Reference models (the prior baseline, training class frequencies for every record, "
        "is always scored: it costs nothing).",
    )
    permutation_test: int = Field(
        200,
        ge=0,
        description="Label permutations for the tuned model's chance p-value on primary (test labels "
        "permuted between groups of the same size when records have groups; 0: off).",
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="What the tuned model must show.")
    compare_base: bool = Field(
        True, description="Also evaluate the base model, side by side with the tuned one."
    )
    max_new_tokens: int = Field(16, gt=0, description="Generation budget for each answer.")
    batch_size: int = Field(16, gt=0, description="Samples per forward pass.")
    max_samples: int | None = Field(
        None, gt=0, description="Evaluate at most this many records (all when unset)."
    )
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Memorisation audit (canaries).")

    @model_validator(mode="after")
    def _gate_has_a_reference(self) -> EvalConfig:
        if self.gate.enabled and self.gate.against == "base" and not self.compare_base:
            raise ValueError(
                "eval.gate compares the tuned model against the base model, but eval.compare_base is "
                "false; set eval.gate.against to a baseline, or eval.gate.enabled: false"
            )
        known = {"strongest", "base", "prior", "few_shot", "embedding_logreg"}
        if self.gate.against not in known:
            raise ValueError(f"eval.gate.against must be one of {sorted(known)}, got {self.gate.against!r}")
        if self.gate.against == "few_shot" and not self.baselines.few_shot:
            raise ValueError(
                "eval.gate.against is few_shot, but eval.baselines.few_shot is 0 (off); set it to the "
                "number of examples (e.g. 4), or compare against strongest"
            )
        if self.gate.against == "embedding_logreg" and not self.baselines.embedding_logreg:
            raise ValueError(
                "eval.gate.against is embedding_logreg, but eval.baselines.embedding_logreg is false; "
                "turn it on, or compare against strongest"
            )
        return self
