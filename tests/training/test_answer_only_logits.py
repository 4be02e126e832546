"""The answer-only LM head gives the same loss and gradients as the full one, for every family."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.models.test_families import CHAT_FAMILIES
from tuneline.config.schema import ModelConfig, TrainConfig
from tuneline.data.records import Record
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.adapters import prepare_for_training
from tuneline.training.collate import ChatCollator
from tuneline.training.loss import answer_only_loss


@pytest.mark.parametrize("name", CHAT_FAMILIES)  # chat models: answer tokens
def test_answer_only_loss_and_grads_equal_full_logits(name, tmp_path):
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    Image.new("RGB", (40, 40), (30, 200, 40)).save(tmp_path / "g.png")
    records = []
    for i, answer in enumerate(["green", "a longer answer of several words"]):
        content = [{"type": "text", "text": f"question {i}?"}]
        if resolved.family.multimodal:
            content.insert(0, {"type": "image", "path": str(tmp_path / "g.png")})
        records.append(
            Record(
                id=str(i),
                source="t",
                messages=[
                    {"role": "user", "content": content},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
            )
        )
    batch = ChatCollator(processor, 128)(records)
    torch.manual_seed(0)
    model = prepare_for_training(load_model(resolved), TrainConfig(), resolved.family)
    for p in model.parameters():  # give LoRA B non-zero values so gradients reach every adapter weight
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)

    full = model(**batch).loss
    full.backward()
    grads_full = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    ours, outputs = answer_only_loss(model, batch)
    ours.backward()
    n_answer = int((batch["labels"][:, 1:] != -100).sum())
    assert outputs.logits.shape[-2] == n_answer  # only answer rows were computed
    assert torch.allclose(full, ours, atol=1e-5), (float(full), float(ours))
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, grads_full[n], atol=1e-6, rtol=1e-4), n
