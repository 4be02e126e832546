"""Registry of model families: one module each, registered by name.

A family knows how to recognise its checkpoints (``model_type``), which transformers auto
class loads them, where its language model, vision tower and projector live (for LoRA
targeting and freezing), which tokens end an assistant turn, and how to build its ``tiny:``
preset. Adding a family is adding a module that calls :func:`register_family`.

Built-in: llama (text), bert (encoders such as MiniLM, fine-tuned as sequence classifiers), gemma3,
llava (also Pixtral checkpoints in the LLaVA layout), qwen2_vl, qwen2_5_vl, llama4, mistral3 (Mistral
Small 3.x / Pixtral vision) and mllama (Llama 3.2 Vision, images through
cross-attention). Every one builds its ``tiny:`` preset from a transformers 5.23 config on CPU and loads
through ``from_pretrained``. Where a stock processor needs torchvision (which does not import on the CPU
machines here) a family carries a stand-in: Llama 4's image processor exists only for torchvision (ported
to PIL in llama4.py), and ``PixtralProcessor`` imports a torchvision module although its PIL image processor
works (re-declared in mistral3.py). Stand-ins are registered under the stock class name, so a checkpoint
whose processor_config.json names that class loads through them whatever its family.
"""

from __future__ import annotations

import difflib

from tuneline.errors import ModelError
from tuneline.models.families.base import (
    _FAMILIES,
    _PROCESSOR_STANDINS,
    ModelFamily,
    register_family,
    register_processor_standin,
    vision_language_family,
)

__all__ = [
    "ModelFamily",
    "family_for_model_type",
    "family_names",
    "get_family",
    "processor_standin",
    "register_family",
    "register_processor_standin",
    "vision_language_family",
]


def processor_standin(stock_name: str | None) -> type | None:
    """The class that loads checkpoints whose processor is ``stock_name``, where the stock one cannot."""
    _ensure_builtin()
    return _PROCESSOR_STANDINS.get(stock_name or "")


def _ensure_builtin() -> None:
    # Imported lazily so that `tuneline config ...` never pays for transformers.
    from tuneline.models.families import (  # noqa: F401
        bert,
        gemma3,
        llama,
        llama4,
        llava,
        mistral3,
        mllama,
        qwen2_5_vl,
        qwen2_vl,
    )


def family_names() -> list[str]:
    _ensure_builtin()
    return sorted(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    _ensure_builtin()
    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _FAMILIES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelError(
            f"unknown model family {name!r}",
            hint=f"{hint}known families: {', '.join(sorted(_FAMILIES))}",
        ) from None


def family_for_model_type(model_type: str) -> ModelFamily:
    _ensure_builtin()
    for fam in _FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in _FAMILIES.values() for t in f.model_types)
    raise ModelError(
        f"no tuneline model family handles model_type {model_type!r}",
        hint=f"supported model types: {', '.join(known)}; set model.family to force one",
    )
