"""Cross-dataset packing: first-fit decreasing fills the rows, is a function of (seed, epoch), and keeps
every sample isolated in a multi-row packed batch (its logits and loss as if it were alone)."""

from __future__ import annotations

import random

import pytest
import torch

from tuneline.config.schema import ModelConfig
from tuneline.data.records import Record
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.collate import IGNORE, ChatCollator
from tuneline.training.loss import answer_only_loss
from tuneline.training.packing import PackedRows, PackedRowSampler, PackingCollator, first_fit_decreasing

WORDS = "the a small large left right circle square star ring dot shape note seen today follow visit".split()
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple"]


def _text_set(n: int, seed: int = 0) -> list[Record]:
    """Short chat samples of varied length (3-30 filler words, a one-word answer)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        colour = rng.choice(COLOURS)
        prompt = (
            f"Words: {' '.join(rng.choices(WORDS, k=rng.randint(3, 30)))} {colour}. Which colour is last?"
        )
        records.append(
            Record(
                id=f"r{i}",
                source=f"t:{i}",
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": prompt}]},
                    {"role": "assistant", "content": [{"type": "text", "text": colour}]},
                ],
            )
        )
    return records


@pytest.fixture(scope="module")
def llama():
    resolved = resolve_base(ModelConfig(base="tiny:llama"))
    torch.manual_seed(0)
    return load_processor(resolved), load_model(resolved).eval()


def test_first_fit_decreasing_respects_capacity_and_places_every_item():
    rng = random.Random(1)
    lengths = [rng.randint(1, 100) for _ in range(500)] + [150]  # one item above capacity
    bins = first_fit_decreasing(lengths, 100)
    assert sorted(j for b in bins for j in b) == list(range(len(lengths)))
    assert all(sum(lengths[j] for j in b) <= 100 for b in bins if 500 not in b)
    assert [500] in bins  # the over-long item alone, for the collator to report
    # FFD's bound: at most 11/9 of the optimum (itself at least the total over capacity) plus one.
    assert len(bins) - 1 <= 11 / 9 * sum(lengths[:500]) / 100 + 1


def test_packed_rows_fill_at_least_90_percent_of_max_seq_length(llama):
    processor, _ = llama
    records = _text_set(256)
    count = processor.token_counter()
    lengths = [count(r) for r in records]
    rows = PackedRows(records, lengths, 256, seed=0)
    assert rows.fill_ratio() >= 0.9
    padded_batches = sum(max(lengths[i : i + 4]) * len(lengths[i : i + 4]) for i in range(0, 256, 4))
    assert len(rows) * 256 < padded_batches  # fewer positions than padded micro-batches of 4
    # The token counter's lengths are the collated lengths: a row never exceeds max_seq_length.
    batch = PackingCollator(ChatCollator(processor, 256))([rows[(0, i)] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 256


def test_packing_is_a_function_of_seed_and_epoch():
    lengths = [random.Random(2).randint(5, 60) for _ in range(200)]
    records = _text_set(200)

    def order(seed, epoch):
        rows = PackedRows(records, lengths, 128, seed=seed)
        sampler = PackedRowSampler(rows)
        sampler.set_epoch(epoch)
        return [[r.id for r in rows[key]] for key in sampler]

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    a, b = PackedRows(records, lengths, 128, seed=0), PackedRows(records, lengths, 128, seed=0)
    assert len(a.bins(0)) == len(a.bins(3)) == len(b)  # the same number of rows every epoch
    assert sorted(j for bin_ in a.bins(3) for j in bin_) == list(range(200))  # every sample once


def test_samples_in_packed_rows_are_isolated(llama):
    processor, model = llama
    records = _text_set(7, seed=5)
    collator = ChatCollator(processor, 256)
    rows = [records[:3], records[3:4], records[4:]]  # rows of different widths: a padding tail
    packed = PackingCollator(collator)(rows)
    assert packed["input_ids"].shape[0] == 3 and "attention_mask" not in packed
    with torch.no_grad():
        logits = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
        for i, row in enumerate(rows):
            start = 0
            for r in row:
                alone = collator([r])
                n = alone["input_ids"].shape[1]
                ref = model(**{k: v for k, v in alone.items() if k != "labels"}, use_cache=False).logits[0]
                assert (logits[i, start : start + n] - ref).abs().max() < 1e-4, r.id
                start += n
        # The check can fail: the same rows without restarting positions let samples see each other.
        joined = model(input_ids=packed["input_ids"], use_cache=False).logits
        assert (joined - logits).abs().max() > 1e-2
        # Same loss as the padded batch of the same samples; padding is never a label.
        a, _ = answer_only_loss(model, {**packed, "use_cache": False})
        b, _ = answer_only_loss(model, collator(records))
    assert float(a) == pytest.approx(float(b), abs=1e-4)
    pad = packed["input_ids"] == processor.pad_token_id
    assert pad.any() and (packed["labels"][pad] == IGNORE).all()
    # Flattened (FlashAttention's variable-length form): one row, the same tokens and labels.
    flat = PackingCollator(collator, flatten=True)(rows)
    assert flat["input_ids"].shape[0] == 1
    assert sorted(flat["labels"][flat["labels"] != IGNORE].tolist()) == sorted(
        packed["labels"][packed["labels"] != IGNORE].tolist()
    )
