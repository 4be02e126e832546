"""Request bodies and their preparation, one module-level step each, so that none runs on the event loop.

    parse(model, raw, limits)    bytes -> a strict pydantic body (JSON and schema errors as ApiError);
                                 chat bodies also pass check_size (parse_chat)
    check_size(body, limits)     cheap bounds before any tokenization: messages, characters, images
    convert(body, limits)        OpenAI messages -> canonical messages with decoded images
    prepare(body, ...)           convert + chat template + token count + limits -> a GenRequest

The app runs ``parse`` inline for small bodies and in a helper process for large ones (a body of many
small JSON values holds the GIL while it is parsed, so a thread would not help), and ``prepare`` in a
thread (the tokenizer releases the GIL; image decoding mostly does). Every refusal is an
:class:`~tuneline.serving.limits.ApiError` with our own message and the ``serve.limits`` key that sets it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tuneline.serving.engine import GenRequest
from tuneline.serving.limits import ApiError, decode_image


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 517.0: accept a float with no fractional part as that int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = Annotated[int, BeforeValidator(_integral)]
# the bound inside the type, so that the schema of ``Count | None`` says minimum (a Field(ge=1) on the
# union comes out as an unknown "ge" keyword that no validator reads)
Count = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


# ------------------------------------------------------------------ request bodies (strict: no coercion)
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: str = Field(description="A data URI: data:image/png;base64,... (remote URLs are refused).")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str = Field(description="The registered model name (A/B routed) or NAME@alias (one variant).")
    messages: list[Message] = Field(min_length=1, description="At most serve.limits.max_messages.")
    max_tokens: Count | None = Field(None, description="At most serve.limits.max_tokens.")
    max_completion_tokens: Count | None = Field(None, description="Overrides max_tokens.")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: Integral = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="Only with stream: true.")
    stop: str | list[str] | None = None
    seed: Integral | None = None
    user: str | None = Field(None, max_length=256, description="User id: sticky A/B assignment.")


class Feedback(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["outcome"], "properties": {"outcome": {"enum": ["correct", "incorrect"]}}},
                {"required": ["score"], "properties": {"score": {"type": "number"}}},
                {"required": ["label"], "properties": {"label": {"type": "string", "minLength": 1}}},
            ]
        }
    )

    response_id: str = Field(min_length=1, max_length=128, description="The id of a chat completion.")
    outcome: Literal["correct", "incorrect"] | None = None
    score: float | None = Field(None, allow_inf_nan=False)
    label: str | None = Field(
        None, min_length=1, max_length=256, description="The correct answer (a labelled correction)."
    )


# 400/413 error codes of schema-valid chat bodies: what JSON Schema cannot say (images counted over all
# messages, characters in total, the decoded image, the chat template's rules, the prompt in tokens). The
# OpenAPI document lists them; every other refusal of a schema-valid body would be a lie of the document.
BEYOND_SCHEMA = (
    "too_many_images",
    "prompt_too_long",
    "invalid_base64",
    "invalid_image",
    "image_too_large",
    "template_refused",
)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The OpenAI error object: every refusal of this server has this shape."""

    error: ErrorDetail


# ------------------------------------------------------------------ answers (for the OpenAPI document only)
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: str | None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a stream; the last one carries usage (and no choices) when asked for."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ------------------------------------------------------------------ parse: bytes -> body
def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """pydantic's (or FastAPI's) errors -> one message naming the fields, and the first field."""
    for e in errors:
        if e.get("type") == "json_invalid":
            return _json_message(str(e.get("ctx", {}).get("error", ""))), None
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, param


_AT = re.compile(r" at line (\d+) column (\d+)$")


def _json_message(reason: str) -> str:
    at = _AT.search(reason)
    where = f" at line {at.group(1)}, column {at.group(2)}" if at else ""
    reason = reason[: at.start()] if at else reason
    if "recursion limit" in reason:
        why = "it is nested too deeply"
    elif "surrogate" in reason or "hex escape" in reason:
        why = "a \\u escape is not a valid character (a lone UTF-16 surrogate?)"
    elif reason:
        why = reason
    else:
        why = "parse error"
    return f"the request body is not valid JSON{where}: {why}"


def parse(model: type[BaseModel], raw: bytes, limits=None) -> Any:
    """A request body -> the strict ``model`` (ApiError 400 otherwise); chat bodies also pass
    :func:`check_size`. Module-level and picklable: the app may run it in a helper process."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", code="empty_body")
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(include_url=False, include_input=False))
        raise ApiError(400, message, param=param) from None
    if limits is not None and isinstance(body, ChatRequest):
        check_size(body, limits)
    return body


def check_size(body: ChatRequest, limits) -> None:
    """Bounds that cost nothing next to tokenization: messages, characters per message and in total,
    images. Characters are counted on the text only (images have their own limits)."""
    if len(body.messages) > limits.max_messages:
        raise ApiError(
            400,
            f"{len(body.messages)} messages, above the limit of {limits.max_messages} "
            "(serve.limits.max_messages)",
            param="messages",
            code="too_many_messages",
        )
    total = n_images = 0
    for i, m in enumerate(body.messages):
        parts = [m.content] if isinstance(m.content, str) else m.content
        chars = sum(
            len(p) if isinstance(p, str) else len(p.text) for p in parts if not isinstance(p, ImagePart)
        )
        n_images += sum(isinstance(p, ImagePart) for p in parts)
        if chars > limits.max_message_chars:
            raise ApiError(
                400,
                f"messages.{i} has {chars:,} characters of text, above the limit of "
                f"{limits.max_message_chars:,} (serve.limits.max_message_chars)",
                param=f"messages.{i}.content",
                code="message_too_long",
            )
        total += chars
    if total > limits.max_prompt_chars:
        raise ApiError(
            400,
            f"the messages have {total:,} characters of text, above the limit of {limits.max_prompt_chars:,} "
            "(serve.limits.max_prompt_chars)",
            param="messages",
            code="prompt_too_long",
        )
    if n_images > limits.max_images:
        raise ApiError(
            400,
            f"{n_images} images in one request, above the limit of {limits.max_images} "
            "(serve.limits.max_images)",
            param="messages",
            code="too_many_images",
        )


# ------------------------------------------------------------------ prepare: body -> GenRequest
def convert(body: ChatRequest, limits) -> tuple[list[dict], list[Any], int, str]:
    """OpenAI messages -> canonical messages with decoded images; total image bytes; the user text."""
    messages, images, image_bytes, user_text = [], [], 0, []
    for i, m in enumerate(body.messages):
        parts: list[dict[str, Any]] = []
        if isinstance(m.content, str):
            parts.append({"type": "text", "text": m.content})
        else:
            for j, p in enumerate(m.content):
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                else:
                    img, size = decode_image(
                        p.image_url.url,
                        max_bytes=limits.max_image_bytes,
                        max_pixels=limits.max_image_pixels,
                        param=f"messages.{i}.content.{j}.image_url",
                    )
                    images.append(img)
                    image_bytes += size
                    parts.append({"type": "image"})
        if m.role == "user":
            user_text += [p["text"] for p in parts if p["type"] == "text"]
        messages.append({"role": m.role, "content": parts})
    return messages, images, image_bytes, " ".join(user_text)


@dataclass
class Prepared:
    req: GenRequest
    prompt_text: str  # the users' text, for drift
    image_bytes: int
    prompt_tokens: int


def max_tokens_of(body: ChatRequest, limits) -> int:
    """The request's completion budget, checked against serve.limits.max_tokens."""
    max_tokens = (
        body.max_completion_tokens or body.max_tokens or min(limits.default_max_tokens, limits.max_tokens)
    )
    if max_tokens > limits.max_tokens:
        raise ApiError(
            400,
            f"max_tokens {max_tokens} is above the limit of {limits.max_tokens} (serve.limits.max_tokens)",
            param="max_tokens",
        )
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", param="stream_options")
    return max_tokens


def prepare(body: ChatRequest, max_tokens: int, engine, variant, serve_cfg) -> Prepared:
    """Images decoded, the chat template rendered, the prompt counted against serve.limits: blocking
    (call it in a thread)."""
    limits = serve_cfg.limits
    messages, images, image_bytes, prompt_text = convert(body, limits)
    raw = [m.model_dump(exclude_none=True) for m in body.messages] if serve_cfg.backend == "vllm" else None
    req = GenRequest(
        messages, images, max_tokens, body.temperature, body.top_p, raw_messages=raw, stream=body.stream
    )
    try:
        n_prompt = engine.prompt_tokens(variant, req)
    except Exception as exc:  # noqa: BLE001 - the chat template (or the tokenizer) refused the conversation
        from jinja2 import TemplateError

        why = f": {exc}" if isinstance(exc, TemplateError) else f" ({type(exc).__name__})"
        raise ApiError(
            400,
            f"the model's chat template refused these messages{why}",
            param="messages",
            code="template_refused",
        ) from None
    if n_prompt > limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is {n_prompt} tokens, above the limit of {limits.max_prompt_tokens} "
            "(serve.limits.max_prompt_tokens)",
            param="messages",
            code="prompt_too_long",
        )
    return Prepared(req, prompt_text, image_bytes, n_prompt)
