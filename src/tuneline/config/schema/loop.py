"""The loop section: production traffic and feedback become the next dataset version (`tuneline loop`).

Also ``serve.loop`` (:class:`ServeLoopConfig`): whether the server keeps request inputs for it (opt-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tuneline.config.schema.base import PATH_FIELD, Section

STRATEGIES = ("uncertainty", "margin", "entropy", "disagreement", "drift", "random")
Strategy = Literal["uncertainty", "margin", "entropy", "disagreement", "drift", "random"]
DIVERSE_STRATEGIES = ("uncertainty", "margin", "entropy", "disagreement")


class ServeLoopConfig(Section):
    keep_inputs: bool = Field(
        False,
        description="Opt-in: store each answered request's inputs (images and text, content-addressed under "
        "serve.state_dir/inputs) so `tuneline loop collect` can turn them into training data. Off: nothing "
        "of a request's content is written to disk.",
    )
    retention_days: float = Field(
        30.0, gt=0, description="Kept inputs older than this are deleted (checked as the server writes)."
    )
    redact_pii: bool = Field(
        True,
        description="Replace emails, phone numbers, cards, IBANs and national ids in kept text with [KIND] "
        "(the detector data validation uses) before anything is written.",
    )


class LoopDecisionConfig(Section):
    rule: Literal["non_inferior", "superior"] = Field(
        "non_inferior",
        description="Promote the challenger when its online feedback accuracy is non-inferior (the 95% CI of "
        "challenger - champion lies above -margin) or superior (the CI lies above 0).",
    )
    margin: float = Field(0.05, ge=0, lt=1, description="Non-inferiority margin on feedback accuracy.")
    min_feedback: int = Field(
        30, ge=1, description="Feedback answers per variant needed before any decision; fewer: wait."
    )
    max_error_rate_increase: float = Field(
        0.01, ge=0, description="Roll back when the challenger's error rate exceeds the champion's by this."
    )
    max_latency_ratio: float = Field(
        2.0,
        gt=1,
        description="Roll back when the challenger's p95 latency is above this times the champion's.",
    )


class LoopConfig(Section):
    state_dir: Annotated[
        Path,
        Field(
            description="Folder of the loop's state: the candidate pool, the labelling tasks, imported "
            "labels, new dataset versions and the step markers of `tuneline loop run`.",
            json_schema_extra=PATH_FIELD,
        ),
    ] = Path(".tuneline/loop")
    strategy: Strategy = Field(
        "uncertainty",
        description="Which requests to send for labelling: uncertainty (lowest top probability), margin "
        "(smallest gap between the top two), entropy, disagreement (champion vs challenger), drift "
        "(farthest from the training profile) or random.",
    )
    budget: int = Field(100, ge=1, description="Requests selected for labelling per round.")
    diversity: Literal["cluster", "none"] = Field(
        "cluster",
        description="Batch diversity for uncertainty, margin, entropy and disagreement: cluster (k-means, "
        "seeded, the diversity_factor x budget best-scored candidates into budget clusters on the "
        "candidates' image or text statistics; the best-scored of each is taken, so one batch is not spent "
        "on copies of one confusion) or none (plain best first). Without features: best first.",
    )
    diversity_factor: int = Field(
        5, ge=1, le=50, description="loop.diversity: cluster clusters this many x budget best candidates."
    )
    min_labels: int = Field(
        10, ge=1, description="`loop run` retrains only when at least this many new labels are present."
    )
    holdout_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the new labels held out of training: the challenger and the champion are both "
        "evaluated on it.",
    )
    warm_start: bool = Field(
        True, description="Start from the champion's adapter weights (false: train from the base)."
    )
    max_regression: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="The challenger's accuracy on the frozen test split may be at most this much below the "
        "champion's; more fails the loop's gate.",
    )
    canary_weight: float = Field(
        10.0,
        gt=0,
        lt=100,
        description="Percent of users sent to the challenger while it is a canary (serve.traffic "
        "{champion: 100 - w, challenger: w}).",
    )
    decision: LoopDecisionConfig = Field(
        default_factory=LoopDecisionConfig, description="When `tuneline loop decide` promotes or rolls back."
    )
    since_hours: float | None = Field(
        None, gt=0, description="Collect only requests of the last N hours (default: all not yet collected)."
    )

    @model_validator(mode="after")
    def _budget(self) -> LoopConfig:
        if self.min_labels > self.budget:
            raise ValueError(
                f"loop.min_labels ({self.min_labels}) is above loop.budget ({self.budget}): a round could "
                "never collect enough labels; lower min_labels or raise budget"
            )
        return self
