from __future__ import annotations

import pytest
import torch

from tuneline.config.schema import ModelConfig
from tuneline.data.records import Record, load_images
from tuneline.errors import DataError
from tuneline.models.load import load_processor, resolve_base
from tuneline.training.collate import IGNORE, ChatCollator


@pytest.fixture(scope="module")
def gemma():
    return load_processor(resolve_base(ModelConfig(base="tiny:gemma3")))


def _record(image: str, answer: str) -> Record:
    return Record(
        id="r1",
        source="t:1",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "path": image},
                    {"type": "text", "text": "What colour is the shape?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    )


def _label_text(processor, batch, row: int) -> str:
    labels = batch["labels"][row]
    return processor.tokenizer.decode(labels[labels != IGNORE])


def test_labels_cover_exactly_the_answer(gemma, shapes_dir):
    image = str(shapes_dir / "images" / "shape-00000.png")
    records = [_record(image, "yellow"), _record(image, "a much longer answer here")]
    batch = ChatCollator(gemma, max_seq_length=64)(records)
    # The answer and the end-of-turn marker that teaches the model to stop; nothing else.
    assert _label_text(gemma, batch, 0) == "yellow<end_of_turn>\n"
    assert _label_text(gemma, batch, 1) == "a much longer answer here<end_of_turn>\n"
    # Labels equal the input ids wherever they are set.
    set_ = batch["labels"] != IGNORE
    assert (batch["labels"][set_] == batch["input_ids"][set_]).all()
    # Image tokens are in the input but never in the labels; padding never either.
    image_ids = gemma.image_token_ids
    assert any(int(t) in image_ids for t in batch["input_ids"][0])
    assert not any(int(t) in image_ids for t in batch["labels"][set_])
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    # Every processor key survives (Gemma 3 needs token_type_ids for image attention).
    assert {"pixel_values", "token_type_ids", "attention_mask"} <= set(batch)


def test_multi_turn_labels_every_assistant_turn_and_no_user_text(gemma, shapes_dir):
    image = str(shapes_dir / "images" / "shape-00001.png")
    rec = Record(
        id="m",
        source="t:2",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [{"type": "image", "path": image}, {"type": "text", "text": "colour?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "blue"}]},
            {"role": "user", "content": [{"type": "text", "text": "shape?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "triangle"}]},
        ],
    )
    batch = ChatCollator(gemma, max_seq_length=128)([rec])
    assert _label_text(gemma, batch, 0) == "blue<end_of_turn>\ntriangle<end_of_turn>\n"


def test_too_long_sample_is_an_error_naming_the_record(gemma, shapes_dir):
    image = str(shapes_dir / "images" / "shape-00000.png")
    with pytest.raises(DataError) as info:
        ChatCollator(gemma, max_seq_length=16)([_record(image, "yellow")])
    assert "record r1" in str(info.value) and "max_seq_length=16" in str(info.value)


def test_text_only_family(shapes_dir):
    llama = load_processor(resolve_base(ModelConfig(base="tiny:llama")))
    rec = Record(
        id="t",
        source="t:3",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "two plus two"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
        ],
    )
    batch = ChatCollator(llama, max_seq_length=64)([rec])
    assert _label_text(llama, batch, 0) == "four<|eot_id|>"


@pytest.mark.parametrize("base", ["tiny:llama", "tiny:gemma3"])
def test_pretokenized_text_batches_equal_tokenizing_again(base):
    """Text tokenized once up front gives the very tensors the collator builds from the template."""
    import torch

    processor = load_processor(resolve_base(ModelConfig(base=base)))
    words = ["one", "two plus two", "a much longer question about the colour of many shapes", "hi"]
    records = [
        Record(
            id=f"t{i}",
            source=f"t:{i}",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": q}]},
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
                *(
                    [
                        {"role": "user", "content": [{"type": "text", "text": "and then?"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
                    ]
                    if i % 2
                    else []
                ),
            ],
        )
        for i, (q, a) in enumerate(zip(words, ["yes", "four", "red and blue", "hello"], strict=True))
    ]
    fresh = ChatCollator(processor, max_seq_length=128, loss_weights={"t1": 2.0})
    cached = ChatCollator(processor, max_seq_length=128, loss_weights={"t1": 2.0})
    assert cached.pretokenize(records) == len(records)
    for batch in (records, records[1:3], records[::-1]):
        a, b = fresh(batch), cached(batch)
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    short = ChatCollator(processor, max_seq_length=8)
    short.pretokenize(records)
    with pytest.raises(DataError, match="max_seq_length=8"):  # the length check still applies
        short(records)
    budget = ChatCollator(processor, max_seq_length=128)
    assert 0 < budget.pretokenize(records, max_tokens=30) < len(records)  # a token budget caps it
    assert budget.pretokenize(records, max_tokens=30) == 0  # a second call counts what is kept against it
    assert cached.pretokenize(records) == 0  # nothing new to keep


@pytest.mark.parametrize("base", ["tiny:gemma3", "tiny:llava", "tiny:qwen2_vl"])
def test_image_answer_spans_without_extra_processor_calls_match_the_processor(base, shapes_dir, monkeypatch):
    processor = load_processor(resolve_base(ModelConfig(base=base)))
    image = str(shapes_dir / "images" / "shape-00002.png")
    records = [_record(image, "yellow"), _record(image, "a much longer answer here")]
    collator = ChatCollator(processor, max_seq_length=256)
    fast = collator(records)
    if base == "tiny:gemma3":  # Gemma 3 expands the image marker with newlines: the fast path still holds
        batch = processor.encode([processor.render(records[0].messages)], [load_images(records[0])])
        assert collator._spans_after_images(records[0], batch["input_ids"][0].tolist()) is not None
    calls = []
    monkeypatch.setattr(ChatCollator, "_spans_after_images", lambda self, r, ids: calls.append(r) and None)
    slow = ChatCollator(processor, max_seq_length=256)(records)  # three processor calls per record
    assert len(calls) == 2
    assert torch.equal(fast["labels"], slow["labels"]) and (fast["labels"] != IGNORE).any()


def test_cached_image_rows_give_the_same_batch_without_pixels(gemma, shapes_dir):
    image = str(shapes_dir / "images" / "shape-00003.png")
    second = _record(image, "blue")
    records = [_record(image, "yellow"), Record(id="r2", source="t:2", messages=second.messages)]
    cached: set[str] = set()
    collator = ChatCollator(gemma, max_seq_length=128, image_keys=True, cached_images=cached.__contains__)
    first = collator(records)
    assert "pixel_values" in first  # features not cached yet: the processor runs
    cached.update(first["image_keys"])
    again = collator(records)
    assert "pixel_values" not in again and again["image_keys"] == first["image_keys"]
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(again[key], first[key]), key
