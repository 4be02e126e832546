"""Gemma 3 (image + text): ``Gemma3ForConditionalGeneration`` with ``Gemma3Processor``."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tuneline.models.families.base import register_family, vision_language_family
from tuneline.models.tiny import (
    DEFAULT_SIZE,
    TINY_SIZES,
    VISION_SIZE,
    head_dim,
    save_checkpoint,
    seeded_model,
    text_config,
)
from tuneline.models.tokenizer import token_id, train_tiny_tokenizer

# The shape of Gemma 3's own template, reduced to what a tiny model needs: image parts become
# <start_of_image>, which the processor expands into the image's soft tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>",
    "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip

IMAGE_SIZE = 32
PATCH_SIZE = 8
TOKENS_PER_IMAGE = 4  # a square whose root divides IMAGE_SIZE / PATCH_SIZE


def build_tiny(folder: Path, seed: int, size: str = DEFAULT_SIZE) -> None:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    ids = partial(token_id, tokenizer)
    text = text_config(Gemma3TextConfig, tokenizer, size, head_dim=head_dim(size), sliding_window=256)
    vision = SiglipVisionConfig(**VISION_SIZE, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )

    def init(model) -> None:
        # Gemma 3 zero-initialises the projector: a from-scratch model would ignore images. Give
        # it a random projection of unit gain so image features reach the language model.
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        proj.normal_(0.0, 1.0 / vision.hidden_size**0.5)

    model = seeded_model(
        Gemma3ForConditionalGeneration, config, seed, tokenizer, ["<eos>", "<end_of_turn>"], init=init
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=TOKENS_PER_IMAGE,
        chat_template=CHAT_TEMPLATE,
    )
    save_checkpoint(folder, model, processor)


FAMILY = register_family(
    vision_language_family(
        "gemma3",
        build_tiny=build_tiny,
        vision="vision_tower",
        projector="multi_modal_projector",
        turn_end="<end_of_turn>",
        tiny_sizes=tuple(TINY_SIZES),
    )
)
