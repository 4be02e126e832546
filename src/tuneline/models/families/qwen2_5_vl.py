"""Qwen2.5-VL (image + text): ``Qwen2_5_VLForConditionalGeneration`` with an image-only processor."""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2_5_VLProcessor

from tuneline.models.families._qwen import PATCH_SIZE, build_tiny, family, image_only
from tuneline.models.families.base import register_family
from tuneline.models.tiny import TEXT_SIZE

ImageOnlyQwen2_5_VLProcessor = image_only(Qwen2_5_VLProcessor)


def _build(folder: Path, seed: int) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

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
    build_tiny(
        folder,
        seed,
        config_cls=Qwen2_5_VLConfig,
        text_config_cls=Qwen2_5_VLTextConfig,
        model_cls=Qwen2_5_VLForConditionalGeneration,
        processor_cls=ImageOnlyQwen2_5_VLProcessor,
        vision=vision,
    )


FAMILY = register_family(family("qwen2_5_vl", _build, ImageOnlyQwen2_5_VLProcessor))
