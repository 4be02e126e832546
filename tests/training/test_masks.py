"""Ready-built attention masks give the logits transformers' own masks give: padded, packed, images."""

from __future__ import annotations

import torch

from tuneline.config.schema import ModelConfig
from tuneline.data.records import Record
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training import masks
from tuneline.training.collate import ChatCollator
from tuneline.training.packing import PackingCollator


def _chat(rid: str, prompt: str, answer: str, image: str | None = None) -> Record:
    content = ([{"type": "image", "path": image}] if image else []) + [{"type": "text", "text": prompt}]
    return Record(
        id=rid,
        source=f"t:{rid}",
        messages=[
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    )


def _logits(model, inputs):
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits


def test_ready_masks_match_transformers(shapes_dir):
    name = "gemma3"
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    torch.manual_seed(0)
    model = load_model(resolved).eval()
    assert masks.applies(model.config)
    image = str(shapes_dir / "images" / "shape-00004.png") if name == "gemma3" else None
    records = [
        _chat("a", "Name a warm colour please, any one", "red", image),
        _chat("b", "Say yes", "yes", image),
        _chat("c", "What is the colour of the sky", "blue"),
    ]
    collator = ChatCollator(processor, 256)
    padded = collator(records)
    ready = masks.build(model.config, padded)
    assert ready is not None
    # The image tokens attend both ways: the check can tell a plain causal mask apart.
    assert isinstance(ready, dict) and bool(ready["full_attention"].triu(1).any())
    reference = _logits(model, padded)
    ours = _logits(model, {**padded, "attention_mask": ready})
    real = padded["attention_mask"].bool()
    assert (ours[real] - reference[real]).abs().max() < 1e-5
    # Packed text rows: block-diagonal, as transformers' packed-sequence mask.
    text = [_chat("d", "Say no", "no"), _chat("e", "Name a cold colour", "blue"), records[2]]
    packed = PackingCollator(collator)([text[:2], text[2:]])
    ready = masks.build(model.config, packed)
    assert (_logits(model, {**packed, "attention_mask": ready}) - _logits(model, packed)).abs().max() < 1e-5
    # A plain causal batch (no padding, one sample per row) needs no mask: SDPA's causal path.
    assert masks.build(model.config, collator(records[2:])) is None
    llama = load_model(resolve_base(ModelConfig(base="tiny:llama")))
    assert not masks.applies(llama.config)  # its own masks: transformers' path
