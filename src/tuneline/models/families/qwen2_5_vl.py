"""Qwen2.5-VL (image + text): ``Qwen2_5_VLForConditionalGeneration`` with an image-only processor.

The stock ``Qwen2_5_VLProcessor`` also builds a video processor, which needs torchvision (absent on
CPU machines here). ``ImageOnlyQwen2_5_VLProcessor`` drops the video part; it is loaded by class, not
through AutoProcessor (which, not knowing the name, would silently hand back the tokenizer).
"""

from __future__ import annotations

from pathlib import Path

from transformers import ProcessorMixin, Qwen2_5_VLProcessor

from tuneline.models.families import ModelFamily, register_family
from tuneline.models.tiny import TEXT_SIZE, finish, text_config
from tuneline.models.tokenizer import train_tiny_tokenizer


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):  # noqa: N801 - the transformers naming scheme
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


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


def build_tiny(folder: Path, seed: int) -> None:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
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
    head_dim = TEXT_SIZE["hidden_size"] // TEXT_SIZE["num_attention_heads"]
    text = text_config(
        Qwen2_5_VLTextConfig,
        tokenizer,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    assert sum([2, 3, 3]) * 2 == head_dim
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 16,
        "fullatt_block_indexes": [1],
        "out_hidden_size": TEXT_SIZE["hidden_size"],
    }
    config = Qwen2_5_VLConfig(
        text_config=text.to_dict(),
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    finish(model, tokenizer, ["<|im_end|>", "<|endoftext|>"])
    processor = ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=PATCH_SIZE, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=32 * 32
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


FAMILY = register_family(
    ModelFamily(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        multimodal=True,
        auto_class="AutoModelForImageTextToText",
        build_tiny=build_tiny,
        exclude_from_lora=r".*(visual).*",
        projector_modules=("model.visual.merger",),
        vision_modules=("model.visual",),
        turn_end_tokens=("<|im_end|>",),
        quant_skip_modules=("model.visual", "lm_head"),
        processor_class=ImageOnlyQwen2_5_VLProcessor,
    )
)
