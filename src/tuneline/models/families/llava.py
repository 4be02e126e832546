"""LLaVA (image + text): ``LlavaForConditionalGeneration`` with ``LlavaProcessor``.

The tiny preset pairs a SigLIP vision tower with a Llama language model, as LLaVA-style checkpoints
do; at 32 px and patch 8 each image becomes 16 tokens.
"""

from __future__ import annotations

from pathlib import Path

from tuneline.models.families.base import register_family, vision_language_family
from tuneline.models.tiny import VISION_SIZE, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import token_id, train_tiny_tokenizer

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
IMAGE_SIZE = 32
PATCH_SIZE = 8


def build_tiny(folder: Path, seed: int) -> None:
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
    )
    text = text_config(LlamaConfig, tokenizer, tie_word_embeddings=True)
    vision = SiglipVisionConfig(**VISION_SIZE, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=token_id(tokenizer, "<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    model = seeded_model(LlavaForConditionalGeneration, config, seed, tokenizer, ["</s>"])
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=0,
    )
    save_checkpoint(folder, model, processor)


FAMILY = register_family(
    vision_language_family(
        "llava",
        build_tiny=build_tiny,
        vision="vision_tower",
        projector="multi_modal_projector",
        turn_end="</s>",
    )
)
