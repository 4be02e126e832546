"""The model family record, the image + text family helper and the registry (tuneline.models.families
loads the built-in ones).

Family modules import this module, not their package: the package's ``__init__`` imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_types: tuple[str, ...]
    multimodal: bool
    auto_class: str  # name of the transformers Auto* class that loads it
    build_tiny: Callable[..., None]  # (folder, seed[, size]) -> writes a checkpoint there
    # Sizes of the tiny preset (``tiny:<family>@<size>``, models/tiny.py TINY_SIZES); build_tiny then takes
    # ``size=``. Empty: one size only.
    tiny_sizes: tuple[str, ...] = ()
    # Modules never adapted by LoRA "auto" targeting (vision side); regex over full names.
    exclude_from_lora: str | None = None
    # Module names LoRA must never adapt, even when the vision tower trains (e.g. Llama 4's MoE router).
    lora_never: tuple[str, ...] = ()
    projector_modules: tuple[str, ...] = ()  # attribute paths of the vision->text projector
    vision_modules: tuple[str, ...] = ()  # attribute paths of the vision tower
    turn_end_tokens: tuple[str, ...] = field(default_factory=tuple)  # stop generation on these
    # Full module names kept out of 4-bit quantization (bitsandbytes matches from the start of the name):
    # the vision side is too small and too sensitive, the LM head stays exact.
    quant_skip_modules: tuple[str, ...] = ("lm_head",)
    # A processor class to load by name where AutoProcessor cannot (it would fall back to the tokenizer).
    processor_class: type | None = None
    # Placeholder tokens the processor puts around or in place of an image (never labels), where the
    # tokenizer does not name them itself (``image_token``, ``boi_token``, ...).
    image_tokens: tuple[str, ...] = ()
    # "causal": a generative chat model, trained on answer tokens and scored by the log-probability of each
    # label's answer. "classifier": an encoder with a classification head over the prompt text, trained with
    # cross-entropy on class indices and scored by the softmax of its logits (no generation).
    kind: Literal["causal", "classifier"] = "causal"
    lora_task_type: str = "CAUSAL_LM"  # peft TaskType: decides the PeftModel class and what it saves
    # Modules trained in full next to LoRA (a classifier's freshly initialised head).
    lora_modules_to_save: tuple[str, ...] = ()

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"


def vision_language_family(
    name: str,
    *,
    build_tiny: Callable[..., None],
    vision: str,
    projector: str,
    turn_end: str,
    prefix: str = "model.",
    lm_head: str = "lm_head",
    lora_never: tuple[str, ...] = (),
    **fields: Any,
) -> ModelFamily:
    """An image + text family loaded by ``AutoModelForImageTextToText``, from where its parts live.

    ``vision`` and ``projector`` are attribute paths under ``prefix`` (the projector may sit inside the
    vision tower, as Qwen-VL's merger does). LoRA "auto" targeting never adapts either (nor
    ``lora_never``), and 4-bit quantization skips both and the LM head; generation stops at ``turn_end``.
    """
    vision_path, projector_path = prefix + vision, prefix + projector
    kept_out = (vision,) if projector_path.startswith(vision_path + ".") else (vision, projector)
    leaves = [path.rsplit(".", 1)[-1] for path in kept_out] + list(lora_never)
    fields.setdefault("model_types", (name,))
    return ModelFamily(
        name=name,
        multimodal=True,
        auto_class="AutoModelForImageTextToText",
        build_tiny=build_tiny,
        exclude_from_lora=rf".*({'|'.join(leaves)}).*",
        lora_never=lora_never,
        projector_modules=(projector_path,),
        vision_modules=(vision_path,),
        turn_end_tokens=(turn_end,),
        quant_skip_modules=(*(prefix + path for path in kept_out), lm_head),
        **fields,
    )


_FAMILIES: dict[str, ModelFamily] = {}
# Processor classes standing in for stock ones that transformers cannot import here (they need
# torchvision), by the stock class name a checkpoint's processor_config.json records.
_PROCESSOR_STANDINS: dict[str, type] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def register_processor_standin(stock_name: str, processor_class: type) -> None:
    _PROCESSOR_STANDINS[stock_name] = processor_class
