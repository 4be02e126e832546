"""What the Qwen vision-language families share: chat format, tokenizer, and an image-only processor.

The stock Qwen2-VL / Qwen2.5-VL processors also build a video processor, which needs torchvision
(absent on CPU machines here). ``image_only`` derives a processor class without the video part; the
families load it by class, not through AutoProcessor (which, not knowing the name, would silently
hand back the tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ProcessorMixin

from tuneline.models.families.base import ModelFamily, vision_language_family
from tuneline.models.tiny import TEXT_SIZE, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import train_tiny_tokenizer

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
]
PATCH_SIZE = 8
MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2 of the toy text model


def image_only(processor_cls: type) -> type:
    """``processor_cls`` without its video processor (same tokens, same image handling)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return type(f"ImageOnly{processor_cls.__name__}", (processor_cls,), {"__init__": __init__})


def build_tiny(
    folder: Path,
    seed: int,
    *,
    config_cls: type,
    text_config_cls: type,
    model_cls: type,
    processor_cls: type,
    vision: dict[str, Any],
) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
        },
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    assert sum(MROPE_SECTION) * 2 == TEXT_SIZE["hidden_size"] // TEXT_SIZE["num_attention_heads"]
    text = text_config(
        text_config_cls,
        tokenizer,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "mrope_section": MROPE_SECTION, "rope_theta": 1e4},
    )
    config = config_cls(
        text_config=text.to_dict(),
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    model = seeded_model(model_cls, config, seed, tokenizer, ["<|im_end|>", "<|endoftext|>"])
    processor = processor_cls(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=PATCH_SIZE, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=32 * 32
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    save_checkpoint(folder, model, processor)


def family(name: str, build: Any, processor_cls: type) -> ModelFamily:
    """The registry entry both Qwen VL families share (they differ in name, builder and processor)."""
    return vision_language_family(
        name,
        build_tiny=build,
        vision="visual",
        projector="visual.merger",
        turn_end="<|im_end|>",
        processor_class=processor_cls,
    )
