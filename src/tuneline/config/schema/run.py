"""The run's identity and its records: naming and seed (run), the base model (model), MLflow (registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
)

from tuneline.config.schema.base import PATH_FIELD, Section


class RunConfig(Section):
    name: str = Field(
        "tuneline",
        description="Run name: runs go to <output_dir>/<name>/<run-id>/.",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    output_dir: Annotated[
        Path, Field(description="Folder that holds the run directories.", json_schema_extra=PATH_FIELD)
    ] = Path("runs")
    seed: int = Field(42, description="Global seed: data split, model initialisation, data order.")
    offline: bool | None = Field(
        None,
        description="Refuse every network connection that leaves the machine while a stage runs (loopback "
        "stays allowed): the stage fails naming the destination, and provenance.json records it. "
        "Unset: on when HF_HUB_OFFLINE=1.",
    )


class ModelConfig(Section):
    base: str = Field(
        ...,
        description="Base model: a hub id (org/name), a local checkpoint folder, tiny:<family> "
        "(a toy-size model of a real architecture built offline, for tests and the quickstart), or "
        "pkg:<module> (a checkpoint shipped in an installed package whose get_model_path() names it).",
        min_length=1,
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a hub model.")
    family: str | None = Field(
        None, description="Model family (gemma3, llama, ...). Detected from the checkpoint when unset."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Weight dtype. float32 on CPU; auto picks bfloat16 on a GPU that supports it."
    )


class RegistryConfig(Section):
    enabled: bool = Field(True, description="Log the run to MLflow and register the adapter.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. Default: sqlite:///.tuneline/mlflow.db in the working directory. "
        "Credentials may come from ${ENV_VAR} and are never written out.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name (default: run.name).")
    model_name: str | None = Field(None, description="Registered model name (default: run.name).")
    live_metrics: bool = Field(
        True,
        description="Log training metrics to the MLflow run while training (every logging step), not "
        "only when registering.",
    )
