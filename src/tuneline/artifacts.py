"""The typed views of the reports in a run directory, at the runs layer so that every reader (registry,
serving, launch, the CLI) can load them without importing the evaluation or data packages that write them.

``EvalReport`` (eval/report.json) is written by :mod:`tuneline.evaluation.report` and ``DataReport``
(data_report.json) by :mod:`tuneline.data.validate`; both modules re-export them. ``Summary`` and
``Provenance`` live in :mod:`tuneline.runs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from tuneline.runs import RunDir, _Artifact
from tuneline.sections import (
    Audit,
    Beaten,
    Comparison,
    DataSummary,
    Delong,
    Dropped,
    Finding,
    Gate,
    ImageStats,
    ModelEntry,
    Permutation,
    Privacy,
    SliceEntry,
    Splits,
    ThresholdSection,
)


class EvalReport(_Artifact):
    """eval/report.json (built by :func:`build_report`): models' metrics with CIs, comparisons, slices, gate.
    Lenient (``extra="allow"``): the sections not named here (threshold, delong, audit, ...) stay readable."""

    filename: ClassVar[str] = "eval/report.json"
    task: str | None = None
    split: str | None = None
    n: int | None = None
    labels: list[str] = []
    positive: str | None = None
    grouped_by: str | None = None
    splits: Splits | None = None
    models: dict[str, ModelEntry] = {}
    comparisons: list[Comparison] = []
    slices: dict[str, SliceEntry] = {}
    gate: Gate | None = None
    primary: str | None = None
    beaten_by: list[Beaten] = []
    not_beaten: list[str] = []
    permutation: Permutation | None = None
    privacy: Privacy | None = None
    threshold: ThresholdSection | None = None
    audit: Audit | None = None
    delong: Delong | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _null_model_is_empty(cls, value: Any) -> Any:
        """A model written as null reads as one with no results (the page still lists it)."""
        return {str(k): v or {} for k, v in value.items()} if isinstance(value, dict) else value

    @classmethod
    def path_in(cls, run: RunDir) -> Path:
        return run.eval_dir / "report.json"


class DataReport(_Artifact):
    """data_report.json (written by :func:`write_report`, copied into the run directory by prepare):
    the validation summary, its findings, dropped records and image sizes. Lenient (``extra="allow"``)."""

    filename: ClassVar[str] = "data_report.json"
    summary: DataSummary = DataSummary()
    findings: list[Finding] = []
    dropped: list[Dropped] = []
    images: ImageStats = ImageStats()

    @classmethod
    def read_folder(cls, folder: Path) -> DataReport:
        """The report in a ``data validate --out`` folder (not a run directory)."""
        return cls.model_validate_json((folder / cls.filename).read_text())
