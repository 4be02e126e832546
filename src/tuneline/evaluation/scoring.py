"""Score a model on records: answer-token loss and greedy-generation exact match."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tuneline.data.records import Record, load_images
from tuneline.models.processing import ChatProcessor
from tuneline.training.collate import ChatCollator

_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for exact match."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


@dataclass
class Scores:
    loss: float
    accuracy: float
    n: int
    seconds: float
    predictions: list[str] = field(default_factory=list)

    def headline(self) -> dict[str, float]:
        return {"loss": self.loss, "accuracy": self.accuracy, "n": self.n}


def _batches(items: list[Record], size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def answer_loss(model, collator: ChatCollator, records: list[Record], batch_size: int, device) -> float:
    """Mean cross-entropy over every answer token of every record (token-weighted)."""
    total, count = 0.0, 0
    for chunk in _batches(records, batch_size):
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        mask = shift_labels != -100
        total += torch.nn.functional.cross_entropy(
            shift_logits[mask], shift_labels[mask], reduction="sum"
        ).item()
        count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def generate_answers(
    model, processor: ChatProcessor, records: list[Record], batch_size: int, max_new_tokens: int, device
) -> list[str]:
    """Greedy answers to each record's prompt (everything before its last assistant turn)."""
    answers: list[str] = []
    for chunk in _batches(records, batch_size):
        texts = [processor.render(r.prompt_messages, add_generation_prompt=True) for r in chunk]
        images = [load_images(r) for r in chunk]
        batch = processor.encode(texts, images if any(images) else None, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=processor.stop_token_ids,
            pad_token_id=processor.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += [processor.decode(row).strip() for row in new.tolist()]
    return answers


def score(
    model,
    processor: ChatProcessor,
    records: list[Record],
    *,
    batch_size: int,
    max_new_tokens: int,
    max_seq_length: int,
    on_batch: Callable[[], None] | None = None,
) -> Scores:
    device = next(model.parameters()).device
    model.eval()
    started = time.time()
    loss = answer_loss(model, ChatCollator(processor, max_seq_length), records, batch_size, device)
    predictions = generate_answers(model, processor, records, batch_size, max_new_tokens, device)
    correct = sum(normalise(p) == normalise(r.answer) for p, r in zip(predictions, records, strict=True))
    return Scores(
        loss=loss,
        accuracy=correct / len(records),
        n=len(records),
        seconds=time.time() - started,
        predictions=predictions,
    )
