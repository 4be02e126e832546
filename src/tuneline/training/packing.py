"""Padding-free packing of text-only micro-batches: the samples of a micro-batch become one row.

The row is the concatenation of every sample's tokens without padding, and ``position_ids`` restart
at 0 at each sample. transformers builds a block-diagonal causal mask from restarting position ids
when no attention mask is given and the KV cache is off (the Trainer runs with ``use_cache=False``),
so no token attends across a sample boundary; tests/training/test_packing.py proves it by comparing
each sample's logits packed and alone. With FlashAttention (GPU) the same row runs as variable-length
attention: no compute at all is spent on padding. On CPU attention over the packed row is quadratic in
its length, so keep micro-batches modest (shared/notes/training-facts.md measured the trade-off).

Only for text-only data: image tokens need the processor's per-row layout (and Gemma 3's
bidirectional image attention its own mask).
"""

from __future__ import annotations

import torch

from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.training.collate import IGNORE, ChatCollator


class PackingCollator:
    def __init__(self, collator: ChatCollator) -> None:
        self.collator = collator

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        for r in records:
            if r.images:
                raise DataError(
                    f"record {r.id} ({r.source}) has an image; train.packing is for text-only data",
                    hint="set train.packing: false for multimodal data",
                )
        batch = self.collator(records)
        ids, labels, positions = [], [], []
        for i in range(len(records)):
            n = int(batch["attention_mask"][i].sum())
            ids.append(batch["input_ids"][i, :n])
            row_labels = batch["labels"][i, :n].clone()
            row_labels[0] = IGNORE  # never predict a sample's first token from the previous sample
            labels.append(row_labels)
            positions.append(torch.arange(n))
        weight = batch.get("loss_weight")
        if weight is not None:  # per sample -> per token of the packed row
            batch["loss_weight"] = torch.cat([weight[i].expand(len(x)) for i, x in enumerate(ids)])[None]
        out = {k: v for k, v in batch.items() if k not in ("input_ids", "labels", "attention_mask")}
        out.pop("token_type_ids", None)  # text-only: all zeros, and it must not imply one sequence
        out.update(
            input_ids=torch.cat(ids)[None],
            labels=torch.cat(labels)[None],
            position_ids=torch.cat(positions)[None],
        )
        return out
