"""The typed sections of a run's JSON artifacts (summary.json, provenance.json, eval/report.json,
data_report.json), so that every reader goes through named attributes, never through ``.get()`` chains.

Every section is lenient on purpose: ``extra="allow"`` keeps (and writes back) the keys a newer or older
tuneline put there and no reader names, and every field has a default, so a run directory written by an
older tuneline still loads. What stays a plain map is a map by nature (metric name → value, split name →
count, label → count) and is typed as such (``dict[str, X]``).

This module imports nothing of tuneline: it sits under :mod:`tuneline.runs` and :mod:`tuneline.artifacts`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Number = int | float | None  # int first: a count (a slice's n) stays an int
CI = list[float | None] | None  # [low, high]; either may be null where the metric was undefined


class Section(BaseModel):
    """A part of an artifact: unknown keys kept, every field optional."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------ shared by the summary and the report
class Comparison(Section):
    """One paired comparison ``b − a`` (``b`` is the tuned model) on ``metric``."""

    a: str | None = None
    b: str | None = None
    metric: str | None = None
    value_a: Number = None
    value_b: Number = None
    delta: Number = None
    ci: CI = None
    p_value: Number = None
    method: str | None = None
    unit: str | None = None
    n_skipped: int | None = None
    n_resamples: int | None = None


class GateRule(Section):
    rule: str = ""
    passed: bool = False
    detail: str | None = ""
    value: Number = None
    threshold: Number = None


class Gate(Section):
    passed: bool = False
    primary: str | None = None
    against: str | None = None
    against_rule: str | None = None
    comparison: Comparison | None = None
    rules: list[GateRule] = []


class Beaten(Section):
    """A model that beats the fine-tune: the red line of the summary, the report and the card."""

    model: str | None = None
    metric: str | None = None
    margin: Number = None
    ci: CI = None
    significant: bool | None = None
    sentence: str = ""


class Permutation(Section):
    metric: str | None = None
    observed: Number = None
    p_value: Number = None
    null_mean: Number = None
    null_q95: Number = None
    n_permutations: int | None = None
    n_skipped: int | None = None
    unit: str | None = None


# ------------------------------------------------------------------ summary.json
class Validation(Section):
    records_in: int | None = None
    records_out: int | None = None
    errors: int | None = None
    dropped: int | None = None
    warnings: int | None = None
    passed: bool | None = None


class DataSection(Section):
    """summary.json ``data`` (the prepare stage)."""

    counts: dict[str, int] = {}
    fingerprint: str | None = None
    snapshot: str | None = None
    canaries: int | None = None
    validation: Validation | None = None


class DPReport(Section):
    """What differentially private training spent (Opacus, RDP accountant)."""

    epsilon: float = 0.0
    delta: float = 0.0
    noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0
    sample_rate: float = 0.0
    steps: int = 0


class Privacy(Section):
    dp: DPReport | None = None


class TrainCost(Section):
    accelerator: str | None = None
    count: int | None = None
    accelerator_hours: Number = None
    price_per_hour: Number = None
    cost: Number = None


class TrainSection(Section):
    """summary.json ``train`` (the train stage)."""

    steps: int | None = None
    final_loss: Number = None
    mean_loss: Number = None
    trainable_parameters: int | None = None
    seconds: Number = None
    peak_memory_gb: Number = None
    cost: TrainCost | None = None
    privacy: Privacy | None = None
    labels: list[str] | None = None


class EvalSection(Section):
    """summary.json ``eval`` (also eval.json): the headline numbers of every model scored, under the
    model's name (``tuned``, ``base``, ``prior``, ...: see :meth:`scores`), and the gate."""

    split: str | None = None
    task: str | None = None
    n: int | None = None
    audit: dict[str, Any] | None = None
    gate: Gate | None = None
    models: list[str] = []
    beaten_by: list[Beaten] = []
    permutation: Permutation | None = None
    primary: str | None = None
    quantization: str | None = None

    def scores(self, model: str) -> dict[str, Any]:
        """The headline metrics of ``model`` (metric name → value; empty when it was not scored)."""
        value = (self.model_extra or {}).get(model)
        return dict(value) if isinstance(value, dict) else {}

    def scored(self) -> list[str]:
        """The models scored: ``models`` as written, else every section holding a model's numbers."""
        return self.models or [k for k, v in (self.model_extra or {}).items() if isinstance(v, dict)]


class MlflowSection(Section):
    run_id: str | None = None
    live_metrics_complete: bool = False
    live_metrics_failed: bool = False


class RegistrySection(Section):
    model_name: str | None = None
    version: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


# ------------------------------------------------------------------ provenance.json
class GitState(Section):
    commit: str | None = None
    dirty: bool | None = None
    repository: str | None = None


class Environment(Section):
    python: str | None = None
    platform: str | None = None
    packages: dict[str, str | None] = {}
    packages_hash: str | None = None
    packages_count: int | None = None


class DataSource(Section):
    type: str | None = None
    path: str | None = None
    records: int | None = None


class DataProvenance(Section):
    fingerprint: str | None = None
    snapshot: str | None = None
    counts: dict[str, int] = {}
    sources: list[DataSource] = []


class BaseModelInfo(Section):
    id: str | None = None
    kind: str | None = None
    family: str | None = None
    revision: str | None = None
    content_hash: str | None = None


# ------------------------------------------------------------------ eval/report.json
class Latency(Section):
    n: int | None = None
    p50_s: Number = None
    p95_s: Number = None
    mean_s: Number = None
    predictions_per_s: Number = None


class ThresholdChoice(Section):
    method: str | None = None
    threshold: Number = None
    sensitivity: Number = None
    specificity: Number = None
    youden_j: Number = None


class ModelEntry(Section):
    """One model's results in eval/report.json."""

    metrics: dict[str, Number] = {}
    ci: dict[str, CI] = {}
    ci_unit: str | None = None
    ci_skipped: dict[str, int | None] = {}
    ci_resamples: int | None = None
    threshold: Number = None
    threshold_choice: ThresholdChoice | None = None
    invalid_label_rate: Number = None
    confusion_matrix: list[list[Number]] | None = None
    class_counts: dict[str, Number] = {}
    latency: Latency | None = None
    cost_per_1k: Number = None
    loss: Number = None
    note: str | None = None
    quantization: str | None = None


class SliceEntry(Section):
    """One slice column: value → model → {"n", metric...} (a map of maps of numbers), and the values
    too small to score (value → n)."""

    values: dict[str, dict[str, dict[str, Number]]] = {}
    too_small: dict[str, int] = {}


class ThresholdSection(Section):
    method: str | None = None
    target_sensitivity: Number = None
    split: str | None = None
    per_model: dict[str, Number] = {}


class Splits(Section):
    evaluated: str | None = None
    threshold: str | None = None


class Delong(Section):
    unit: str | None = None
    note: str | None = None


class Audit(Section):
    canaries: int = 0
    digits: int = 0
    candidates: int = 0
    exposure_mean: float = 0.0
    control_exposure_mean: float = 0.0
    max_exposure: float = 0.0


# ------------------------------------------------------------------ data_report.json
class SplitCounts(Section):
    records: int = 0
    labels: dict[str, int] = {}
    groups: int | None = None


class CheckCounts(Section):
    error: int = 0
    warning: int = 0
    info: int = 0


class DataSummary(Section):
    """data_report.json ``summary``: the validation verdict and its counts."""

    records_in: int | None = None
    records_out: int | None = None
    dropped: int | None = None
    errors: int | None = None
    warnings: int | None = None
    info: int | None = None
    error_fraction: Number = None
    max_error_fraction: Number = None
    passed: bool | None = None
    by_check: dict[str, CheckCounts] | None = None
    labels: dict[str, int] = {}
    splits: dict[str, SplitCounts] = {}
    split_strategy: str | None = None
    sources: list[DataSource] = []
    fingerprint: str | None = None
    failures: list[str] = []


class Finding(Section):
    check: str | None = None
    severity: str | None = None
    record_id: Any = None
    source: str | None = None
    field: str | None = None
    split: str | None = None
    message: str | None = ""
    related: list[Any] = []


class Dropped(Section):
    record_id: Any = None
    source: str | None = None
    field: str | None = None
    reason: str | None = None


class ImageStats(Section):
    sizes: list[Any] = []  # [width, height] pairs; the report skips any that is not one
    formats: dict[str, int | None] = {}
