"""Padding-free packing of text-only samples across the whole dataset, every sample isolated.

:func:`first_fit_decreasing` packs the training samples' token lengths into rows of at most
``max_seq_length`` tokens (first-fit decreasing: longest first, each into the first row with room),
which fills rows to ~95%+ on chat data instead of padding every micro-batch to its longest sample.
:class:`PackedRows` is the training dataset of those rows and :class:`PackedRowSampler` their order;
both are pure functions of (seed, epoch): ties between equal lengths are broken by the epoch's shuffle
(the rows' length profile, hence their number, is the same in every epoch) and the rows are shuffled
per epoch, so a resumed run sees exactly the rows an uninterrupted one would.

A micro-batch is ``batch_size`` rows. Inside a row ``position_ids`` restart at 0 at each sample, and no
attention mask is passed: transformers then builds a block-diagonal causal mask from the restarting
positions (SDPA / eager on CPU, with the KV cache off as under the Trainer), so no token attends across
a sample boundary; tests/training/test_batching.py proves it by comparing each sample's logits packed
and alone. With FlashAttention (GPU) the rows are flattened into one (``flatten=True``) and run as
variable-length attention over ``cu_seqlens`` derived from the same position ids: no compute is spent
on padding and none on cross-sample attention.

Only for text-only data: image tokens need the processor's per-row layout (and Gemma 3's
bidirectional image attention its own mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch.utils.data import Dataset, Sampler

from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.training.collate import IGNORE, ChatCollator


def first_fit_decreasing(
    lengths: Sequence[int], capacity: int, order: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices packed into bins whose lengths sum to at most ``capacity``, by first-fit decreasing.

    Items are taken longest first (``order`` breaks ties: earlier first); each goes into the first bin
    with room, else a new one. An item longer than ``capacity`` gets a bin of its own. O(n log n): a
    segment tree over the bins' free space finds the first bin with room.
    """
    order = list(range(len(lengths))) if order is None else list(order)
    rank = {j: r for r, j in enumerate(order)}
    items = sorted(order, key=lambda j: (-lengths[j], rank[j]))
    size = 1
    while size < max(1, len(items)):
        size *= 2
    free = [capacity] * (2 * size)  # free[1] is the root; leaves size..2*size-1 are bins 0..size-1
    bins: list[list[int]] = []
    for j in items:
        need = min(int(lengths[j]), capacity)
        node = 1
        while node < size:  # the leftmost leaf with free >= need (an unused bin always has room)
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(j)
        free[node] = 0 if lengths[j] > capacity else free[node] - need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def fill_ratio(lengths: Sequence[int], bins: Sequence[Sequence[int]], capacity: int) -> float:
    """Share of the rows' ``capacity`` positions that hold sample tokens."""
    return sum(lengths[j] for b in bins for j in b) / (capacity * len(bins)) if bins else 0.0


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class PackedRows(Dataset):
    """The training set as packed rows: item ``(epoch, i)`` is row i of that epoch (a list of records)."""

    def __init__(
        self, records: Sequence[Record], lengths: Sequence[int], capacity: int, *, seed: int
    ) -> None:
        if len(lengths) != len(records):
            raise ValueError(f"{len(lengths)} lengths for {len(records)} records")
        self.records = list(records)
        self.lengths = [int(n) for n in lengths]
        self.capacity = capacity
        self.seed = seed
        self._epoch: int = -1
        self._bins: list[list[int]] = []
        self.n_rows = len(self.bins(0))

    def bins(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            order = torch.randperm(len(self.records), generator=_generator(self.seed, epoch)).tolist()
            self._epoch, self._bins = epoch, first_fit_decreasing(self.lengths, self.capacity, order)
        return self._bins

    def fill_ratio(self, epoch: int = 0) -> float:
        return fill_ratio(self.lengths, self.bins(epoch), self.capacity)

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, key: tuple[int, int]) -> list[Record]:
        epoch, i = key
        return [self.records[j] for j in self.bins(epoch)[i]]


class PackedRowSampler(Sampler[tuple[int, int]]):
    """The rows of :class:`PackedRows` in an order determined by (seed, epoch) alone."""

    def __init__(self, rows: PackedRows) -> None:
        self.rows = rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def indices(self, epoch: int) -> list[tuple[int, int]]:
        g = _generator(self.rows.seed + 7919, epoch)
        return [(epoch, i) for i in torch.randperm(len(self.rows), generator=g).tolist()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.indices(self.epoch))


class PackingCollator:
    """Rows of samples -> one padding-free batch: ``batch_size`` packed rows (or one flat row).

    Each item is a packed row (a list of records, from :class:`PackedRows`) or a record; records given
    directly (evaluation batches) make one row together. Rows shorter than the longest are filled with
    pad tokens that form a sample of their own (never a label, attending only to themselves).
    """

    def __init__(self, collator: ChatCollator, *, flatten: bool = False) -> None:
        self.collator = collator
        self.flatten = flatten  # one row for variable-length (FlashAttention) kernels

    def __call__(self, items: list[Record] | list[list[Record]]) -> dict[str, torch.Tensor]:
        # a list of packed rows (lists of records), or one row; isinstance on the first cannot narrow the list
        if items and isinstance(items[0], list):
            rows = [list(item) for item in items]
        else:
            rows = [list(cast("list[Record]", items))]
        records = [r for row in rows for r in row]
        for r in records:
            if r.images:
                raise DataError(
                    f"record {r.id} ({r.source}) has an image; train.packing is for text-only data",
                    hint="set train.packing: false for multimodal data",
                )
        batch = self.collator(records)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        weight = batch.get("loss_weight")
        ids, labels, positions, weights = [], [], [], []
        k = 0
        for row in rows:
            row_ids, row_labels, row_pos, row_w = [], [], [], []
            for _ in row:
                n = int(lengths[k])
                row_ids.append(batch["input_ids"][k, :n])
                sample_labels = batch["labels"][k, :n].clone()
                sample_labels[0] = IGNORE  # never predict a sample's first token from the previous one
                row_labels.append(sample_labels)
                row_pos.append(torch.arange(n))
                if weight is not None:  # per sample -> per token of the packed row
                    row_w.append(weight[k].expand(n))
                k += 1
            ids.append(torch.cat(row_ids))
            labels.append(torch.cat(row_labels))
            positions.append(torch.cat(row_pos))
            if weight is not None:
                weights.append(torch.cat(row_w))
        if self.flatten:
            ids, labels, positions = [torch.cat(ids)], [torch.cat(labels)], [torch.cat(positions)]
            weights = [torch.cat(weights)] if weight is not None else []
        width = max(len(x) for x in ids)
        pad = self.collator.processor.pad_token_id

        def stack(parts: list[torch.Tensor], fill: float | int, restart: bool = False) -> torch.Tensor:
            out = []
            for p in parts:
                tail = width - len(p)
                filler = (
                    torch.arange(tail, dtype=p.dtype) if restart else torch.full((tail,), fill, dtype=p.dtype)
                )
                out.append(torch.cat([p, filler]))
            return torch.stack(out)

        out = {k: v for k, v in batch.items() if k not in ("input_ids", "labels", "attention_mask")}
        out.pop("token_type_ids", None)  # text-only: all zeros, and it must not imply one sequence
        out.update(
            input_ids=stack(ids, pad),
            labels=stack(labels, IGNORE),
            position_ids=stack(positions, 0, restart=True),  # the padding tail restarts: its own block
        )
        if weight is not None:
            out["loss_weight"] = stack(weights, 0.0)
        return out


def flash_attention(model) -> bool:
    """Whether the model runs a FlashAttention kernel (variable-length rows: flatten packed batches)."""
    return "flash" in str(getattr(model.config, "_attn_implementation", "") or "")
