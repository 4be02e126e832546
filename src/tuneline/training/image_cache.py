"""Reuse each image's vision features when the vision tower and the projector are frozen.

With a frozen tower and projector, an image's features (tower + projector output) are the same in
every epoch, yet every step recomputes them: on a VLM the tower is a large share of the step. No peer
framework avoids this. The first time an image is seen its features are computed (without autograd:
nothing on that path trains) and kept; afterwards they are handed to the model through the
``mm_encoder_outputs`` argument that transformers 5 VLMs accept in place of ``pixel_values``, so the
tower does not run at all.

Keys are ``<record id>#<image index>`` (record ids are unique in a snapshot; the training images do
not change during a run, and tuneline applies no random image augmentation). The cache lives in host
memory up to ``train.image_cache_gb``; past that, images are computed every time. A batch whose images
are all cached comes without ``pixel_values`` (training/collate.py: no image is loaded or processed).
It is only enabled when it cannot change the result: tower and projector frozen and no dropout active in
the tower.
"""

from __future__ import annotations

import logging

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

log = logging.getLogger("tuneline.train")

# Per-image inputs the VLMs take besides pixel_values, with the number of leading rows per image.
_IMAGE_KWARGS = ("image_grid_thw", "image_sizes")


def _vision_model(model):
    """The transformers model under PEFT / DDP wrappers: it owns ``get_image_features``."""
    from transformers import PreTrainedModel

    for _ in range(8):
        if isinstance(model, PreTrainedModel):
            return model if hasattr(model, "get_image_features") else None
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            return None
    return None


def cache_is_exact(model, vision_config) -> tuple[bool, str]:
    """Whether caching cannot change training: nothing on the image path trains, no dropout there."""
    inner = _vision_model(model)
    if inner is None:
        return False, "the model has no get_image_features"
    if not _accepts_encoder_outputs(inner):
        return False, f"{type(inner).__name__}.forward takes no mm_encoder_outputs"
    trainable = [n for n, p in inner.named_parameters() if p.requires_grad and _on_image_path(n)]
    if trainable:
        return False, f"the vision side trains ({trainable[0]} …)"
    dropout = getattr(vision_config, "attention_dropout", 0.0) or getattr(vision_config, "dropout", 0.0)
    if dropout:
        return False, f"the vision tower uses dropout {dropout}"
    return True, ""


def _accepts_encoder_outputs(model) -> bool:
    import inspect

    return "mm_encoder_outputs" in inspect.signature(type(model).forward).parameters


def _on_image_path(name: str) -> bool:
    return any(k in name for k in ("vision", "visual", "multi_modal_projector", "mm_projector"))


class ImageFeatureCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.features: dict[str, torch.Tensor] = {}
        self.stacked: bool | None = None  # does the model want one tensor (Gemma 3) or a list per image
        self.hits = self.misses = 0
        self.full_logged = False
        self.disabled = False

    def apply(self, model, inputs: dict) -> dict:
        """``inputs`` with ``pixel_values`` replaced by cached or freshly computed features."""
        keys = inputs.pop("image_keys", None)
        pixels = inputs.get("pixel_values")
        if keys is None or self.disabled:
            return inputs
        if pixels is None and not all(k in self.features for k in keys):  # the collator checks first
            raise RuntimeError(f"a batch without pixel_values has uncached images ({keys[0]} …)")
        per_image: list[torch.Tensor] | None
        if all(k in self.features for k in keys):
            self.hits += len(keys)
            device = pixels.device if pixels is not None else next(model.parameters()).device
            per_image = [self.features[k].to(device, non_blocking=True) for k in keys]
        else:
            per_image = self._compute(model, inputs, keys)
            if per_image is None:
                log.info("image feature cache off: %s returns no projected features", type(model).__name__)
                self.disabled = True
                return inputs
        pooled = torch.stack(per_image) if self.stacked else tuple(per_image)
        out = {k: v for k, v in inputs.items() if k != "pixel_values"}
        # transformers types pooler_output as one tensor; models taking a list per image read a tuple here
        out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=pooled)}  # type: ignore[arg-type]
        return out

    def _compute(self, model, inputs: dict, keys: list[str]) -> list[torch.Tensor] | None:
        inner = _vision_model(model)
        extra = {k: inputs[k] for k in _IMAGE_KWARGS if inputs.get(k) is not None}
        with torch.no_grad():
            pooled = inner.get_image_features(inputs["pixel_values"], **extra, return_dict=True).pooler_output
        if pooled is None:  # the model projects inside forward (Llama 4): nothing reusable comes out
            return None
        self.stacked = isinstance(pooled, torch.Tensor)
        per_image = list(pooled.unbind(0)) if self.stacked else list(pooled)
        if len(per_image) != len(keys):
            raise RuntimeError(f"{len(per_image)} image features for {len(keys)} images")
        self.misses += len(keys)
        for key, feat in zip(keys, per_image, strict=True):
            size = feat.numel() * feat.element_size()
            if key in self.features:
                continue
            if self.bytes + size > self.max_bytes:
                if not self.full_logged:
                    log.info(
                        "image feature cache full (%.2f GB); other images are recomputed", self.bytes / 1e9
                    )
                    self.full_logged = True
                continue
            host = feat.detach().to("cpu", copy=True)
            self.features[key] = host.pin_memory() if feat.is_cuda else host
            self.bytes += size
        return per_image
