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

Image records: the answer spans are found on the tokenizer's own (unexpanded) encoding of the three
renders and carried over to the processor's encoding by aligning both at their ends (the tokens from the
first answer on must be the same in both and follow the last image; checked per record, else the
processor encodes the prefixes too, as before): one
processor call per batch instead of three per record. With the image feature cache
(``image_keys`` + ``cached_images``), a record's token rows are kept after its first batch, and a
later batch whose images all have cached features is built without loading an image or calling the
processor at all: ``pixel_values`` is left out and the cache supplies the features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from tuneline.data.records import Record, load_images
from tuneline.errors import DataError
from tuneline.models.processing import ChatProcessor

IGNORE = -100


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
        cached_images=None,
    ) -> None:
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.loss_weights = loss_weights  # record id -> weight of its loss (class-weighted loss)
        self.image_keys = image_keys  # emit "<record id>#<n>" per image, for the image feature cache
        # image key -> whether the feature cache holds it (then the batch needs no pixel_values)
        self.cached_images = cached_images
        self.image_ids = torch.tensor(sorted(processor.image_token_ids), dtype=torch.long)
        # record id -> (token ids, answer spans, other per-token processor rows), filled by pretokenize()
        # for text-only records, and after their first batch for image records under the feature cache
        self._tokenized: dict[str, tuple[np.ndarray, list[tuple[int, int]], dict[str, np.ndarray]]] = {}

    def pretokenize(self, records: list[Record], max_tokens: int = 200_000_000) -> int:
        """Tokenize the text-only records once (up to ``max_tokens`` kept, int32); returns how many.

        Only where plain tokenizer output is ``input_ids`` + ``attention_mask``, so that padding the
        stored ids reproduces exactly what ``__call__`` would build."""
        probe = self.processor.encode([self.processor.render(records[0].messages)]) if records else {}
        if set(probe) != {"input_ids", "attention_mask"}:
            return 0
        kept = len(self._tokenized)
        budget = max_tokens - sum(len(ids) for ids, _, _ in self._tokenized.values())
        for record in records:
            if record.images or record.id in self._tokenized:
                continue
            enc = self.processor.encode([self.processor.render(record.messages)])
            full = enc["input_ids"][0].tolist()
            if len(full) > budget:
                break
            budget -= len(full)
            spans = self.answer_spans(record, [], full)
            self._tokenized[record.id] = (np.asarray(full, dtype=np.int32), spans, {})
        return len(self._tokenized) - kept

    def _from_tokenized(self, records: list[Record]) -> dict[str, torch.Tensor]:
        rows = [self._tokenized[r.id] for r in records]
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), width), self.processor.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        extra = {
            k: torch.zeros((len(rows), width), dtype=torch.long) for k in {k for r in rows for k in r[2]}
        }
        for i, (ids, spans, other) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            attention_mask[i, : len(ids)] = 1
            for key, values in other.items():
                extra[key][i, : len(ids)] = torch.from_numpy(values.astype(np.int64))
            for start, end in spans:
                labels[i, start:end] = input_ids[i, start:end]
        return {"input_ids": input_ids, "attention_mask": attention_mask, **extra, "labels": labels}

    def _keep_rows(self, records: list[Record], batch, spans: list[list[tuple[int, int]]]) -> None:
        """Remember image records' token rows (the feature cache then serves their images)."""
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        per_token = [
            k
            for k, v in batch.items()
            if k not in ("input_ids", "attention_mask", "labels")
            and isinstance(v, torch.Tensor)
            and v.shape[:2] == batch["input_ids"].shape
        ]
        for i, record in enumerate(records):
            n = int(lengths[i])
            other = {k: batch[k][i, :n].numpy().astype(np.int32) for k in per_token}
            self._tokenized[record.id] = (batch["input_ids"][i, :n].numpy().astype(np.int32), spans[i], other)

    def _ids(
        self,
        messages: list[dict[str, Any]],
        images: list[Image.Image],
        generation_prompt: bool,
        *,
        text_only: bool = False,
    ) -> list[int]:
        n_images = 0 if text_only else sum(1 for m in messages for p in m["content"] if p["type"] == "image")
        text = self.processor.render(messages, add_generation_prompt=generation_prompt)
        enc = self.processor.encode([text], [images[:n_images]] if n_images else None)
        return enc["input_ids"][0].tolist()

    def answer_spans(
        self, record: Record, images: list[Image.Image], full_ids: list[int]
    ) -> list[tuple[int, int]]:
        """[start, end) token spans of every assistant turn within ``full_ids``."""
        if images:
            fast = self._spans_after_images(record, full_ids)
            if fast is not None:
                return fast
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

    def _spans_after_images(self, record: Record, full_ids: list[int]) -> list[tuple[int, int]] | None:
        """Answer spans from the tokenizer's encoding of the renders (images unexpanded), moved to
        ``full_ids`` by aligning the two encodings at their ends: everything from the first answer on
        must be the same tokens in both (checked per record), and lie after the last image token of
        each. None when not (or a span starts before the last image): the processor encodes the
        prefixes then. The tokens right after an image may differ (Gemma 3 expands ``<start_of_image>``
        into ``\n\n<start_of_image>`` + soft tokens + ``<end_of_image>\n\n``), hence the end alignment."""
        image_ids = set(self.image_ids.tolist())
        text = self._ids(record.messages, [], generation_prompt=False, text_only=True)
        tail = next((i for i in range(len(text) - 1, -1, -1) if text[i] in image_ids), None)
        full_tail = next((i for i in range(len(full_ids) - 1, -1, -1) if full_ids[i] in image_ids), None)
        if tail is None or full_tail is None:
            return None
        shift = len(full_ids) - len(text)
        spans = []
        checked = False
        for j, m in enumerate(record.messages):
            if m["role"] != "assistant":
                continue
            before = self._ids(record.messages[:j], [], generation_prompt=True, text_only=True)
            through = self._ids(record.messages[: j + 1], [], generation_prompt=False, text_only=True)
            start, end = _common_prefix(before, text), _common_prefix(through, text)
            if start <= tail or start + shift <= full_tail:
                return None
            if not checked:  # the first answer's start onwards: later spans lie inside it
                if text[start:] != full_ids[start + shift :]:
                    return None
                checked = True
            if end > start:
                spans.append((start + shift, end + shift))
        return spans

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        cached_rows = self._tokenized and all(r.id in self._tokenized for r in records)
        if cached_rows and not any(r.images for r in records):
            batch = self._from_tokenized(records)
            images: list[list[Image.Image]] = [[] for _ in records]
        elif (
            cached_rows
            and self.cached_images is not None
            and all(self.cached_images(f"{r.id}#{j}") for r in records for j in range(len(r.images)))
        ):  # every image's features are cached: no image to load, no processor call
            out: dict[str, Any] = self._from_tokenized(records)  # tensors, and the images' cache keys
            self._check_length(records, out)
            out["image_keys"] = [f"{r.id}#{j}" for r in records for j in range(len(r.images))]
            return self._finish(records, out)
        else:
            images = [load_images(r) for r in records]
            texts = [self.processor.render(r.messages) for r in records]
            batch = self.processor.encode(texts, images if any(images) else None, padding_side="right")
        self._check_length(records, batch)
        input_ids = batch["input_ids"]
        labels = batch.pop("labels", None)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE)
            all_spans = []
            for i, record in enumerate(records):
                n = int(batch["attention_mask"][i].sum())
                full = input_ids[i, :n].tolist()
                spans = self.answer_spans(record, images[i], full)
                all_spans.append(spans)
                for start, end in spans:
                    labels[i, start:end] = input_ids[i, start:end]
            if self.cached_images is not None and any(images):
                self._keep_rows(records, batch, all_spans)
        labels[batch["attention_mask"] == 0] = IGNORE
        out = dict(batch)
        out["labels"] = labels
        if self.image_keys and any(images):
            out["image_keys"] = [
                f"{r.id}#{j}" for r, ims in zip(records, images, strict=True) for j in range(len(ims))
            ]
        return self._finish(records, out)

    def _check_length(self, records: list[Record], batch) -> None:
        input_ids = batch["input_ids"]
        if input_ids.shape[1] > self.max_seq_length:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            worst = max(range(len(records)), key=lambda i: lengths[i])
            raise DataError(
                f"record {records[worst].id} ({records[worst].source}) is {lengths[worst]} tokens "
                f"including image tokens, above data.max_seq_length={self.max_seq_length}",
                hint="raise data.max_seq_length or shorten the sample; image tokens are never truncated",
            )

    def _finish(self, records: list[Record], out: dict) -> dict:
        out["labels"][torch.isin(out["labels"], self.image_ids)] = IGNORE
        if self.loss_weights is not None:
            out["loss_weight"] = torch.tensor([self.loss_weights.get(r.id, 1.0) for r in records])
        return out
