"""The configuration schema: nested, frozen sections, unknown keys forbidden.

Defaults live here and only here. Every field has a description; they become the JSON schema
(`tuneline config schema`) and the CLI's help. This module imports no runtime code.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

# Marker for fields holding filesystem paths: the loader resolves relative values against the
# YAML file that names them (defaults, never named by a file, are relative to the working dir).
PATH_FIELD = {"tuneline_path": True}


def known_encoding(name: str) -> str:
    """``name`` if Python knows it as a text encoding (not a bytes-to-bytes codec such as zlib)."""
    try:
        codecs.lookup(name)
        "".encode(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    return name


Encoding = Annotated[str, AfterValidator(known_encoding)]
"""A text encoding Python knows (data.sources[].encoding)."""



def _cpu_count() -> int:
    """Cores this process may use (os.process_cpu_count, Python 3.13+), else os.cpu_count()."""
    import os

    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return max(1, count or 1)

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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


class LoraConfig(Section):
    r: int = Field(8, gt=0, description="LoRA rank.")
    alpha: int = Field(16, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto",
        description="'auto': every linear layer of the language model (not the vision tower, projector or "
        "LM head); or a list of module names.",
    )


class CostConfig(Section):
    accelerator: str = Field(
        "cpu", description="Accelerator name, e.g. H100-80GB, A100-40GB, L4 (for the record)."
    )
    count: int = Field(1, gt=0, description="Accelerators used by the run.")
    price_per_hour: float = Field(0.0, ge=0, description="Price of one accelerator-hour, in your currency.")


class DistributedConfig(Section):
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp: every process holds the whole model; fsdp: parameters, gradients and optimizer "
        "state sharded across processes (PyTorch FSDP through accelerate); deepspeed: ZeRO through "
        "accelerate (needs the deepspeed package).",
    )
    fsdp_sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = Field(
        "full_shard", description="FSDP sharding strategy."
    )
    fsdp_cpu_offload: bool = Field(False, description="FSDP: keep sharded parameters on the CPU.")
    deepspeed_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    deepspeed_offload: bool = Field(False, description="DeepSpeed: offload optimizer state to the CPU.")


class DpConfig(Section):
    target_epsilon: float | None = Field(
        None,
        gt=0,
        description="Privacy budget epsilon for the whole run: the noise multiplier is chosen so the RDP "
        "accountant reaches it at the last step. Give this or noise_multiplier.",
    )
    delta: float | None = Field(
        None, gt=0, lt=1, description="Privacy parameter delta (default: 1 / training records)."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Per-sample gradient clipping norm C.")
    noise_multiplier: float | None = Field(
        None, gt=0, description="Gaussian noise std / C. Unset: derived from target_epsilon."
    )

    @model_validator(mode="after")
    def _one_of(self) -> DpConfig:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("train.privacy.dp needs exactly one of target_epsilon and noise_multiplier")
        return self


class PrivacyConfig(Section):
    dp: DpConfig | None = Field(
        None,
        description="Differentially private training (Opacus): per-sample clipping and Gaussian noise on the "
        "trainable parameters, Poisson-sampled batches of expected size train.batch_size (they replace "
        "length grouping), the RDP accountant.",
    )


class DistillConfig(Section):
    temperature: float = Field(
        2.0, gt=0, description="Softening temperature T of both label distributions in the KL term (x T^2)."
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the hard-label loss; the teacher's soft targets get 1 - alpha.",
    )


class TrainConfig(Section):
    method: Literal["lora", "qlora", "dora", "full"] = Field(
        "lora",
        description="lora; qlora (LoRA on a 4-bit nf4 base, bitsandbytes); dora (weight-decomposed "
        "LoRA); full (every weight of the language model).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings.")
    train_projector: bool = Field(
        False,
        description="Also train the vision-to-text projector (multimodal models), saved with the adapter.",
    )
    train_vision_tower: bool = Field(
        False, description="Also train the vision tower (LoRA on its linear layers; all of it for full)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(8, gt=0, description="Micro-batch size per device.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    epochs: float = Field(
        1.0, gt=0, description="Passes over the training split (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    logging_steps: int = Field(10, gt=0, description="Log loss to metrics.jsonl every this many steps.")
    save_steps: int = Field(100, gt=0, description="Save a checkpoint every this many optimizer steps.")
    save_total_limit: int = Field(
        2,
        gt=0,
        description="Keep at most this many checkpoints (the best one is "
        "always kept when eval_steps is set).",
    )
    eval_steps: int | None = Field(
        None,
        gt=0,
        description="Evaluate the answer-token loss on the val split every "
        "this many steps; the best checkpoint (lowest loss) becomes the adapter.",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop when the val loss has not improved for this many evaluations (needs eval_steps).",
    )
    cost: CostConfig = Field(
        default_factory=CostConfig,
        description="Accelerator and price: the run records accelerator-hours and cost.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    answer_only_logits: bool = Field(
        True,
        description="Run the LM head only at answer positions (same loss, "
        "far less compute and memory with large vocabularies).",
    )
    bf16: bool = Field(False, description="Mixed precision bf16 (GPU). Off by default: slow on CPU.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory. Off by default.")
    group_by_length: bool = Field(
        True,
        description="Batch samples of similar token length together (less padding); the order stays a "
        "function of (seed, epoch), so a resumed run sees the same batches.",
    )
    packing: bool = Field(
        False,
        description="Text-only data: the training samples are packed across the dataset into rows of "
        "data.max_seq_length tokens (first-fit decreasing, a function of seed and epoch), position ids "
        "restarting per sample; no token attends across samples.",
    )
    class_balance: Literal["none", "sampler", "loss"] = Field(
        "none",
        description="For rare labels: 'sampler' draws samples with probability 1/class frequency; 'loss' "
        "weights each sample's loss by 1/class frequency (normalised to mean 1).",
    )
    cache_image_features: bool = Field(
        True,
        description="When the vision tower and projector are frozen, compute each image's features once "
        "and reuse them in later epochs (the tower does not run again).",
    )
    image_cache_gb: float = Field(
        4.0, ge=0, description="Host memory the image feature cache may use; beyond it images are recomputed."
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="How processes share the work (under torchrun / tuneline train --nproc-per-node).",
    )
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Differential privacy.")
    teacher: str | None = Field(
        None,
        min_length=1,
        description="Distillation (classification tasks): the teacher, a registered model (NAME@ALIAS, "
        "NAME/VERSION) or a run directory with an adapter/. Its class probabilities on the training "
        "records are computed once (data/teacher_probs.npz) and the student learns from them.",
    )
    distill: DistillConfig = Field(
        default_factory=DistillConfig, description="Distillation loss settings (with train.teacher)."
    )

    @model_validator(mode="after")
    def _distill_compatible(self) -> TrainConfig:
        if self.teacher is None:
            if self.distill != DistillConfig():  # (resolved configs write the defaults out)
                raise ValueError("train.distill is set but train.teacher is not; name the teacher model")
            return self
        bad = [
            f"train.{key} {why}"
            for key, on, why in (
                ("packing", self.packing, "must be false (the student scores every label per record)"),
                ("privacy.dp", self.privacy.dp is not None, "must be null"),
                ("class_balance", self.class_balance == "loss", "must not be 'loss'"),
            )
            if on
        ]
        if bad:
            raise ValueError("train.teacher (distillation) is not supported with: " + "; ".join(bad))
        return self

    @model_validator(mode="after")
    def _dp_compatible(self) -> TrainConfig:
        if self.privacy.dp is None:
            return self
        bad = [
            f"{key} {why}"
            for key, on, why in (
                ("gradient_accumulation_steps", self.gradient_accumulation_steps > 1, "must be 1"),
                ("packing", self.packing, "must be false (a packed row mixes samples)"),
                ("class_balance", self.class_balance == "sampler", "must not be 'sampler'"),
            )
            if on
        ]
        if bad:
            raise ValueError(
                "train.privacy.dp samples batches itself (Poisson) and clips each sample: train."
                + "; train.".join(bad)
            )
        return self

    @model_validator(mode="after")
    def _evaluation_schedule(self) -> TrainConfig:
        if self.early_stopping_patience is not None and self.eval_steps is None:
            raise ValueError("early_stopping_patience needs eval_steps; set train.eval_steps")
        if self.eval_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                "so the best checkpoint can be kept"
            )
        return self


METRICS = (
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
)
LOWER_IS_BETTER = ("log_loss", "brier", "ece", "perplexity", "loss")


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
    metric: Literal[(*METRICS, "dp_epsilon")] = Field(
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
    primary: Literal[METRICS] | None = Field(
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


class ServeAuthConfig(Section):
    api_key_envs: list[str] = Field(
        default_factory=list,
        description="Names of environment variables holding API keys (Authorization: Bearer KEY); several "
        "allow rotation. Empty: no authentication. Keys are compared in constant time and never logged.",
    )


class ServeLimitsConfig(Section):
    max_body_bytes: int = Field(20_000_000, gt=0, description="Largest request body: 413 above it.")
    max_image_bytes: int = Field(8_000_000, gt=0, description="Largest decoded image: 413 above it.")
    max_image_pixels: int = Field(
        25_000_000,
        gt=0,
        description="Largest image (width x height), read from the header before decoding: 400 above it.",
    )
    max_images: int = Field(4, ge=0, description="Images in one request: 400 above it.")
    max_tokens: int = Field(512, gt=0, description="Largest max_tokens a request may ask for: 400 above it.")
    default_max_tokens: int = Field(
        64, gt=0, description="max_tokens when a request does not say (at most max_tokens)."
    )
    max_prompt_tokens: int = Field(4096, gt=0, description="Longest prompt (text tokens): 400 above it.")
    max_messages: int = Field(256, gt=0, description="Messages in one request: 400 above it.")
    max_message_chars: int = Field(
        100_000,
        gt=0,
        description="Characters of text in one message, counted before any tokenization: 400 above it.",
    )
    max_prompt_chars: int = Field(
        200_000,
        gt=0,
        description="Characters of text in all messages together, counted before any tokenization (a cheap "
        "bound on the tokenizer's work; keep it a few times max_prompt_tokens): 400 above it.",
    )
    inline_parse_bytes: int = Field(
        65_536,
        ge=0,
        description="Request bodies up to this size are parsed in the server process; larger ones in a "
        "helper process, so that no body (e.g. 20 MB of tiny JSON values) holds the event loop.",
    )
    max_concurrency: int = Field(
        64, gt=0, description="Requests in flight at once; one more gets 429 (retry later)."
    )


class ServeBatchingConfig(Section):
    max_batch_size: int = Field(
        16, gt=0, description="Concurrent requests of one variant generated in one call (1: no batching)."
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the first request of a batch waits for others to join."
    )


class ServeCacheConfig(Section):
    enabled: bool = Field(True, description="Cache responses to deterministic requests (temperature 0).")
    max_entries: int = Field(1024, gt=0, description="Entries kept (least recently used dropped first).")
    ttl_s: float = Field(600.0, gt=0, description="Seconds an entry stays valid.")


class ServeDriftConfig(Section):
    enabled: bool = Field(True, description="Compare live inputs and predictions with the training profile.")
    window: int = Field(500, gt=1, description="Live requests kept in the rolling window.")
    min_samples: int = Field(100, gt=1, description="No verdict before the window holds this many requests.")
    check_every: int = Field(25, gt=0, description="Recompute drift after this many new requests.")
    bins: int = Field(10, ge=2, description="Quantile bins of the reference used for PSI.")
    psi_threshold: float = Field(
        0.25, gt=0, description="PSI at or above which a feature counts as shifted (0.25: a major shift)."
    )
    ks_alpha: float = Field(
        0.01, gt=0, lt=1, description="A shifted feature must also fail the KS test at this level."
    )
    mmd_alpha: float = Field(
        0.01, gt=0, lt=1, description="Embedding drift: MMD permutation-test p-value below this."
    )
    mmd_permutations: int = Field(200, ge=20, description="Permutations of the MMD test.")
    embedding: Literal["auto", "vision", "histogram"] = Field(
        "auto",
        description="Image embeddings for the MMD test: the base model's vision encoder (vision), a fixed "
        "thumbnail + colour histogram (histogram), or whatever the reference profile used (auto).",
    )


class ServeWatchConfig(Section):
    interval_s: float = Field(
        10.0, ge=0, description="Seconds between polls of the registry aliases (0: never swap models)."
    )


class VllmConfig(Section):
    executable: str = Field("vllm", description="The vllm command.")
    port: int = Field(8001, gt=0, lt=65536, description="Port of the vllm server (loopback).")
    url: str | None = Field(
        None,
        description="Proxy to an already running vLLM OpenAI server at this URL instead of starting one.",
    )
    max_lora_rank: int = Field(64, gt=0, description="--max-lora-rank.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="--gpu-memory-utilization.")
    extra_args: list[str] = Field(default_factory=list, description="More arguments for vllm serve.")


class ServeConfig(Section):
    model_name: str | None = Field(
        None, description="Registered model to serve (default: registry.model_name, else run.name)."
    )
    traffic: dict[str, float] = Field(
        default_factory=lambda: {"champion": 100.0},
        description="Registry alias -> percent of users, e.g. {champion: 90, challenger: 10}; sums to 100. "
        "Every alias listed is loaded and kept in step with the registry.",
    )
    salt: str = Field(
        "tuneline",
        description="Mixed into the hash of the user id that picks a variant: change it to reshuffle users.",
    )
    base_model: str | None = Field(
        None,
        description="Base model under the adapters (default: the version's tuneline.base_model tag, i.e. "
        "what it was trained on).",
    )
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="transformers: in process, one base model with every variant's adapter, dynamic "
        "batching; vllm: start `vllm serve --enable-lora` (GPU) and proxy to it.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="transformers backend: device.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "auto", description="Weight dtype (auto: bfloat16 on a GPU that supports it, else float32)."
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none",
        description="Weights of the served model through bitsandbytes: int8 (LLM.int8) or nf4 (4-bit); the "
        "vision side and the LM head stay in dtype. When set, evaluation scores the quantized model, so "
        "the gate judges what will serve.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, lt=65536, description="Port to listen on (0: any free port).")
    auth: ServeAuthConfig = Field(default_factory=ServeAuthConfig, description="API keys.")
    limits: ServeLimitsConfig = Field(default_factory=ServeLimitsConfig, description="Request limits.")
    batching: ServeBatchingConfig = Field(
        default_factory=ServeBatchingConfig, description="Dynamic batching (transformers backend)."
    )
    cache: ServeCacheConfig = Field(default_factory=ServeCacheConfig, description="Response cache.")
    drift: ServeDriftConfig = Field(default_factory=ServeDriftConfig, description="Drift monitoring.")
    watch: ServeWatchConfig = Field(default_factory=ServeWatchConfig, description="Registry alias watching.")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="vllm backend settings.")
    metrics_auth: bool = Field(
        False,
        description="GET /metrics needs an API key like /v1/ (false: Prometheus scrapes without one; keep "
        "the port off the public network then).",
    )
    pii: Literal["off", "flag", "redact", "block"] = Field(
        "flag",
        description="Personal data (email, phone, card, IBAN, national id) in generated answers: 'flag' "
        "counts it (tuneline:pii_outputs_total{kind}) and adds an X-Tuneline-PII header, 'redact' replaces "
        "each span with [KIND], 'block' refuses the answer (400, code pii_in_output); streams are scanned "
        "on a sliding window.",
    )
    state_dir: Annotated[
        Path,
        Field(
            description="Folder for the A/B request and feedback database and downloaded model versions.",
            json_schema_extra=PATH_FIELD,
        ),
    ] = Path(".tuneline/serve")

    @model_validator(mode="after")
    def _traffic(self) -> ServeConfig:
        if not self.traffic:
            raise ValueError("serve.traffic needs at least one alias, e.g. {champion: 100}")
        bad = [f"{k}={v:g}" for k, v in self.traffic.items() if v < 0]
        if bad:
            raise ValueError(f"serve.traffic percentages must not be negative ({', '.join(bad)})")
        total = sum(self.traffic.values())
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"serve.traffic percentages must sum to 100 (got {total:g})")
        for alias in self.traffic:
            if not alias or not all(c.isalnum() or c in "_-" for c in alias):
                raise ValueError(f"serve.traffic alias {alias!r}: use letters, digits, _ and -")
        return self


# ---------------------------------------------------------------------------------- launch
class TorchrunTarget(Section):
    master_addr: str = Field(
        "127.0.0.1", description="Rendezvous host: node 0's address, reachable from every node."
    )
    master_port: int = Field(
        29500, gt=0, lt=65536, description="Rendezvous (c10d store) port on master_addr."
    )
    node_rank: int | None = Field(
        None,
        ge=0,
        description="Start only this node here (run the same command with each rank on each machine). "
        "Unset: start every node on this machine (a local multi-node job).",
    )
    max_restarts: int = Field(
        3, ge=0, description="torchrun --max-restarts: worker-group restarts after a failure or a lost node."
    )


class GcpBatchTarget(Section):
    boot_disk_gb: int = Field(100, gt=0, description="Boot disk of each VM (holds the image and the cache).")
    network: str | None = Field(None, description="VPC network (projects/P/global/networks/N).")
    subnetwork: str | None = Field(None, description="Subnetwork (projects/P/regions/R/subnetworks/S).")
    no_external_ip: bool = Field(False, description="VMs without external IP (needs Cloud NAT or PGA).")


class VertexTarget(Section):
    boot_disk_gb: int = Field(100, gt=0, description="Boot disk of each replica.")
    network: str | None = Field(None, description="Peered VPC network (projects/NUMBER/global/networks/N).")


class GkeTarget(Section):
    namespace: str = Field("default", description="Kubernetes namespace of the job.")
    kind: Literal["jobset", "indexed-job"] = Field(
        "jobset",
        description="jobset (needs the JobSet controller in the cluster) or indexed-job (a plain indexed "
        "Job plus a headless Service, where JobSet is not installed).",
    )
    service_account: str | None = Field(
        None, description="Kubernetes service account of the pods (Workload Identity for the bucket)."
    )
    gcsfuse: bool = Field(
        True,
        description="Mount a gs:// bucket with the GKE Cloud Storage FUSE CSI driver "
        "(enable it on the cluster).",
    )
    volume_claim: str | None = Field(
        None, description="Mount this PersistentVolumeClaim as the bucket instead (any storage, e.g. s3 CSI)."
    )
    context: str | None = Field(None, description="kubeconfig context to submit with (default: current).")


class SkypilotTarget(Section):
    cloud: str | None = Field(None, description="Pin a cloud (gcp, aws, azure, kubernetes, ...). Unset: any.")
    disk_size: int = Field(100, gt=0, description="Disk of each node in GB.")


class LaunchConfig(Section):
    image: str | None = Field(
        None,
        description="Container image URI with tuneline installed (see the Dockerfile), e.g. "
        "us-docker.pkg.dev/PROJECT/REPO/tuneline:0.1.0. Needed by gcp-batch, vertex and gke.",
    )
    accelerator: str | None = Field(
        None,
        description="Accelerator per node, e.g. A100-40GB, H100-80GB, L4, T4 "
        "(default: train.cost.accelerator); cpu for none.",
    )
    accelerators_per_node: int = Field(
        1, gt=0, le=16, description="Accelerators per node (one process each)."
    )
    nodes: int = Field(1, gt=0, le=512, description="Number of nodes (machines).")
    machine_type: str | None = Field(
        None,
        description="Cloud machine type (default: the usual one for the accelerator, e.g. a2-highgpu-1g).",
    )
    spot: bool = Field(
        False,
        description="Spot / preemptible capacity: a preempted node is retried and resumes from the newest "
        "valid checkpoint (at most train.save_steps lost).",
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries after preemption or a retryable failure (exit 75)."
    )
    max_run_time: int = Field(
        86400, gt=0, description="Seconds the job may run before the engine stops it (each attempt)."
    )
    project: str | None = Field(None, description="Google Cloud project id (gcp-batch, vertex).")
    region: str | None = Field(
        None, description="Cloud region, e.g. us-central1 (gcp-batch, vertex, skypilot)."
    )
    zone: str | None = Field(None, description="Cloud zone, e.g. us-central1-a (optional).")
    service_account: str | None = Field(
        None, description="Google service account email the job runs as (gcp-batch, vertex)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the job (plain values, not secrets)."
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Secret environment variables BY REFERENCE, never by value: NAME -> a Secret Manager "
        "secret (S or projects/P/secrets/S[/versions/V]) for gcp-batch and vertex, a Kubernetes Secret "
        "(name or name/key) for gke; local, torchrun and skypilot pass NAME from the launching shell.",
    )
    bucket: str | None = Field(
        None,
        description="Where the job keeps data snapshots, checkpoints and MLflow artifacts, as an fsspec URL "
        "(gs://bucket/path, s3://bucket/path) or a local/shared folder; retries resume from it.",
    )
    command: Literal["run", "train"] = Field(
        "run", description="run: prepare, train, evaluate and register; train: prepare and train only."
    )
    mfu: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Model FLOPs utilisation assumed by the cost preview (fraction of peak bf16 FLOP/s).",
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="Price per accelerator-hour, on demand, overriding the built-in table, "
        "e.g. {A100-40GB: 3.2}.",
    )
    spot_prices: dict[str, float] = Field(
        default_factory=dict, description="Price per accelerator-hour on spot capacity, overriding the table."
    )
    torchrun: TorchrunTarget = Field(
        default_factory=TorchrunTarget, description="Options of --target torchrun."
    )
    gcp_batch: GcpBatchTarget = Field(
        default_factory=GcpBatchTarget, description="Options of --target gcp-batch."
    )
    vertex: VertexTarget = Field(default_factory=VertexTarget, description="Options of --target vertex.")
    gke: GkeTarget = Field(default_factory=GkeTarget, description="Options of --target gke.")
    skypilot: SkypilotTarget = Field(
        default_factory=SkypilotTarget, description="Options of --target skypilot."
    )

    @model_validator(mode="after")
    def _secrets_are_names(self) -> LaunchConfig:
        for name in (*self.env, *self.secrets):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"environment variable name {name!r} is not valid ([A-Za-z_][A-Za-z0-9_]*)")
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} in both launch.env and launch.secrets; keep one")
        return self


# ---------------------------------------------------------------------------------- sweep
# Sections a sweep candidate may change: what is trained and how it serves. Data, run, eval and registry
# stay those of the sweep, so every trial sees the same prepared snapshot and the same test records.
SWEEP_OVERRIDABLE = ("model", "train", "serve")
SWEEP_COSTS = ("cost_per_1k", "train_cost", "train_seconds", "latency_p95_s", "peak_memory_gb", "parameters")
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
    metric: Literal[METRICS] | None = Field(
        None, description="Metric the trials are compared on (default: eval.gate.primary, else roc_auc)."
    )
    cost_metric: Literal[SWEEP_COSTS] = Field(
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
