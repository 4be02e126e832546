"""The attention masks of a training batch, built in a few tensor operations instead of per step by
transformers' composable mask functions.

transformers 5 builds every batch's 4-D mask from Python mask functions (causal, padding, packed
sequences, Gemma 3's bidirectional image blocks, sliding window) composed and evaluated through
``torch._dynamo``-wrapped helpers; on a small model that is a large share of a step (measured on the tiny
Gemma 3 of benchmarks/peers: 12 ms of a 21 ms step). The same masks are a handful of broadcast
comparisons, built here and handed to the model as a ready 4-D mask, which transformers uses as is:

* causal, keys limited to non-padding (right padding), and with packed rows (``position_ids``
  restarting, no ``attention_mask``) to the query's own sample: block-diagonal;
* Gemma 3: image tokens of one image attend to each other both ways (``token_type_ids``), and the
  sliding-window layers get their own mask (``{"full_attention": ..., "sliding_attention": ...}``).

Only for the families whose masks are exactly these (``MASKED_TYPES``) under SDPA (a boolean mask);
anything else keeps transformers' own path, and so does a plain causal batch (no padding, one sample per
row, no image), which SDPA runs without any mask. tests/training/test_masks.py checks logits equal to
transformers' masks for padded, packed and image batches.
"""

from __future__ import annotations

import torch

MASKED_TYPES = ("gemma3",)  # measured: Llama's own masks cost nothing, Gemma 3's half a step


def model_config(model):
    """The transformers config under PEFT / DDP wrappers."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return getattr(model, "config", None)


def applies(config) -> bool:
    impl = getattr(config, "_attn_implementation", None) or "eager"
    return getattr(config, "model_type", None) in MASKED_TYPES and impl == "sdpa"  # a boolean mask


def _sample_ids(inputs: dict) -> torch.Tensor | None:
    """Per token, the index of its sample within the row (packed rows), or None (one sample per row)."""
    positions = inputs.get("position_ids")
    if positions is None or inputs.get("attention_mask") is not None:
        return None
    first = positions[:, :1] - 1
    return (torch.diff(positions, prepend=first, dim=-1) != 1).cumsum(-1)


def _image_blocks(token_type_ids: torch.Tensor) -> torch.Tensor:
    """Per token, the index of its image (a run of image tokens) in the row, -1 for text."""
    image = token_type_ids == 1
    starts = image.clone()
    starts[:, 1:] &= ~image[:, :-1]
    return torch.where(image, starts.cumsum(-1) - 1, torch.full_like(token_type_ids, -1))


def build(config, inputs: dict):
    """The ready attention mask(s) for ``inputs``, or None where transformers' own path should run."""
    if not applies(config):
        return None
    ids = inputs["input_ids"]
    b, t = ids.shape
    device = ids.device
    q = torch.arange(t, device=device)
    allowed = (q[None, :] <= q[:, None])[None].expand(b, t, t)  # [b, query, key]
    mask = inputs.get("attention_mask")
    if mask is not None:
        if mask.dim() != 2:
            return None
        allowed = allowed & mask.bool()[:, None, :]
    samples = _sample_ids(inputs)
    if samples is not None:
        allowed = allowed & (samples[:, :, None] == samples[:, None, :])
    types = inputs.get("token_type_ids") if config.model_type == "gemma3" else None
    images = types is not None and bool((types == 1).any())
    if samples is None and not images and (mask is None or bool(mask.all())):
        return None  # plain causal: SDPA's is_causal path needs no mask at all
    if config.model_type != "gemma3":
        return allowed[:, None]
    if images and types is not None:  # images implies types
        blocks = _image_blocks(types)
        both_ways = (blocks[:, :, None] == blocks[:, None, :]) & (blocks[:, :, None] >= 0)
        allowed = allowed | both_ways
    text = getattr(config, "text_config", config)
    window = getattr(text, "sliding_window", None)
    sliding = allowed if window is None else allowed & ((q[:, None] - q[None, :]) < window)[None]
    return {"full_attention": allowed[:, None], "sliding_attention": sliding[:, None]}
