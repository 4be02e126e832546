"""One interface over a multimodal processor or a plain tokenizer, for chat-formatted samples.

Stages and collators talk to this instead of branching on the family: render a conversation
with the model's own chat template, encode texts (+ images) into a batch, and know which token
ids are image placeholders (never trained on) and which end an assistant turn. Classifier families
(encoders) have no chat template: they read :func:`classifier_text`, encoded by ``encode_plain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from tuneline.models.families import ModelFamily

# Tokenizer attributes that name multimodal placeholder tokens, across families.
_IMAGE_TOKEN_ATTRS = (
    "image_token",
    "boi_token",
    "eoi_token",
    "video_token",
    "vision_start_token",
    "vision_end_token",
)


def template_messages(
    messages: Sequence[dict[str, Any]], *, text_as_string: bool = False
) -> list[dict[str, Any]]:
    """Canonical messages → what chat templates expect: image parts carry no path.

    ``text_as_string``: a turn without images reaches the template as one string (its text parts
    joined), for templates that insert ``message['content']`` as a string (most text models'); turns
    with images always keep their parts.
    """
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [
                {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                for p in content
            ]
        if text_as_string and all(p["type"] == "text" for p in parts):
            out.append({"role": m["role"], "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": m["role"], "content": parts})
    return out


_PROBE_TEXT = "tuneline content probe 7351"


def template_takes_parts(render: Any) -> bool:
    """Whether a chat template reads content parts (``[{"type": "text", ...}]``) rather than a string.

    ``render(messages) -> str`` is rendered once with a text turn as parts: a template that takes parts
    shows the text alone; one that inserts the content as a string shows the list's Python repr (or
    fails on it). The same check vLLM and transformers' processors make on a template's content format,
    done by rendering instead of parsing the Jinja source.
    """
    probe = [{"role": "user", "content": [{"type": "text", "text": _PROBE_TEXT}]}]
    try:
        rendered = render(probe)
    except Exception:  # a string-only template that filters the content (| trim) fails on a list
        return False
    return _PROBE_TEXT in rendered and "'type'" not in rendered and '"type"' not in rendered


def classifier_text(messages: Sequence[dict[str, Any]]) -> str:
    """What a sequence classifier reads from a prompt: the text of its user turns, one per line.

    System turns are left out: in chat data they hold instructions for a generative model, which an
    encoder with a classification head does not follow.
    """
    return "\n".join(
        p["text"] for m in messages if m["role"] == "user" for p in m["content"] if p["type"] == "text"
    ).strip()


class ChatProcessor:
    def __init__(self, inner: Any, family: ModelFamily) -> None:
        self.inner = inner
        self.family = family
        self.multimodal = family.multimodal
        self.tokenizer = getattr(inner, "tokenizer", inner)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def image_token_ids(self) -> set[int]:
        ids = set()
        named = [getattr(self.tokenizer, attr, None) for attr in _IMAGE_TOKEN_ATTRS]
        for token in [*named, *self.family.image_tokens]:
            if isinstance(token, str):
                tid = self.tokenizer.convert_tokens_to_ids(token)
                if tid is not None and tid != self.tokenizer.unk_token_id:
                    ids.add(int(tid))
        # Processors that expand an image into several kinds of token list them (Pixtral: [IMG], [IMG_BREAK],
        # [IMG_END]), also for families that do not declare them.
        if self.multimodal:
            ids.update(int(i) for i in getattr(self.inner, "image_token_ids", None) or () if i is not None)
        return ids

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id]
        ids += [self.tokenizer.convert_tokens_to_ids(t) for t in self.family.turn_end_tokens]
        return sorted({int(i) for i in ids if i is not None})

    def _apply_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self.inner.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    @cached_property
    def text_as_string(self) -> bool:
        """True when the chat template inserts ``message['content']`` as a string (checked once)."""
        return not template_takes_parts(lambda messages: self._apply_template(messages, False))

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
        """The conversation through the model's chat template: the one rendering that training, evaluation
        scoring and serving share. Text-only turns reach a string-content template as strings."""
        return self._apply_template(
            template_messages(messages, text_as_string=self.text_as_string), add_generation_prompt
        )

    @contextmanager
    def _padding(self, side: str):
        old = self.tokenizer.padding_side
        self.tokenizer.padding_side = side
        try:
            yield
        finally:
            self.tokenizer.padding_side = old

    def encode(self, texts: list[str], images: list[list[Any]] | None = None, *, padding_side: str = "right"):
        """Tokenize rendered texts (the chat template already added BOS) with their images."""
        with self._padding(padding_side):
            if self.multimodal and images and any(images):
                # padding_side also passed explicitly: some processors default it (Llama 4: left).
                return self.inner(
                    text=texts,
                    images=images,
                    padding=True,
                    padding_side=padding_side,
                    add_special_tokens=False,
                    return_tensors="pt",
                )
            return self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")

    def encode_plain(self, texts: list[str], max_length: int):
        """Classifier input: the tokenizer's own special tokens ([CLS] ... [SEP]), right padding, each text
        truncated to ``max_length`` tokens."""
        with self._padding("right"):
            return self.tokenizer(
                texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )

    def token_counter(self):
        """A function record -> token count (text plus image tokens), as the collator would build it.

        The text is counted with small blank stand-in images (memoised on the rendered text, since
        prompts repeat). Families whose image token count grows with the image (Qwen-VL, Llama 4,
        Pixtral) then get, per image, the difference its real size makes (read from the file header,
        memoised per size); a probe at two very different sizes tells whether the count varies at all.
        """
        from functools import lru_cache

        from PIL import Image

        if self.family.is_classifier:  # before truncation: the budget check reports what would be cut
            return lambda record: len(self.tokenizer(classifier_text(record.prompt_messages))["input_ids"])

        @lru_cache(maxsize=4096)
        def count(text: str, n_images: int) -> int:
            images = [[Image.new("RGB", (32, 32))] * n_images] if n_images and self.multimodal else None
            return int(self.encode([text], images)["input_ids"].shape[1])

        one_image = self.render(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
        )

        @lru_cache(maxsize=65536)
        def extra(size: tuple[int, int]) -> int:
            enc = self.encode([one_image], [[Image.new("RGB", size)]])
            return int(enc["input_ids"].shape[1]) - count(one_image, 1)

        varies = self.multimodal and (extra((32, 32)) != extra((1000, 700)) or extra((700, 1000)) != 0)

        def counter(record) -> int:
            n = count(self.render(record.messages), len(record.images))
            if varies:
                for path in record.images:
                    with Image.open(path) as im:
                        n += extra(im.size)
            return n

        return counter

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
