"""The train section: method, LoRA, optimisation, distribution, privacy, distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.schema.base import Section


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
