"""Every registered model family, proven on its tiny preset: loads through from_pretrained, labels only the
answer, trains (forward + backward), and keeps the LoRA invariants."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tuneline.config.schema import TrainConfig
from tuneline.data.records import Record
from tuneline.models.families import family_names
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.adapters import prepare_for_training
from tuneline.training.collate import IGNORE, ChatCollator


def _record(image: str | None, answer: str) -> Record:
    content = ([{"type": "image", "path": image}] if image else []) + [
        {"type": "text", "text": "What colour?"}
    ]
    return Record(
        id="r",
        source="t:1",
        messages=[
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    )


@pytest.mark.parametrize("name", family_names())
def test_family(name, tmp_path):
    from tuneline.config.schema import ModelConfig

    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    assert resolved.family.name == name
    processor = load_processor(resolved)
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(image)
    record = _record(str(image) if resolved.family.multimodal else None, "red")
    batch = ChatCollator(processor, max_seq_length=128)([record])

    # Labels: the answer and the turn's end marker, nothing else; image tokens never.
    labels = batch["labels"][0]
    text = processor.tokenizer.decode(labels[labels != IGNORE])
    assert text.strip().startswith("red") and len(text.strip()) <= len("red") + 20
    assert not set(labels[labels != IGNORE].tolist()) & processor.image_token_ids
    if resolved.family.multimodal:
        assert set(batch["input_ids"][0].tolist()) & processor.image_token_ids

    # LoRA: train a few steps; frozen weights unchanged, adapters changed, merged == unmerged.
    torch.manual_seed(0)
    base_weights = {k: v.clone() for k, v in load_model(resolved).state_dict().items()}
    model = prepare_for_training(load_model(resolved), TrainConfig(learning_rate=1e-2), resolved.family)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss)
    for pname, param in model.base_model.model.named_parameters():
        if "lora_" not in pname and "modules_to_save" not in pname:
            key = pname.replace(".base_layer", "").replace(".original_module", "")
            assert torch.equal(param, base_weights[key]), pname
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    vision = [m.rsplit(".", 1)[-1] for m in resolved.family.vision_modules]
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names and not any(v in n for v in vision for n in lora_names)  # the vision side stays frozen
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        unmerged = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    assert torch.allclose(unmerged, merged, atol=1e-4), float((unmerged - merged).abs().max())
