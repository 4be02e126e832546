"""Every registered model family, proven on its tiny preset: loads through from_pretrained, labels only the
answer (chat families) or the class index (classifier families), trains (forward + backward), and keeps the
LoRA invariants."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tuneline.config.schema import TrainConfig
from tuneline.data.records import Record
from tuneline.models.families import family_names, get_family
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


CHAT_FAMILIES = [n for n in family_names() if not get_family(n).is_classifier]
CLASSIFIER_FAMILIES = [n for n in family_names() if get_family(n).is_classifier]


@pytest.mark.parametrize("name", CHAT_FAMILIES)
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


def _review(rid: str, text: str, label: str) -> Record:
    return Record(
        id=rid,
        source=f"t:{rid}",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Classify the sentiment."}]},
            {"role": "user", "content": [{"type": "text", "text": text}]},
            {"role": "assistant", "content": [{"type": "text", "text": label}]},
        ],
        label=label,
    )


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("name", CLASSIFIER_FAMILIES)
def test_classifier_family(name, method):
    from tuneline.config.schema import ModelConfig
    from tuneline.training.sequence import SequenceCollator, classification_loss

    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    assert resolved.family.name == name and resolved.family.is_classifier
    processor = load_processor(resolved)
    labels = ["negative", "neutral", "positive"]
    records = [
        _review("a", "great value, would buy again", "positive"),
        _review("b", "it broke on the first day " * 20, "negative"),  # longer than max_seq_length
        _review("c", "it is okay I guess", "neutral"),
    ]
    batch = SequenceCollator(processor, 24, labels)(records)

    # Inputs: the user text only (no system turn), [CLS] ... [SEP], truncated; labels: class indices.
    assert batch["labels"].tolist() == [2, 0, 1]
    assert batch["input_ids"].shape[1] == 24 and batch["attention_mask"][1].all()
    first = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "great value" in first and "Classify" not in first
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert ids[0] == processor.tokenizer.cls_token_id and ids[-1] == processor.tokenizer.sep_token_id

    # A new head with one logit per class, labels in the config; the same seed draws the same head.
    torch.manual_seed(0)
    base_model = load_model(resolved, labels=labels)
    assert base_model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    torch.manual_seed(0)
    again = load_model(resolved, labels=labels)
    assert torch.equal(base_model.classifier.weight, again.classifier.weight)
    base_weights = {k: v.clone() for k, v in base_model.state_dict().items()}

    model = prepare_for_training(again, TrainConfig(method=method, learning_rate=1e-2), resolved.family)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(classification_loss(model, batch)[0])

    before = eval_loss()
    model.train()
    for _ in range(6):
        loss, _ = classification_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = eval_loss()
    assert torch.isfinite(loss) and after < before, (before, after)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if method == "full":
        assert all(p.requires_grad for p in model.parameters())
        assert not torch.equal(
            model.bert.embeddings.word_embeddings.weight,
            base_weights["bert.embeddings.word_embeddings.weight"],
        )
        return

    # LoRA: the encoder's weights are frozen and unchanged, the adapters and the whole head trained,
    # merged logits equal unmerged ones.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert {n for n in trainable if "lora_" not in n} == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    compared = 0
    for pname, param in model.base_model.model.named_parameters():
        if "lora_" not in pname and "modules_to_save" not in pname:
            key = pname.replace(".base_layer", "").replace(".original_module", "")
            assert torch.equal(param, base_weights[key]), pname
            compared += 1
    assert compared > 30
    head = model.base_model.model.classifier.modules_to_save["default"]
    assert not torch.equal(head.weight, base_weights["classifier.weight"])
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        unmerged = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    assert unmerged.shape == (3, 3)
    assert torch.allclose(unmerged, merged, atol=1e-5), float((unmerged - merged).abs().max())
