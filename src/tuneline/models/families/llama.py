"""Llama (text only): ``LlamaForCausalLM`` with a fast tokenizer and a Llama-3-style chat format."""

from __future__ import annotations

from pathlib import Path

from tuneline.models.families.base import ModelFamily, register_family
from tuneline.models.tiny import DEFAULT_SIZE, TINY_SIZES, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import train_tiny_tokenizer


def llama3_chat_template(image_token: str | None = None) -> str:
    """Llama 3's chat format (header, content, ``<|eot_id|>`` per turn); with ``image_token``, an image
    item of a message stands as that token (Llama 3.2 Vision, the mllama family)."""
    item = "{% if item['type'] == 'text' %}"
    if image_token is not None:
        item = "{% if item['type'] == 'image' %}" + image_token + "{% elif item['type'] == 'text' %}"
    return (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
        "{% if message['content'] is string %}{{ message['content'] | trim }}"
        "{% else %}{% for item in message['content'] %}" + item + "{{ item['text'] | trim }}{% endif %}"
        "{% endfor %}{% endif %}"
        "<|eot_id|>"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )


CHAT_TEMPLATE = llama3_chat_template()

SPECIAL_TOKENS = [
    "<|pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|unk|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
]  # fmt: skip


def build_tiny(folder: Path, seed: int, size: str = DEFAULT_SIZE) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|end_of_text|>",
            "pad_token": "<|pad|>",
            "unk_token": "<|unk|>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    config = text_config(LlamaConfig, tokenizer, size, tie_word_embeddings=True)
    model = seeded_model(LlamaForCausalLM, config, seed, tokenizer, ["<|end_of_text|>", "<|eot_id|>"])
    save_checkpoint(folder, model, tokenizer)


FAMILY = register_family(
    ModelFamily(
        name="llama",
        model_types=("llama",),
        multimodal=False,
        auto_class="AutoModelForCausalLM",
        build_tiny=build_tiny,
        tiny_sizes=tuple(TINY_SIZES),
        turn_end_tokens=("<|eot_id|>",),
    )
)
