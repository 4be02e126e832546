"""Text-only turns reach a string-content chat template as strings, never as a Python repr of parts."""

from __future__ import annotations

import pytest

from tuneline.config.schema import ModelConfig
from tuneline.data.records import Record
from tuneline.models.load import load_processor, resolve_base
from tuneline.models.processing import template_takes_parts
from tuneline.training.collate import IGNORE, ChatCollator

# The shape of most text models' templates: content inserted as a string.
STRING_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

QUESTION = "Add the two numbers: 3 and 4."
RECORD = Record(
    id="r1",
    source="t:1",
    messages=[
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": "7"}]},
    ],
)


@pytest.fixture(scope="module")
def string_llama():
    processor = load_processor(resolve_base(ModelConfig(base="tiny:llama")))
    processor.tokenizer.chat_template = STRING_TEMPLATE
    return processor


def test_string_template_gets_plain_text(string_llama):
    assert string_llama.text_as_string
    text = string_llama.render(RECORD.messages)
    assert "'type'" not in text and "[{" not in text
    assert f"<|end_header_id|>\n\n{QUESTION}<|eot_id|>" in text
    prompt = string_llama.render(RECORD.messages[:1], add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_collated_sample_trains_on_the_answer_not_a_repr(string_llama):
    batch = ChatCollator(string_llama, max_seq_length=64)([RECORD])
    decoded = string_llama.tokenizer.decode(batch["input_ids"][0])
    assert "type" not in decoded and QUESTION in decoded
    labels = batch["labels"][0]
    assert string_llama.tokenizer.decode(labels[labels != IGNORE]) == "7<|eot_id|>"
    # As many tokens as the string rendering itself, not the ~3x of a rendered list repr.
    plain = string_llama.tokenizer(string_llama.render(RECORD.messages), add_special_tokens=False)
    assert batch["input_ids"].shape[1] == len(plain["input_ids"])


def test_parts_templates_keep_their_parts():
    llama = load_processor(resolve_base(ModelConfig(base="tiny:llama")))  # reads strings or parts
    gemma = load_processor(resolve_base(ModelConfig(base="tiny:gemma3")))  # image parts
    assert not llama.text_as_string and not gemma.text_as_string
    image_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    assert gemma.tokenizer.boi_token in gemma.render(image_turn)


def test_probe_tells_the_formats_apart():
    from jinja2 import Template

    as_string = Template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    as_parts = Template(
        "{% for m in messages %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endfor %}"
    )
    trims = Template("{% for m in messages %}{{ m['content'] | trim }}{% endfor %}")
    assert not template_takes_parts(lambda ms: as_string.render(messages=ms))
    assert template_takes_parts(lambda ms: as_parts.render(messages=ms))
    assert not template_takes_parts(lambda ms: trims.render(messages=ms))
