"""The one list of metric names: what the evaluation stage computes and what a config may name.

Plain tuples, no runtime code: ``config`` validates gates, guards and sweeps against :data:`METRICS`;
``evaluation.metrics`` computes :data:`CLASSIFICATION` (its ``HEADLINE``, in report order) and
:data:`GENERATION`.
"""

from __future__ import annotations

from typing import Literal

CLASSIFICATION = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
)
"""Scalar classification metrics, in report order. ``recall`` is sensitivity."""

GENERATION = ("exact_match", "token_f1", "rouge_l")
"""Per-example generation metrics (mean over examples)."""

# Every name a config may use: ``sensitivity`` is an alias of ``recall``; ``perplexity`` and the
# eval ``loss`` come from the language-model scores.
METRICS = (
    *CLASSIFICATION[:4],
    "sensitivity",
    *CLASSIFICATION[4:],
    *GENERATION,
    "perplexity",
    "loss",
)
# The same names as a type, for the config fields that take one (a type checker cannot read a
# ``Literal`` off the tuple above); tests/config check that the two agree.
MetricName = Literal[
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "exact_match",
    "token_f1",
    "rouge_l",
    "perplexity",
    "loss",
]
LOWER_IS_BETTER = ("log_loss", "brier", "ece", "perplexity", "loss")
