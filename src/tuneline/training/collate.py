"""Turn canonical records into model batches with loss only on the assistant's answer tokens.

For each assistant turn the template is rendered twice, up to the turn's generation prompt and
through the turn; the tokens in between (the answer and its end-of-turn marker) are the only
labels. Image placeholder tokens are never labels, and padding is never a label. Every key the
processor returns is kept (Gemma 3 needs ``token_type_ids`` for bidirectional image attention).
Nothing is truncated: a sample longer than ``max_seq_length`` is an error naming the record.

Text-only records can be tokenized once before training (:meth:`ChatCollator.pretokenize`): their
token ids and answer spans are kept (int32, up to a token budget) and later batches are only padded,
giving the same tensors as tokenizing them again. Rendering the template three times per record is the
collator's whole cost on small models; it is paid once instead of once per epoch, and not in the steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.models.processing import ChatProcessor

IGNORE = -100


def load_images(record: Record) -> list[Image.Image]:
    images = []
    for path in record.images:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ChatCollator:
    def __init__(
        self,
        processor: ChatProcessor,
        max_seq_length: int,
        *,
        loss_weights: dict[str, float] | None = None,
        image_keys: bool = False,
    ) -> None:
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.loss_weights = loss_weights  # record id -> weight of its loss (class-weighted loss)
        self.image_keys = image_keys  # emit "<record id>#<n>" per image, for the image feature cache
        self.image_ids = torch.tensor(sorted(processor.image_token_ids), dtype=torch.long)
        # record id -> (token ids, answer spans) of text-only records, filled by pretokenize()
        self._tokenized: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}

    def pretokenize(self, records: list[Record], max_tokens: int = 200_000_000) -> int:
        """Tokenize the text-only records once (up to ``max_tokens`` kept, int32); returns how many.

        Only where plain tokenizer output is ``input_ids`` + ``attention_mask``, so that padding the
        stored ids reproduces exactly what ``__call__`` would build."""
        probe = self.processor.encode([self.processor.render(records[0].messages)]) if records else {}
        if set(probe) != {"input_ids", "attention_mask"}:
            return 0
        kept = len(self._tokenized)
        budget = max_tokens - sum(len(ids) for ids, _ in self._tokenized.values())
        for record in records:
            if record.images or record.id in self._tokenized:
                continue
            enc = self.processor.encode([self.processor.render(record.messages)])
            full = enc["input_ids"][0].tolist()
            if len(full) > budget:
                break
            budget -= len(full)
            spans = self.answer_spans(record, [], full)
            self._tokenized[record.id] = (np.asarray(full, dtype=np.int32), spans)
        return len(self._tokenized) - kept

    def _from_tokenized(self, records: list[Record]) -> dict[str, torch.Tensor]:
        rows = [self._tokenized[r.id] for r in records]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.processor.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (ids, spans) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            attention_mask[i, : len(ids)] = 1
            for start, end in spans:
                labels[i, start:end] = input_ids[i, start:end]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _ids(
        self, messages: list[dict[str, Any]], images: list[Image.Image], generation_prompt: bool
    ) -> list[int]:
        n_images = sum(1 for m in messages for p in m["content"] if p["type"] == "image")
        text = self.processor.render(messages, add_generation_prompt=generation_prompt)
        enc = self.processor.encode([text], [images[:n_images]] if n_images else None)
        return enc["input_ids"][0].tolist()

    def answer_spans(
        self, record: Record, images: list[Image.Image], full_ids: list[int]
    ) -> list[tuple[int, int]]:
        """[start, end) token spans of every assistant turn within ``full_ids``."""
        spans = []
        for j, m in enumerate(record.messages):
            if m["role"] != "assistant":
                continue
            before = self._ids(record.messages[:j], images, generation_prompt=True)
            through = self._ids(record.messages[: j + 1], images, generation_prompt=False)
            start = _common_prefix(before, full_ids)
            end = _common_prefix(through, full_ids)
            if end > start:
                spans.append((start, end))
        return spans

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        if self._tokenized and all(r.id in self._tokenized for r in records):
            batch = self._from_tokenized(records)
            images: list[list[Image.Image]] = [[] for _ in records]
        else:
            images = [load_images(r) for r in records]
            texts = [self.processor.render(r.messages) for r in records]
            batch = self.processor.encode(texts, images if any(images) else None, padding_side="right")
        input_ids = batch["input_ids"]
        if input_ids.shape[1] > self.max_seq_length:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            worst = max(range(len(records)), key=lambda i: lengths[i])
            raise DataError(
                f"record {records[worst].id} ({records[worst].source}) is {lengths[worst]} tokens "
                f"including image tokens, above data.max_seq_length={self.max_seq_length}",
                hint="raise data.max_seq_length or shorten the sample; image tokens are never truncated",
            )
        labels = batch.pop("labels", None)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE)
            for i, record in enumerate(records):
                n = int(batch["attention_mask"][i].sum())
                full = input_ids[i, :n].tolist()
                for start, end in self.answer_spans(record, images[i], full):
                    labels[i, start:end] = input_ids[i, start:end]
        labels[batch["attention_mask"] == 0] = IGNORE
        labels[torch.isin(labels, self.image_ids)] = IGNORE
        out = dict(batch)
        out["labels"] = labels
        if self.loss_weights is not None:
            out["loss_weight"] = torch.tensor([self.loss_weights.get(r.id, 1.0) for r in records])
        if self.image_keys and any(images):
            out["image_keys"] = [
                f"{r.id}#{j}" for r, ims in zip(records, images, strict=True) for j in range(len(ims))
            ]
        return out
