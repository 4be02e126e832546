"""Qwen2-VL (image + text): ``Qwen2VLForConditionalGeneration`` with an image-only processor."""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2VLProcessor

from tuneline.models.families._qwen import PATCH_SIZE, build_tiny, family, image_only
from tuneline.models.families.base import register_family
from tuneline.models.tiny import TEXT_SIZE

ImageOnlyQwen2VLProcessor = image_only(Qwen2VLProcessor)


def _build(folder: Path, seed: int) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig

    vision = {
        "depth": 2,
        "embed_dim": 32,
        "mlp_ratio": 2,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_size": TEXT_SIZE["hidden_size"],
    }
    build_tiny(
        folder,
        seed,
        config_cls=Qwen2VLConfig,
        text_config_cls=Qwen2VLTextConfig,
        model_cls=Qwen2VLForConditionalGeneration,
        processor_cls=ImageOnlyQwen2VLProcessor,
        vision=vision,
    )


FAMILY = register_family(family("qwen2_vl", _build, ImageOnlyQwen2VLProcessor))
