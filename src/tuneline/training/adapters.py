"""Fine-tuning methods: LoRA / DoRA / QLoRA through PEFT, or full fine-tuning of the language model.

One entry point, ``prepare_for_training``: the stage never branches on the method itself.
"""

from __future__ import annotations

import re

from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from tuneline.config.schema import TrainConfig
from tuneline.models.families import ModelFamily

PEFT_METHODS = ("lora", "qlora", "dora")


def _vision_pattern(family: ModelFamily) -> str | None:
    names = [m.rsplit(".", 1)[-1] for m in (*family.vision_modules, *family.projector_modules)]
    return rf".*({'|'.join(map(re.escape, names))}).*" if names else None


def lora_config(train: TrainConfig, family: ModelFamily) -> LoraConfig:
    auto = train.lora.target_modules == "auto"
    exclude = None
    if auto:
        # "all-linear" adapts every linear layer but the LM head; keep the vision side out unless asked.
        exclude = family.exclude_from_lora
        if train.train_vision_tower:
            names = [m.rsplit(".", 1)[-1] for m in family.projector_modules] + list(family.lora_never)
            exclude = rf".*({'|'.join(map(re.escape, names))}).*" if names else None
    return LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        target_modules="all-linear" if auto else list(train.lora.target_modules),
        exclude_modules=exclude,
        modules_to_save=list(family.lora_modules_to_save)
        + ([m.rsplit(".", 1)[-1] for m in family.projector_modules] if train.train_projector else [])
        or None,
        use_dora=train.method == "dora",
        task_type=family.lora_task_type,  # SEQ_CLS for classifiers: their head trains in full
    )


def prepare_for_training(model, train: TrainConfig, family: ModelFamily):
    """The model to hand the Trainer. Seed before calling: LoRA init draws random numbers."""
    if train.method in PEFT_METHODS:
        if train.method == "qlora":
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=train.gradient_checkpointing
            )
        return get_peft_model(model, lora_config(train, family))
    # full: every weight of the language model; the vision side only when asked.
    vision = re.compile(_vision_pattern(family) or r"(?!)")
    projector = tuple(m.rsplit(".", 1)[-1] for m in family.projector_modules)
    for name, param in model.named_parameters():
        in_vision = bool(vision.match(name))
        is_projector = any(p in name for p in projector)
        param.requires_grad = (
            (not in_vision)
            or (is_projector and train.train_projector)
            or (train.train_vision_tower and not is_projector)
        )
    return model
