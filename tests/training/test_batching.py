"""Batching and compute: the resumable sampler (length grouping, class balance), class-weighted loss,
packing isolation, and the image feature cache."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import TrainingArguments

from tuneline.config.schema import ModelConfig, TrainConfig
from tuneline.data.records import Record
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.adapters import prepare_for_training
from tuneline.training.collate import IGNORE, ChatCollator
from tuneline.training.image_cache import ImageFeatureCache, cache_is_exact
from tuneline.training.loss import TunelineTrainer, answer_only_loss
from tuneline.training.packing import PackingCollator
from tuneline.training.sampling import EpochSampler, class_weights, padding_fraction


def _text(rid: str, prompt: str, answer: str) -> Record:
    return Record(
        id=rid,
        source=f"t:{rid}",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        label=answer,
    )


# ---------------------------------------------------------------- sampler


def test_sampler_order_is_a_function_of_seed_and_epoch():
    s = EpochSampler(50, seed=3, batch_size=4)
    a0, a1 = s.indices(0), s.indices(1)
    assert sorted(a0) == list(range(50)) and sorted(a1) == list(range(50))
    assert a0 != a1  # a new order every epoch
    assert EpochSampler(50, seed=3, batch_size=4).indices(1) == a1  # ... and the same in a new process
    assert EpochSampler(50, seed=4, batch_size=4).indices(0) != a0
    torch.manual_seed(123)  # the global RNG plays no part (the Trainer's grouped sampler uses it)
    s.set_epoch(1)
    assert list(s) == a1


def test_length_grouping_cuts_padding_and_puts_the_longest_batch_first():
    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in range(2000)]
    grouped = EpochSampler(2000, seed=0, batch_size=8, lengths=lengths)
    plain = EpochSampler(2000, seed=0, batch_size=8)
    order = grouped.indices(0)
    assert sorted(order) == list(range(2000))
    assert padding_fraction(lengths, plain.indices(0), 8) > 0.3
    assert padding_fraction(lengths, order, 8) < 0.05
    assert max(lengths[j] for j in order[:8]) == max(lengths)  # out-of-memory shows at step 1
    assert grouped.indices(1) != order  # still shuffled per epoch


def test_length_grouping_does_not_sort_by_label_when_answers_differ_by_a_token():
    # One prompt length; "benign" is one token shorter than "malignant" (the melanoma example).
    labels = ["malignant" if i % 2 else "benign" for i in range(800)]
    lengths = [52 if y == "malignant" else 51 for y in labels]
    order = EpochSampler(800, seed=0, batch_size=8, lengths=lengths).indices(0)
    assert sorted(order) == list(range(800))
    batches = [order[i : i + 8] for i in range(0, 800, 8)]
    pure = sum(len({labels[j] for j in b}) == 1 for b in batches)
    assert pure < 10  # shuffled: ~1% of batches of 8 are one class by chance; sorted: every one
    # Lengths further apart than the slack are still grouped.
    far = [20 if i % 2 else 200 for i in range(800)]
    order = EpochSampler(800, seed=0, batch_size=8, lengths=far).indices(0)
    assert padding_fraction(far, order, 8) < 0.05  # only where a micro-batch straddles the two


def test_class_balanced_sampler_and_weights():
    labels = ["benign"] * 980 + ["malignant"] * 20
    w = class_weights(labels)
    assert sum(w) / len(w) == pytest.approx(1.0)
    assert sum(x for x, y in zip(w, labels, strict=True) if y == "malignant") == pytest.approx(500)
    s = EpochSampler(1000, seed=0, batch_size=8, weights=w)
    drawn = Counter(labels[j] for e in range(5) for j in s.indices(e))
    assert 0.45 < drawn["malignant"] / 5000 < 0.55  # from 2% to about half
    assert s.indices(2) == EpochSampler(1000, seed=0, batch_size=8, weights=w).indices(2)


class _Echo(torch.nn.Module):
    """A one-parameter 'model' with the logits_to_keep interface: lets a Trainer run in milliseconds."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def forward(self, input_ids, logits_to_keep=None, **kwargs):
        n = int(logits_to_keep.sum())
        return SimpleNamespace(logits=self.w.expand(n, 4) + 0)


def _trainer(tmp_path, seen, sampler, **kw):
    def collate(items):
        seen.extend(items)
        ids = torch.tensor([[1, 2] for _ in items])
        return {"input_ids": ids, "labels": torch.tensor([[IGNORE, 3] for _ in items])}

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_train_epochs=3,
        save_strategy="steps",
        save_steps=4,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        **kw,
    )
    return TunelineTrainer(
        model=_Echo(), args=args, train_dataset=list(range(6)), data_collator=collate, sampler=sampler
    )


def test_trainer_uses_the_sampler_per_epoch_and_resume_continues_the_same_order(tmp_path):
    sampler = EpochSampler(6, seed=1, batch_size=2, lengths=[5, 1, 9, 3, 7, 2])
    expected = [i for e in range(3) for i in sampler.indices(e)]
    seen: list[int] = []
    _trainer(tmp_path / "a", seen, sampler).train()
    assert seen == expected  # the Trainer sets the epoch on our sampler

    # Resume from step 4 (mid-epoch 1 of 3): exactly the remaining batches, in the same order.
    seen_b: list[int] = []
    _trainer(tmp_path / "b", [], EpochSampler(6, seed=1, batch_size=2, lengths=[5, 1, 9, 3, 7, 2])).train()
    resumed = EpochSampler(6, seed=1, batch_size=2, lengths=[5, 1, 9, 3, 7, 2])
    _trainer(tmp_path / "b", seen_b, resumed).train(
        resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-4")
    )
    assert seen_b == expected[8:]


# ---------------------------------------------------------------- loss weights


def test_class_weighted_loss_weights_each_sample():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)

    def model(input_ids, logits_to_keep, **_):
        return SimpleNamespace(logits=logits[logits_to_keep])

    labels = torch.full((2, 5), IGNORE)
    labels[0, 3], labels[1, 2], labels[1, 4] = 4, 7, 1
    inputs = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "labels": labels}
    ce = torch.nn.functional.cross_entropy
    per = [
        ce(logits[0, 2], torch.tensor(4)),
        ce(logits[1, 1], torch.tensor(7)),
        ce(logits[1, 3], torch.tensor(1)),
    ]
    plain, _ = answer_only_loss(model, inputs)
    assert plain == pytest.approx(float(sum(per) / 3), abs=1e-6)
    weighted, _ = answer_only_loss(model, {**inputs, "loss_weight": torch.tensor([3.0, 0.5])})
    assert weighted == pytest.approx(float((3 * per[0] + 0.5 * per[1] + 0.5 * per[2]) / 3), abs=1e-6)


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_packed_samples_cannot_attend_across_the_boundary(name):
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    torch.manual_seed(0)
    model = load_model(resolved).eval()
    records = [
        _text("a", "Name a warm colour please", "red"),
        _text("b", "Say yes", "yes"),
        _text("c", "What is the colour of the sky on a clear day", "blue"),
    ]
    collator = ChatCollator(processor, 256)
    packed = PackingCollator(collator)(records)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        row = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        start = 0
        for r in records:
            alone = collator([r])
            n = alone["input_ids"].shape[1]
            ref = model(**{k: v for k, v in alone.items() if k != "labels"}, use_cache=False).logits[0]
            assert (row[start : start + n] - ref).abs().max() < 1e-4, r.id  # isolated: as if alone
            start += n
        # The check can fail: the same row as one sequence lets later samples see earlier ones.
        joined = model(input_ids=packed["input_ids"], use_cache=False).logits[0]
        assert (joined - row).abs().max() > 1e-2
    # Labels: exactly the answers of the padded batch, none at a sample's first token.
    padded = collator(records)
    assert sorted(packed["labels"][packed["labels"] != IGNORE].tolist()) == sorted(
        padded["labels"][padded["labels"] != IGNORE].tolist()
    )
    # Same loss as the padded batch (answer tokens only).
    with torch.no_grad():
        a, _ = answer_only_loss(model, {**packed, "use_cache": False})
        b, _ = answer_only_loss(model, padded)
    assert float(a) == pytest.approx(float(b), abs=1e-4)


# ---------------------------------------------------------------- image feature cache


@pytest.mark.parametrize("name", ["gemma3", "llava", "qwen2_vl"])
def test_image_feature_cache_gives_the_same_loss_without_running_the_tower(name, tmp_path):
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    records = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + 8 * i, 40), colour).save(path)  # sizes differ: Qwen's token counts differ
        records.append(
            Record(
                id=f"r{i}",
                source="t",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "path": str(path)}, {"type": "text", "text": "?"}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                ],
            )
        )
    torch.manual_seed(0)
    model = prepare_for_training(load_model(resolved), TrainConfig(), resolved.family)
    assert cache_is_exact(model, model.config.vision_config) == (True, "")
    collator = ChatCollator(processor, 512, image_keys=True)
    cache = ImageFeatureCache(10**9)
    tower_calls = []
    tower = next(m for n, m in model.named_modules() if n.endswith(("vision_tower", "visual")))
    tower.register_forward_hook(lambda *_: tower_calls.append(1))

    for order in (records, records[::-1]):  # second pass: other batch order, every image cached
        batch = collator(order)
        calls_before = len(tower_calls)
        cached, _ = answer_only_loss(model, cache.apply(model, dict(batch)))
        ran_tower = len(tower_calls) > calls_before
        plain, _ = answer_only_loss(model, {k: v for k, v in batch.items() if k != "image_keys"})
        assert float(cached) == pytest.approx(float(plain), abs=1e-5)
    assert not ran_tower and cache.hits == 3 and cache.misses == 3

    # Trained projector: the cache would change training, so it is refused.
    trained = prepare_for_training(load_model(resolved), TrainConfig(train_projector=True), resolved.family)
    exact, why = cache_is_exact(trained, trained.config.vision_config)
    assert not exact and "trains" in why


@pytest.mark.parametrize("name", ["gemma3", "qwen2_vl", "llama4"])
def test_token_counter_matches_the_collator_for_every_image_size(name, tmp_path):
    """Length grouping and the token budget count what the collator builds, also where the number of
    image tokens depends on the image size (Qwen-VL)."""
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    count, collator = processor.token_counter(), ChatCollator(processor, 100_000)
    seen = set()
    for size in [(40, 40), (300, 200), (90, 640)]:
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (100, 50, 20)).save(path)
        record = Record(
            id="x",
            source="t",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "path": str(path)}, {"type": "text", "text": "?"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
            ],
        )
        n = collator([record])["input_ids"].shape[1]
        assert count(record) == n, size
        seen.add(n)
    if name == "qwen2_vl":
        assert len(seen) > 1  # the sizes really gave different counts
