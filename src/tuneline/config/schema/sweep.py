"""The sweep section: candidates, parameters and the objective of `tuneline sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.metric_names import MetricName
from tuneline.config.schema.base import PATH_FIELD, Section

# ---------------------------------------------------------------------------------- sweep
# Sections a sweep candidate may change: what is trained and how it serves. Data, run, eval and registry
# stay those of the sweep, so every trial sees the same prepared snapshot and the same test records.
SWEEP_OVERRIDABLE = ("model", "train", "serve")
SweepCost = Literal[
    "cost_per_1k", "train_cost", "train_seconds", "latency_p95_s", "peak_memory_gb", "parameters"
]
SWEEP_COSTS: tuple[str, ...] = get_args(SweepCost)
SweepValue = str | int | float | bool | None


def _override_keys(keys: list[str], where: str) -> None:
    for key in keys:
        parts = key.split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"{where}: {key!r} is not a dotted key such as train.learning_rate")
        if parts[0] not in SWEEP_OVERRIDABLE:
            raise ValueError(
                f"{where}: {key!r} changes the {parts[0]} section; a sweep varies only "
                f"{', '.join(SWEEP_OVERRIDABLE)} (every trial shares the data, the run and the evaluation)"
            )


class SweepCandidate(Section):
    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Name of the candidate: its trial's run directory and its row in the frontier.",
    )
    overrides: dict[str, SweepValue] = Field(
        ...,
        min_length=1,
        description="Dotted keys and values changed from the config, e.g. {model.base: tiny:gemma3@m, "
        "train.method: full}.",
    )

    @model_validator(mode="after")
    def _keys(self) -> SweepCandidate:
        _override_keys(list(self.overrides), f"candidate {self.name}")
        return self


class SweepParam(Section):
    type: Literal["float", "int", "categorical"] = Field(..., description="Kind of the search dimension.")
    low: float | None = Field(None, description="float/int: lowest value.")
    high: float | None = Field(None, description="float/int: highest value.")
    log: bool = Field(False, description="float/int: sample on a log scale.")
    choices: list[SweepValue] | None = Field(None, description="categorical: the values.")

    @model_validator(mode="after")
    def _bounds(self) -> SweepParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical search dimension needs choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} search dimension needs low < high (got {self.low}, {self.high})")
        return self


class SweepConfig(Section):
    candidates: list[SweepCandidate] | None = Field(
        None, description="Named override sets, one trial each (run in a grid over the names)."
    )
    grid: dict[str, list[SweepValue]] | None = Field(
        None,
        description="Dotted key -> values: one trial per combination, e.g. {model.base: [tiny:llama@s, "
        "tiny:llama@m], train.method: [lora, full]}.",
    )
    space: dict[str, SweepParam] | None = Field(
        None, description="Dotted key -> search dimension, sampled by TPE for `trials` trials."
    )
    sampler: Literal["auto", "grid", "tpe"] = Field(
        "auto",
        description="Optuna sampler: grid for candidates and grids (each point once), tpe for a search "
        "space. auto picks the one that fits.",
    )
    trials: int | None = Field(
        None,
        gt=0,
        description="Trials to complete (a search space needs it; default for a grid: all points).",
    )
    pruner: Literal["none", "median", "hyperband"] = Field(
        "none",
        description="Stop unpromising trials early on their val loss curve (needs train.eval_steps): "
        "Optuna's MedianPruner or HyperbandPruner.",
    )
    storage: str | None = Field(
        None,
        description="Where the Optuna study lives: any SQLAlchemy URL (sqlite:///..., postgresql://...) that "
        "every worker reaches. Default: sqlite next to the MLflow store (.tuneline/optuna.db).",
    )
    journal_file: Annotated[
        Path | None,
        Field(
            description="Instead of storage: Optuna's journal file on a folder every worker shares.",
            json_schema_extra=PATH_FIELD,
        ),
    ] = None
    study_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Optuna study name; also names the sweep folder <output_dir>/<run.name>/sweep/<study>. "
        "Default: <run.name>-sweep.",
    )
    metric: MetricName | None = Field(
        None, description="Metric the trials are compared on (default: eval.gate.primary, else roc_auc)."
    )
    cost_metric: SweepCost = Field(
        "cost_per_1k",
        description="What 'cheapest' means for the recommendation: cost_per_1k (serving cost of 1,000 "
        "predictions, needs train.cost.price_per_hour), train_cost, train_seconds, latency_p95_s, "
        "peak_memory_gb (training) or parameters (of the served model).",
    )
    tolerance: float = Field(
        0.01,
        ge=0,
        description="Non-inferiority margin in the metric's units: a trial is as good as the best when the "
        "95% CI of its paired difference to the best stays within this margin.",
    )
    seed: int | None = Field(None, description="Sampler and bootstrap seed (default: run.seed).")
    heartbeat_s: int = Field(
        10,
        gt=0,
        description="A running trial records a heartbeat this often; one silent for 3x this long (its worker "
        "was killed) is failed and queued again, resuming from its checkpoint.",
    )
    max_retries: int = Field(3, ge=0, description="Times an interrupted or killed trial is queued again.")

    @model_validator(mode="after")
    def _one_way(self) -> SweepConfig:
        given = [n for n in ("candidates", "grid", "space") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of candidates, grid or space (got {given or 'none'})")
        if self.storage is not None and self.journal_file is not None:
            raise ValueError("give storage or journal_file, not both")
        if self.candidates is not None:
            names = [c.name for c in self.candidates]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"candidate names must be unique (repeated: {', '.join(dup)})")
        if self.grid is not None:
            _override_keys(list(self.grid), "sweep.grid")
            empty = [k for k, v in self.grid.items() if not v]
            if empty or not self.grid:
                raise ValueError(f"sweep.grid needs at least one value per key (empty: {empty or 'all'})")
        if self.space is not None:
            _override_keys(list(self.space), "sweep.space")
            if self.sampler == "grid":
                raise ValueError("a search space is sampled by tpe; use sweep.grid for a grid")
            if self.trials is None:
                raise ValueError("a search space needs sweep.trials (how many trials to complete)")
        elif self.sampler == "tpe":
            raise ValueError(
                "candidates and grids run each point once (sampler grid); tpe is for sweep.space"
            )
        return self
