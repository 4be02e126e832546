"""The data section: sources, split, images and checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.schema.base import PATH_FIELD, Encoding, Section

CheckCode = Literal[
    "malformed_row",
    "schema_error",
    "path_outside_root",
    "image_missing",
    "image_unreadable",
    "image_truncated",
    "image_format_unsupported",
    "image_too_small",
    "image_too_large",
    "image_aspect_extreme",
    "image_mode_converted",
    "duplicate_exact",
    "duplicate_near",
    "label_conflict",
    "split_leakage",
    "class_imbalance",
    "text_empty",
    "token_budget_exceeded",
    "pii_detected",
]  # fmt: skip  (the codes of tuneline.data.findings.CHECKS; a test keeps the two in step)


class JsonlSource(Section):
    type: Literal["jsonl"] = Field(description='Chat JSONL: one {"messages": [...]} object per line.')
    path: Annotated[
        Path,
        Field(
            description='The JSONL file. Image parts {"type": "image", "path": ...} '
            "are relative to it (also file:// paths and base64 data: URIs).",
            json_schema_extra=PATH_FIELD,
        ),
    ]
    encoding: Encoding = Field(
        "utf-8",
        description="Text encoding of the file, decoded strictly (e.g. latin-1, cp1252, utf-16): a byte "
        "that does not decode is a malformed_row finding naming the file, line and byte offset.",
    )


class ManifestSource(Section):
    type: Literal["manifest"] = Field(description="A CSV or Parquet table with one image per row.")
    path: Annotated[Path, Field(description="The .csv or .parquet manifest.", json_schema_extra=PATH_FIELD)]
    image_dir: Annotated[
        Path | None,
        Field(
            description="Folder holding the images (default: the manifest's folder).",
            json_schema_extra=PATH_FIELD,
        ),
    ] = None
    image_column: str = Field("image_name", description="Column with the image file name.")
    image_extension: str = Field("", description="Appended to image_column values (ISIC: '.jpg').")
    id_column: str | None = Field(None, description="Unique record id column (default: image_column).")
    label_column: str = Field(..., description="Column with the class label (ISIC: 'target').")
    labels: dict[str, str] | None = Field(
        None,
        description="Label value -> answer text, e.g. {'0': benign, '1': malignant}. Other values are "
        "schema errors. Default: the label value itself is the answer.",
    )
    group_column: str | None = Field(
        None, description="Grouping column (e.g. patient_id): never split apart."
    )
    split_column: str | None = Field(
        None, description="Column holding a user-supplied split (train/val/test)."
    )
    metadata_columns: list[str] | None = Field(
        None,
        description="Columns kept as metadata (default: all). A column whose cells are all numbers written "
        "as text (a CSV's age 70.0) is kept as numbers, empty cells as null, so eval.slices can band it; "
        "the id, image, label, group and split columns stay text.",
    )
    prompt: str = Field(..., description="User prompt; {column} placeholders are filled from the row.")
    system: str | None = Field(None, description="Optional system message.")
    encoding: Encoding = Field(
        "utf-8",
        description="Text encoding of a CSV manifest (Parquet needs none), decoded strictly (e.g. "
        "latin-1, cp1252, utf-16): a byte that does not decode is a malformed_row finding naming the "
        "file, line and byte offset.",
    )


class ImageFolderSource(Section):
    type: Literal["image_folder"] = Field(description="A folder with one sub-folder of images per class.")
    path: Annotated[
        Path,
        Field(description="The root folder; sub-folder names are the labels.", json_schema_extra=PATH_FIELD),
    ]
    prompt: str = Field(..., description="User prompt asked of every image.")
    system: str | None = Field(None, description="Optional system message.")


class HfDiskSource(Section):
    type: Literal["hf_disk"] = Field(description="A dataset saved with datasets.save_to_disk.")
    path: Annotated[Path, Field(description="The saved dataset folder.", json_schema_extra=PATH_FIELD)]
    split: str | None = Field(None, description="Which split of a saved DatasetDict (default: all of them).")
    messages_column: str | None = Field(
        "messages",
        description="Column with OpenAI-shape messages; image parts take the images column in order.",
    )
    images_column: str | None = Field(
        "images", description="Column with the images (datasets Image feature)."
    )
    image_column: str | None = Field(
        None, description="Single-image column, for label datasets with a prompt."
    )
    label_column: str | None = Field(None, description="Label column (ClassLabel names are used as answers).")
    group_column: str | None = Field(None, description="Grouping column: never split apart.")
    prompt: str | None = Field(None, description="User prompt for image+label datasets.")


SourceConfig = Annotated[
    JsonlSource | ManifestSource | ImageFolderSource | HfDiskSource, Field(discriminator="type")
]
SOURCE_TYPES = ("jsonl", "manifest", "image_folder", "hf_disk")


class SplitConfig(Section):
    strategy: Literal["random", "stratified", "stratified_group", "predefined"] = Field(
        "stratified_group",
        description="random; stratified (label proportions kept per split); stratified_group (also no "
        "group in two splits); predefined (the split the data carries: a source's split_column or a "
        "'split' field).",
    )
    group_by: str | None = Field(None, description="Metadata key to group by (default: each source's group).")
    stratify_by: str | None = Field(None, description="Metadata key to stratify by (default: the label).")
    column: str = Field("split", description="Metadata key holding the split, for strategy predefined.")
    train: float = Field(0.8, gt=0, lt=1, description="Fraction of records in the training split.")
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of records in the validation split.")
    test: float = Field(0.1, gt=0, lt=1, description="Fraction of records in the test split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1 (got {total:g}); adjust the fractions")
        return self


class ImagesConfig(Section):
    min_side: int = Field(16, gt=0, description="Shorter side below this: image_too_small.")
    max_pixels: int = Field(
        50_000_000,
        gt=0,
        description="Width x height above this: image_too_large "
        "(refused from the header, before decoding: decompression bombs).",
    )
    max_aspect: float = Field(
        8.0, ge=1, description="Long side / short side above this: image_aspect_extreme."
    )
    max_side: int | None = Field(
        None,
        gt=0,
        description="Snapshots resize images whose longer side exceeds "
        "this (aspect kept). Unset: original size.",
    )
    store: Literal["copy", "link"] = Field(
        "copy",
        description="Snapshot images as copies, or hard links where "
        "the original needs no normalisation (same filesystem).",
    )


class ChecksConfig(Section):
    actions: dict[CheckCode, Literal["fail", "drop", "warn"]] = Field(
        default_factory=dict, description="Per-check action overriding the default (fail, drop or warn)."
    )
    max_error_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Validation fails when the fraction of records with an error exceeds this.",
    )
    min_class_fraction: float = Field(
        0.05, ge=0, lt=1, description="A class rarer than this: class_imbalance."
    )
    near_duplicate_distance: int | None = Field(
        None,
        ge=0,
        le=32,
        description="Perceptual-hash Hamming distance for duplicate_near (default: calibrated).",
    )
    redact_pii: bool = Field(
        False, description="Replace detected PII with [EMAIL], [PHONE], ... in the text."
    )


def _cpu_count() -> int:
    """Cores this process may use (os.process_cpu_count, Python 3.13+), else os.cpu_count()."""
    import os

    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return max(1, count or 1)


class DataConfig(Section):
    sources: list[SourceConfig] = Field(
        ...,
        min_length=1,
        description="Where records come from; several sources are combined into one dataset.",
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="How records are split (deterministic for run.seed)."
    )
    max_seq_length: int = Field(512, gt=8, description="Longest tokenized sample (text plus image tokens).")
    images: ImagesConfig = Field(default_factory=ImagesConfig, description="Image limits and normalisation.")
    checks: ChecksConfig = Field(
        default_factory=ChecksConfig, description="Validation actions and thresholds."
    )
    workers: int = Field(
        default_factory=lambda: _cpu_count(),
        gt=0,
        description="Processes used to inspect images (default: the cores this process may use).",
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="Where the per-image checks run: local (a process pool of data.workers) or ray "
        "(Ray Data map_batches on the cluster ray.init() finds, e.g. RAY_ADDRESS; pip install "
        "'tuneline[ray]'). Cross-record checks, split and report run here on the gathered results.",
    )
