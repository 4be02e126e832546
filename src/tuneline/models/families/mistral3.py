"""Mistral 3 / Pixtral (image + text): ``Mistral3ForConditionalGeneration`` with a Pixtral processor.

transformers 5.23 cannot import its ``PixtralProcessor`` without torchvision: ``processing_pixtral``
imports a helper from the torchvision-backend ``image_processing_pixtral`` at module level (and the class
is declared ``requires(backends=("torchvision", "torch"))``), although the PIL image processor
(``PixtralImageProcessorPil``) works. :class:`PixtralProcessor` below is the same processor on
``ProcessorMixin`` (same constructor, saved files and token expansion), named like the stock class so
that a saved checkpoint stays a standard one. Pixtral checkpoints in the LLaVA layout (``model_type``
``llava`` with a ``pixtral`` vision tower, e.g. Pixtral-12B) name ``PixtralProcessor`` too: the stand-in
is registered for that name, so the llava family loads them as well.

Each image becomes rows of ``[IMG]`` tokens, each row closed by ``[IMG_BREAK]`` and the last by
``[IMG_END]``; one ``[IMG]`` per (patch x spatial merge) square. The tiny preset: 32 px longest edge,
8 px patches merged 2x2, so a square image is 2 rows of 2 ``[IMG]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ProcessorMixin

from tuneline.models.families.base import register_family, register_processor_standin, vision_language_family
from tuneline.models.tiny import TEXT_SIZE, VISION_SIZE, save_checkpoint, seeded_model, text_config
from tuneline.models.tokenizer import train_tiny_tokenizer

# The shape of Mistral Small 3.1's template: [INST] user [/INST] answer</s>; images as [IMG].
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set open = {'system': '[SYSTEM_PROMPT]', 'user': '[INST]', 'assistant': ''}[message['role']] %}"
    "{% set close = {'system': '[/SYSTEM_PROMPT]', 'user': '[/INST]', 'assistant': eos_token}"
    "[message['role']] %}"
    "{{ open }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}[IMG]"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ close }}"
    "{% endfor %}"
)

IMAGE_TOKENS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")
SPECIAL_TOKENS = [
    "<unk>", "<s>", "</s>", "<pad>",
    "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", *IMAGE_TOKENS,
]  # fmt: skip

IMAGE_SIZE = 32  # longest edge
PATCH_SIZE = 8
SPATIAL_MERGE = 2


class PixtralProcessor(ProcessorMixin):
    """transformers' ``PixtralProcessor`` (5.23) without its torchvision import."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size: int = 16,
        spatial_merge_size: int = 1,
        chat_template=None,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token = image_token
        self.image_break_token = image_break_token
        self.image_end_token = image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    @property  # type: ignore[misc]  # ProcessorMixin declares a settable attribute; here it is derived
    def image_token_ids(self) -> list[int | None]:
        return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    def _process_images(self, images, **images_kwargs):
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        step = self.patch_size * self.spatial_merge_size
        height, width = image_inputs["image_sizes"][image_idx]
        row = self.image_token * (int(width) // step)
        return self.image_break_token.join([row] * (int(height) // step)) + self.image_end_token

    @property
    def model_input_names(self):
        return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]


register_processor_standin("PixtralProcessor", PixtralProcessor)


def _tokenizer():
    return train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
        extra_special_tokens={"image_token": "[IMG]"},
        chat_template=CHAT_TEMPLATE,
    )


def _processor(tokenizer: Any, spatial_merge_size: int) -> PixtralProcessor:
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    return PixtralProcessor(
        image_processor=PixtralImageProcessorPil(
            size={"longest_edge": IMAGE_SIZE}, patch_size={"height": PATCH_SIZE, "width": PATCH_SIZE}
        ),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        spatial_merge_size=spatial_merge_size,
        chat_template=CHAT_TEMPLATE,
    )


def _vision_config():
    from transformers import PixtralVisionConfig

    heads = VISION_SIZE["num_attention_heads"]
    return PixtralVisionConfig(
        **VISION_SIZE,
        head_dim=VISION_SIZE["hidden_size"] // heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def _text_config(tokenizer: Any) -> Any:
    """The Mistral language model both Pixtral layouts share."""
    from transformers import MistralConfig

    return text_config(
        MistralConfig,
        tokenizer,
        head_dim=TEXT_SIZE["hidden_size"] // TEXT_SIZE["num_attention_heads"],
        sliding_window=None,
        tie_word_embeddings=True,
    )


def _build(folder: Path, seed: int, layout: str) -> None:
    """One Pixtral checkpoint: ``mistral3`` (Mistral3 with its 2x2 spatial merge) or ``llava`` (the same
    vision tower and language model in the LLaVA layout, no spatial merge)."""
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        Mistral3Config,
        Mistral3ForConditionalGeneration,
    )

    tokenizer = _tokenizer()
    common = {
        "vision_config": _vision_config(),
        "text_config": _text_config(tokenizer),
        "image_token_index": tokenizer.convert_tokens_to_ids("[IMG]"),
        "vision_feature_layer": -1,
        "tie_word_embeddings": True,
    }
    model_cls: type[Any]
    config: Any
    if layout == "mistral3":
        merge, model_cls = SPATIAL_MERGE, Mistral3ForConditionalGeneration
        config = Mistral3Config(**common, spatial_merge_size=SPATIAL_MERGE)
    else:
        merge, model_cls = 1, LlavaForConditionalGeneration
        config = LlavaConfig(**common, vision_feature_select_strategy="full")
    model = seeded_model(model_cls, config, seed, tokenizer, ["</s>"])
    save_checkpoint(folder, model, _processor(tokenizer, merge))


def build_tiny(folder: Path, seed: int) -> None:
    _build(folder, seed, "mistral3")


def build_tiny_llava_pixtral(folder: Path, seed: int) -> None:
    """Pixtral in the LLaVA layout (``model_type`` llava, pixtral vision tower, no spatial merge), as
    Pixtral-12B is published for transformers; loaded by the llava family."""
    _build(folder, seed, "llava")


FAMILY = register_family(
    vision_language_family(
        "mistral3",
        build_tiny=build_tiny,
        vision="vision_tower",
        projector="multi_modal_projector",
        turn_end="</s>",
        processor_class=PixtralProcessor,
        image_tokens=IMAGE_TOKENS,
    )
)
