"""Request limits: body size (an ASGI middleware), and images (data URIs only, checked before decoding).

Each refusal is an :class:`ApiError` with an HTTP status and a message naming the limit and the
``serve.limits`` key that sets it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings

from PIL import Image, UnidentifiedImageError

# The image URLs decode_image reads, as a pattern that means the same in Python and in JSON Schema (ECMA):
# the OpenAPI document states it, so a client can tell before sending.
DATA_URI_PATTERN = r"^data:([A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+)?(;[^;,]*)*;base64,"
_DATA_URI = re.compile(DATA_URI_PATTERN)


class ApiError(Exception):
    """A refusal with an OpenAI-shaped error body."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def __reduce__(self):  # picklable: parsing may run in a helper process
        return _api_error, (self.status, self.message, self.type, self.param, self.code)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _api_error(status: int, message: str, type_: str, param, code) -> ApiError:
    return ApiError(status, message, type_=type_, param=param, code=code)


def decode_image(url: str, *, max_bytes: int, max_pixels: int, param: str) -> tuple[Image.Image, int]:
    """A data URI -> a decoded RGB image and its byte size; refuses remote URLs, paths, bad base64,
    oversized and truncated images."""
    m = _DATA_URI.match(url)
    if m is None:
        if url.startswith(("http://", "https://")):
            why = "remote image URLs are not fetched"
        elif url.startswith("data:"):
            why = "only base64 data URIs are accepted (data:image/png;base64,...)"
        else:
            why = "file paths and other URL schemes are not accepted"
        raise ApiError(
            400,
            f"{param}: {why}; send the image inline as data:image/...;base64,...",
            param=param,
            code="invalid_image_url",
        )
    payload = url[m.end() :]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise ApiError(
            413,
            f"{param}: image is about {len(payload) * 3 // 4:,} bytes, above the limit of {max_bytes:,} "
            "(serve.limits.max_image_bytes)",
            param=param,
            code="image_too_large",
        )
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, f"{param}: the data URI is not valid base64", param=param, code="invalid_base64"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))  # reads the header only
            w, h = img.size
            if w * h > max_pixels:
                raise ApiError(
                    400,
                    f"{param}: image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                    "(serve.limits.max_image_pixels)",
                    param=param,
                    code="image_too_large",
                )
            img.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses it from the header already (Image.MAX_IMAGE_PIXELS); say how large it is.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"about {int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ApiError(
            400,
            f"{param}: image is {size}, above the limit of {max_pixels:,} (serve.limits.max_image_pixels)",
            param=param,
            code="image_too_large",
        ) from None
    except UnidentifiedImageError:
        raise ApiError(
            400, f"{param}: not an image in a format this server reads", param=param, code="invalid_image"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(
            400, f"{param}: the image is truncated or corrupt ({exc})", param=param, code="invalid_image"
        ) from None
    return img.convert("RGB"), len(raw)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (by Content-Length, or while reading)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        if length is not None:
            return await self.app(scope, receive, send)  # the server holds the body to its length
        # No length (chunked): read up to the limit here, then hand the body on.
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send) -> None:
        body = json.dumps(
            ApiError(
                413,
                f"request body above the limit of {self.max_bytes:,} bytes (serve.limits.max_body_bytes)",
                code="body_too_large",
            ).body()
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
