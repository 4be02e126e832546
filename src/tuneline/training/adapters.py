"""LoRA adapters through PEFT: which modules to adapt, which to train in full, seed first."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model

from tuneline.config.schema import TrainConfig
from tuneline.models.families import ModelFamily


def lora_config(train: TrainConfig, family: ModelFamily) -> LoraConfig:
    auto = train.lora.target_modules == "auto"
    return LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        # "all-linear" adapts every linear layer but the LM head; the family excludes its vision side.
        target_modules="all-linear" if auto else list(train.lora.target_modules),
        exclude_modules=family.exclude_from_lora if auto else None,
        modules_to_save=[m.rsplit(".", 1)[-1] for m in family.projector_modules]
        if train.train_projector
        else None,
        task_type="CAUSAL_LM",
    )


def add_lora(model, train: TrainConfig, family: ModelFamily) -> PeftModel:
    """Wrap ``model`` with fresh LoRA weights. Seed before calling: LoRA init draws random numbers."""
    return get_peft_model(model, lora_config(train, family))
