"""Llama 4 (image + text): ``Llama4ForConditionalGeneration`` with ``Llama4Processor``.

transformers 5.23 ships Llama 4's image processor only for the torchvision backend
(``image_processing_llama4`` imports torchvision at module level, and ``AutoImageProcessor`` has no PIL
entry for ``llama4``), and torchvision does not import on the CPU machines here. ``Llama4ImageProcessorPil``
below is a PIL/NumPy port of the same steps (best-fit canvas of square tiles, aspect-preserving resize,
zero padding, split into tiles, a global tile when there is more than one; the geometry is checked against
transformers' helpers). One difference: the stock processor normalises in bfloat16, this one in float32.
``Llama4Processor`` here is the stock processor loading it; it is the family's processor class and the
stand-in for checkpoints naming ``Llama4Processor``. Saved files keep the standard class names, so they
stay ordinary Llama 4 checkpoints.

The model's image placeholder is ``<|patch|>`` (``image_token_index``); the text carries one ``<|image|>``
per image, which the processor expands into ``<|image_start|>`` (tiles, separators) ``<|image|>``
``<|patch|>``... ``<|image_end|>``. The tiny preset is one 32 px tile of 8 px patches: 16 patches,
pixel-shuffled 2x2 into 4 ``<|patch|>`` tokens per tile (``max_patches=1``, so the count is fixed); its
text model has one dense layer and one mixture-of-experts layer (2 experts) so both kinds are exercised.

LoRA never adapts the MoE ``router``: it subclasses ``nn.Linear`` but returns a tuple, which a LoRA
wrapper cannot add to (PEFT's "all-linear" would pick it). The experts are 3-D parameters, not linear
layers, so LoRA adapts the attention and shared-expert layers.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import transformers
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

from tuneline.models.families.base import register_family, register_processor_standin, vision_language_family
from tuneline.models.tiny import TEXT_SIZE, VISION_SIZE, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import token_id, train_tiny_tokenizer

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|header_start|>{{ message['role'] }}<|header_end|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|eot|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>\n\n{% endif %}"
)

IMAGE_TOKENS = (
    "<|image_start|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>",
    "<|image_end|>",
)  # fmt: skip
SPECIAL_TOKENS = [
    "<|finetune_right_pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|unk|>",
    "<|header_start|>", "<|header_end|>", "<|eot|>", *IMAGE_TOKENS,
]  # fmt: skip

TILE_SIZE = 32
PATCH_SIZE = 8
PIXEL_SHUFFLE_RATIO = 0.5  # 2x2 patches -> one token


# --- image processor: a PIL/NumPy port of transformers' torchvision-only Llama4ImageProcessor -------------


@lru_cache(maxsize=16)
def supported_resolutions(max_tiles: int, tile: int) -> tuple[tuple[int, int], ...]:
    """Every canvas (height, width) made of at most ``max_tiles`` square tiles, in transformers' order."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for n in range(max_tiles, 0, -1):
        for h in sorted(d for d in range(1, n + 1) if n % d == 0):
            by_ratio.setdefault(h / (n // h), []).append((h, n // h))
    return tuple((h * tile, w * tile) for group in by_ratio.values() for h, w in group)


def best_fit(size: tuple[int, int], canvases: tuple[tuple[int, int], ...], to_max: bool) -> tuple[int, int]:
    """The canvas needing the least upscaling (if none fits, the least downscaling); smallest area on ties."""
    height, width = size
    scales = [min(ch / height, cw / width) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    chosen = (max(up) if to_max else min(up)) if up else max(s for s in scales if s < 1)
    options = [c for c, s in zip(canvases, scales, strict=True) if s == chosen]
    return min(options, key=lambda c: c[0] * c[1])


def fit_without_distortion(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    height, width = size
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.floor(height * scale_w), target_h), target_w
    return target_h, min(math.floor(width * scale_h), target_w)


class Llama4ImagesKwargs(ImagesKwargs, total=False):
    max_patches: int  # most tiles per image
    resize_to_max_canvas: bool  # upscale to the largest canvas instead of as little as possible


class Llama4ImageProcessorPil(PilBackend):
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 336, "width": 336}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    max_patches = 16
    resize_to_max_canvas = False
    model_input_names = ["pixel_values"]
    valid_kwargs = Llama4ImagesKwargs

    def _preprocess(  # type: ignore[override]  # the PIL port takes Llama 4's own kwargs (valid_kwargs)
        self,
        images: list[np.ndarray],
        size: SizeDict,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        return_tensors: Any,
        max_patches: int,
        resize_to_max_canvas: bool,
        **kwargs: Any,
    ) -> BatchFeature:
        if size.height is None or size.height != size.width:
            raise ValueError("Llama 4 tiles are square: size must have height == width")
        tile: int = size.height
        to_max = resize_to_max_canvas
        canvases = supported_resolutions(max_patches, tile)

        def finish_tile(image: np.ndarray) -> np.ndarray:
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            return image.astype(np.float32)

        tiles, aspect_ratios = [], []
        for image in images:
            height, width = image.shape[-2:]
            target = best_fit((height, width), canvases, to_max)
            # Upscaling stops at the tile size (or the image's own size) unless asked for the max canvas.
            limit = (
                target if to_max else (min(max(height, tile), target[0]), min(max(width, tile), target[1]))
            )
            new_h, new_w = fit_without_distortion((height, width), limit)
            resized = self.resize(
                image, SizeDict(height=max(new_h, 1), width=max(new_w, 1)), resample=resample
            )
            padded = self.pad([resized], pad_size=SizeDict(height=target[0], width=target[1]))[0]
            canvas = finish_tile(np.asarray(padded))
            rows, cols = target[0] // tile, target[1] // tile
            channels = canvas.shape[0]
            split = canvas.reshape(channels, rows, tile, cols, tile).transpose(1, 3, 0, 2, 4)
            image_tiles = list(split.reshape(rows * cols, channels, tile, tile))
            if rows * cols > 1:  # a global view of the whole image follows the tiles
                image_tiles.append(finish_tile(self.resize(image, size, resample=resample)))
            tiles.extend(image_tiles)
            aspect_ratios.append([rows, cols])
        data = {"pixel_values": np.stack(tiles) if return_tensors else tiles, "aspect_ratios": aspect_ratios}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["image_processor_type"] = "Llama4ImageProcessor"  # the standard name: a plain Llama 4 checkpoint
        return out


class Llama4Processor(transformers.Llama4Processor):
    """The stock ``Llama4Processor`` loading :class:`Llama4ImageProcessorPil`; named like it, so that saved
    checkpoints record the standard class."""

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        kwargs.pop("subfolder", None)
        image_processor = Llama4ImageProcessorPil.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]


register_processor_standin("Llama4Processor", Llama4Processor)


# --- tiny preset ---------------------------------------------------------------------------------------


def build_tiny(folder: Path, seed: int) -> None:
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4TextConfig,
        Llama4VisionConfig,
    )

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot|>",
            "pad_token": "<|finetune_right_pad|>",
            "unk_token": "<|unk|>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    ids = partial(token_id, tokenizer)
    text = text_config(
        Llama4TextConfig,
        tokenizer,
        head_dim=TEXT_SIZE["hidden_size"] // TEXT_SIZE["num_attention_heads"],
        intermediate_size_mlp=TEXT_SIZE["intermediate_size"],
        num_local_experts=2,
        num_experts_per_tok=1,
        moe_layers=[1],  # layer 0 dense, layer 1 mixture of experts
        no_rope_layers=[1, 0],  # layer 0 chunked attention with RoPE, layer 1 global attention without
        attention_chunk_size=TEXT_SIZE["max_position_embeddings"],
        tie_word_embeddings=True,
    )
    shuffled = int(VISION_SIZE["hidden_size"] / PIXEL_SHUFFLE_RATIO**2)
    vision = Llama4VisionConfig(
        hidden_size=VISION_SIZE["hidden_size"],
        num_hidden_layers=VISION_SIZE["num_hidden_layers"],
        num_attention_heads=VISION_SIZE["num_attention_heads"],
        intermediate_size=shuffled,  # also the pixel-shuffle adapter's input width
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
        pixel_shuffle_ratio=PIXEL_SHUFFLE_RATIO,
        vision_output_dim=TEXT_SIZE["hidden_size"],
        projector_input_dim=TEXT_SIZE["hidden_size"],
        projector_output_dim=TEXT_SIZE["hidden_size"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    config = Llama4Config(
        text_config=text,
        vision_config=vision,
        boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
        tie_word_embeddings=True,
    )
    model = seeded_model(
        Llama4ForConditionalGeneration, config, seed, tokenizer, ["<|eot|>", "<|end_of_text|>"]
    )
    processor = Llama4Processor(
        image_processor=Llama4ImageProcessorPil(  # type: ignore[call-arg]  # max_patches: Llama4ImagesKwargs
            size={"height": TILE_SIZE, "width": TILE_SIZE}, max_patches=1
        ),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        pixel_shuffle_ratio=PIXEL_SHUFFLE_RATIO,
        chat_template=CHAT_TEMPLATE,
    )
    save_checkpoint(folder, model, processor)


FAMILY = register_family(
    vision_language_family(
        "llama4",
        build_tiny=build_tiny,
        vision="vision_model",
        projector="multi_modal_projector",
        turn_end="<|eot|>",
        prefix="",  # Llama4ForConditionalGeneration holds its parts at the top level
        lm_head="language_model.lm_head",
        lora_never=("router",),  # the MoE router
        processor_class=Llama4Processor,
        image_tokens=IMAGE_TOKENS,
    )
)
