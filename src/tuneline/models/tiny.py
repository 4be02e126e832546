"""Shared pieces of the ``tiny:`` presets: toy sizes, and the finishing touches every preset needs.

Each family module builds its own real architecture from a transformers config; these helpers keep
the sizes and the fixes that apply to all of them in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Toy sizes: big enough to learn the bundled examples, small enough for a CPU test in seconds.
TEXT_SIZE: dict[str, int] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 1024,
}  # fmt: skip
# ``tiny:<family>@s|m|l|big``: the same architecture at four sizes, for cost-quality sweeps on a CPU. ``s`` is
# TEXT_SIZE (so ``tiny:gemma3@s`` is ``tiny:gemma3``); each step doubles the width and adds layers
# (language-model parameters without embeddings: s 0.08M, m 0.6M, l 3.5M, big 31M). ``big`` is the one whose
# compute outweighs the fixed per-request work on a CPU (a forward pass several times @s's request cost):
# a fallback that is genuinely dearer than the small model, as in a real hybrid deployment.
TINY_SIZES: dict[str, dict[str, int]] = {
    "s": TEXT_SIZE,
    "m": {**TEXT_SIZE, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4},
    "l": {
        **TEXT_SIZE, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6,
        "num_attention_heads": 8, "num_key_value_heads": 4,
    },
    "big": {
        **TEXT_SIZE, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 4,
    },
}  # fmt: skip
DEFAULT_SIZE = "s"
VISION_SIZE: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
# The LM heads are tied to the embeddings: at the default std (0.02) no logit can exceed ~1, so a tiny
# model could never become confident. The embeddings get a usable gain instead.
EMBED_STD = 0.25


def head_dim(size: str) -> int:
    dims = TINY_SIZES[size]
    return dims["hidden_size"] // dims["num_attention_heads"]


def text_config(config_cls: type, tokenizer: Any, size: str = DEFAULT_SIZE, **extra: Any) -> Any:
    """A language-model config of toy ``size`` (a key of TINY_SIZES) whose vocabulary and special ids come
    from ``tokenizer``; ``extra`` adds settings or overrides a size."""
    return config_cls(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{**TINY_SIZES[size], **extra},
    )


def save_checkpoint(folder: Any, model: Any, processor: Any) -> None:
    """The checkpoint a tiny preset leaves: weights and config, the processor (or tokenizer) beside them."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def seeded_model(
    model_cls: Any,
    config: Any,
    seed: int,
    tokenizer: Any = None,
    stop_tokens: list[str] | None = None,
    *,
    init: Callable[[Any], None] | None = None,
) -> Any:
    """``model_cls(config)`` with its random weights drawn after ``torch.manual_seed(seed)``, then the
    family's own re-initialisation (``init``, under ``torch.no_grad``), then :func:`finish` for a model that
    generates (``stop_tokens``). Every tiny preset is built this way, so one seed gives one checkpoint."""
    import torch

    torch.manual_seed(seed)
    model = model_cls(config)
    if init is not None:
        with torch.no_grad():
            init(model)
    if stop_tokens is not None:
        finish(model, tokenizer, stop_tokens)
    return model


def finish(model: Any, tokenizer: Any, stop_tokens: list[str]) -> None:
    """Embedding gain, and generation that stops at the end of a turn and pads with the pad token."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBED_STD)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in stop_tokens]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
