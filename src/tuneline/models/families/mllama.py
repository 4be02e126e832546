"""Mllama / Llama 3.2 Vision (image + text): ``MllamaForConditionalGeneration`` with ``MllamaProcessor``.

Images reach the language model through cross-attention layers, not through placeholder tokens: the
text holds a single ``<|image|>`` per image, and the processor returns the image tiles
(``pixel_values``, ``aspect_ratio_ids``, ``aspect_ratio_mask``) plus a per-token ``cross_attention_mask``
(which text tokens see which image's tiles; tokens before the first ``<|image|>`` see none). The collator
keeps every processor key, so nothing else is needed; ``<|image|>`` itself is never a label.

The tiny preset: 32 px tiles of 8 px patches, at most 2 tiles per image; a 3-layer text model whose
middle layer is the cross-attention layer. Its tanh gates start at zero in transformers (images ignored);
the preset opens them. The LM head is not tied to the embeddings here (as in the released models), so it
gets the embeddings' gain too.
"""

from __future__ import annotations

import math
from pathlib import Path

from tuneline.models.families.base import register_family, vision_language_family
from tuneline.models.families.llama import llama3_chat_template
from tuneline.models.tiny import EMBED_STD, VISION_SIZE, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import token_id, train_tiny_tokenizer

CHAT_TEMPLATE = llama3_chat_template(image_token="<|image|>")

SPECIAL_TOKENS = [
    "<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|unk|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>",
]  # fmt: skip

TILE_SIZE = 32
PATCH_SIZE = 8
MAX_TILES = 2
ASPECT_RATIOS = [[1, 1], [1, 2], [2, 1]]  # every tiling of at most MAX_TILES tiles, transformers' order
INTERMEDIATE_LAYERS = [0]  # vision layers whose output is concatenated to the last one


def build_tiny(folder: Path, seed: int) -> None:
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": "<|finetune_right_pad_id|>",
            "unk_token": "<|unk|>",
        },
        extra_special_tokens={"image_token": "<|image|>"},
        chat_template=CHAT_TEMPLATE,
    )
    text = text_config(MllamaTextConfig, tokenizer, num_hidden_layers=3, cross_attention_layers=[1])
    vision = MllamaVisionConfig(
        hidden_size=VISION_SIZE["hidden_size"],
        intermediate_size=VISION_SIZE["intermediate_size"],
        num_hidden_layers=VISION_SIZE["num_hidden_layers"],
        attention_heads=VISION_SIZE["num_attention_heads"],
        num_global_layers=1,
        intermediate_layers_indices=INTERMEDIATE_LAYERS,
        vision_output_dim=VISION_SIZE["hidden_size"] * (1 + len(INTERMEDIATE_LAYERS)),
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
        max_num_tiles=MAX_TILES,
        supported_aspect_ratios=ASPECT_RATIOS,
    )
    config = MllamaConfig(
        text_config=text, vision_config=vision, image_token_index=token_id(tokenizer, "<|image|>")
    )

    def init(model) -> None:
        model.lm_head.weight.normal_(0.0, EMBED_STD)
        # The cross-attention layers start with tanh gates at zero: a from-scratch model would ignore images
        # (and its cross-attention weights would get no gradient). Open them half way, as released models are.
        for layer in model.model.language_model.layers:
            for gate in ("cross_attn_attn_gate", "cross_attn_mlp_gate"):
                if hasattr(layer, gate):
                    getattr(layer, gate).fill_(math.pi / 4)

    stops = ["<|eot_id|>", "<|end_of_text|>"]
    model = seeded_model(MllamaForConditionalGeneration, config, seed, tokenizer, stops, init=init)
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(
            size={"height": TILE_SIZE, "width": TILE_SIZE}, max_image_tiles=MAX_TILES
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    save_checkpoint(folder, model, processor)


FAMILY = register_family(
    vision_language_family(
        "mllama",
        build_tiny=build_tiny,
        vision="vision_model",
        projector="multi_modal_projector",
        turn_end="<|eot_id|>",
        image_tokens=("<|image|>",),
    )
)
