"""The root: a whole tuneline configuration, one section per stage."""

from __future__ import annotations

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from tuneline.config.schema.base import Section
from tuneline.config.schema.data import DataConfig
from tuneline.config.schema.evaluate import EvalConfig
from tuneline.config.schema.launch import LaunchConfig
from tuneline.config.schema.loop import LoopConfig
from tuneline.config.schema.run import ModelConfig, RegistryConfig, RunConfig
from tuneline.config.schema.serve import ServeConfig
from tuneline.config.schema.sweep import SweepConfig
from tuneline.config.schema.train import TrainConfig


class Config(Section):
    """A tuneline configuration: one YAML file (plus `extends:` bases and `--set` overrides)."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run naming, output folder and seed.")
    model: ModelConfig = Field(..., description="The base model.")
    data: DataConfig = Field(..., description="Where the data comes from and how it is split.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation, base vs tuned.")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="MLflow tracking and registry."
    )
    serve: ServeConfig = Field(
        default_factory=ServeConfig, description="Serving: OpenAI-compatible endpoint, A/B, drift."
    )
    launch: LaunchConfig = Field(
        default_factory=LaunchConfig, description="Running the config as a job (tuneline launch)."
    )
    loop: LoopConfig = Field(
        default_factory=LoopConfig, description="The closed loop: collect, select, label, retrain, canary."
    )
    sweep: SweepConfig | None = Field(
        None, description="Candidate models and methods compared by `tuneline sweep` (Optuna)."
    )

    # Key paths whose values came from ${ENV} interpolation, mapped to the text as written; the
    # dumps put the template back so secrets never land in files or logs.
    _templates: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _distill_task(self) -> Config:
        if self.train.teacher is not None and self.eval.task == "generation":
            raise ValueError(
                "train.teacher: distillation is implemented for classification tasks only for now, and "
                "eval.task is 'generation'; remove train.teacher or set eval.task: classification"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.run.name

    @property
    def experiment_name(self) -> str:
        return self.registry.experiment or self.run.name
