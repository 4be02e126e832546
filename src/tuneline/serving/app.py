"""The HTTP API (FastAPI): OpenAI-shaped chat completions over the registry's aliases.

    POST /v1/chat/completions   text and image_url (data URI) parts, max_tokens, temperature, stream (SSE)
    GET  /v1/models             the registered model (A/B routed) and NAME@alias for each variant
    POST /v1/feedback           an outcome and/or score for a response id (A/B)
    GET  /v1/monitoring/drift   live inputs against the training profile
    GET  /health  /ready        process up; every variant loaded
    GET  /metrics               Prometheus

Every answer carries ``X-Tuneline-Variant`` and ``X-Tuneline-Version``; its id (``chatcmpl-...``) is what
feedback refers to. Access logs are JSON lines on the ``tuneline.access`` logger, without message text,
image bytes or keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneline.serving import ab
from tuneline.serving.auth import ApiKeys
from tuneline.serving.cache import ResponseCache
from tuneline.serving.drift import DriftMonitor
from tuneline.serving.engine import Delta, Done, GenerationError, GenRequest, Variant
from tuneline.serving.limits import ApiError, BodyLimit, decode_image
from tuneline.serving.metrics import Metrics
from tuneline.serving.pii_guard import PiiGuard
from tuneline.serving.sources import RegistrySource
from tuneline.serving.watcher import Routes, Watcher

log = logging.getLogger("tuneline.serve")
access = logging.getLogger("tuneline.access")


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
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256, description="User id: sticky A/B assignment.")


class Feedback(_Strict):
    response_id: str = Field(min_length=1, max_length=128)
    outcome: Literal["correct", "incorrect"] | None = None
    score: float | None = Field(None, allow_inf_nan=False)


# ------------------------------------------------------------------ the server state
class Server:
    def __init__(self, cfg, tracking_uri: str | None = None) -> None:
        from tuneline.registry import store

        self.cfg = cfg
        self.serve = cfg.serve
        self.model_name = cfg.serve.model_name or cfg.model_name
        self.metrics = Metrics()
        self.pii = PiiGuard(cfg.serve.pii, self.metrics.registry)
        self.keys = ApiKeys(cfg.serve.auth.api_key_envs)
        state = Path(cfg.serve.state_dir)
        self.store = ab.Store(state / "ab.sqlite")
        self.cache = ResponseCache(cfg.serve.cache.max_entries, cfg.serve.cache.ttl_s)
        self.routes = Routes(list(cfg.serve.traffic))
        self.primary = next(iter(cfg.serve.traffic))
        self.running = 0
        uri = tracking_uri or cfg.registry.tracking_uri or store.default_tracking_uri()
        self.source = RegistrySource(uri, self.model_name, state)
        self.engine = _engine(cfg.serve, self.metrics)
        self.drift = DriftMonitor(cfg.serve.drift, None, embed=self._embed)
        self.drift.on_report = self.metrics.drift
        self._drift_pool = ThreadPoolExecutor(1, thread_name_prefix="tuneline-drift")
        self.watcher = Watcher(
            self.source,
            self.engine.load,
            self.routes,
            self.metrics,
            cfg.serve.watch.interval_s,
            on_swap=self._on_swap,
        )

    def _on_swap(self, alias: str, variant: Variant) -> None:
        if alias == self.primary and self.serve.drift.enabled:
            self.drift.set_reference(variant.drift_reference)

    def _embed(self, images):
        variant = self.routes.get(self.primary)
        return None if variant is None else self.engine.embed_images(variant, images)

    def start(self) -> None:
        self.watcher.start()

    def close(self) -> None:
        self.watcher.stop()
        self.engine.close()
        self._drift_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def models(self) -> list[str]:
        return [self.model_name] + [f"{self.model_name}@{a}" for a in self.routes.aliases]

    def route(self, model: str, user: str | None, response_id: str) -> tuple[str, Variant]:
        if model == self.model_name:
            alias = ab.assign(self.serve.traffic, self.serve.salt, user or response_id)
        elif model.startswith(self.model_name + "@") and model.split("@", 1)[1] in self.routes.aliases:
            alias = model.split("@", 1)[1]
        else:
            raise ApiError(
                404,
                f"model {model!r} is not served here; available: {', '.join(self.models())}",
                param="model",
                code="model_not_found",
            )
        variant = self.routes.get(alias)
        if variant is None:
            raise ApiError(503, f"{alias} is still loading; retry shortly (GET /ready)", type_="server_error")
        return alias, variant


def _engine(serve_cfg, metrics: Metrics):
    if serve_cfg.backend == "vllm":
        from tuneline.serving.vllm import VllmEngine

        return VllmEngine(serve_cfg)
    from tuneline.serving.engine import TransformersEngine

    return TransformersEngine(serve_cfg, on_batch=metrics.batch_size.observe)


# ------------------------------------------------------------------ helpers
def _error(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            return (
                f"the request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})",
                None,
            )
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, param


def _convert(body: ChatRequest, limits) -> tuple[list[dict], list[Any], int, str]:
    """OpenAI messages -> canonical messages with decoded images; total image bytes; the user text."""
    messages, images, image_bytes, user_text = [], [], 0, []
    n_images = sum(
        1 for m in body.messages if not isinstance(m.content, str) for p in m.content if p.type == "image_url"
    )
    if n_images > limits.max_images:
        raise ApiError(
            400,
            f"{n_images} images in one request, above the limit of {limits.max_images} "
            "(serve.limits.max_images)",
            param="messages",
            code="too_many_images",
        )
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


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ------------------------------------------------------------------ the app
def create_app(cfg, *, tracking_uri: str | None = None) -> FastAPI:
    srv = Server(cfg, tracking_uri)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        srv.start()
        try:
            yield
        finally:
            srv.close()

    app = FastAPI(
        title="tuneline",
        version="1",
        description="OpenAI-compatible chat completions over registered fine-tunes, with A/B traffic.",
        lifespan=lifespan,
    )
    app.state.server = srv

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(ApiError(400, message, param=param))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "A variant is not loaded yet."}})
    async def ready():
        table = srv.routes.table
        body = {
            "ready": srv.routes.ready,
            "variants": {a: (table[a].ref.version if a in table else None) for a in srv.routes.aliases},
            "errors": dict(srv.watcher.errors),
        }
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/v1/models")
    async def models() -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "tuneline"} for m in srv.models()
            ],
        }

    @app.post("/v1/feedback", responses={404: {"description": "Unknown response id."}})
    async def feedback(body: Feedback) -> dict:
        if body.outcome is None and body.score is None:
            raise ApiError(400, "feedback needs an outcome (correct/incorrect) or a score", param="outcome")
        known = await asyncio.to_thread(srv.store.known, body.response_id)
        if not known:
            raise ApiError(404, f"no response with id {body.response_id!r}", param="response_id")
        srv.store.feedback(body.response_id, body.outcome, body.score)
        return {"ok": True}

    @app.get("/v1/monitoring/drift")
    async def drift() -> dict:
        if not srv.serve.drift.enabled:
            return {"status": "disabled"}
        return await asyncio.to_thread(srv.drift.check)

    @app.post(
        "/v1/chat/completions",
        responses={
            400: {"description": "Invalid request."},
            401: {"description": "Missing or wrong API key."},
            404: {"description": "Unknown model."},
            413: {"description": "Body or image too large."},
            429: {"description": "Too many requests in flight."},
        },
    )
    async def chat(body: ChatRequest, x_user_id: Annotated[str | None, Header()] = None):
        started = time.perf_counter()
        rid = "chatcmpl-" + secrets.token_hex(12)
        user = body.user or x_user_id
        info: dict[str, Any] = {"id": rid, "stream": body.stream, "user_hash": ab.user_hash(user)}
        alias = version = None
        headers = {"X-Request-Id": rid}

        def finish(status: int, **fields: Any) -> None:
            latency = time.perf_counter() - started
            srv.metrics.requests.labels(str(status), alias or "-").inc()
            if alias is not None:
                srv.metrics.e2e.labels(alias).observe(latency)
            info.update(fields, status=status, latency_ms=round(latency * 1000, 2))
            access.info(json.dumps({"event": "chat", "variant": alias, "version": version, **info}))
            if alias is not None:
                srv.store.record(
                    id=rid,
                    ts=time.time(),
                    variant=alias,
                    version=version,
                    user_hash=info["user_hash"],
                    status=status,
                    latency_s=latency,
                    ttft_s=fields.get("ttft_s"),
                    prompt_tokens=fields.get("prompt_tokens"),
                    completion_tokens=fields.get("completion_tokens"),
                    cached=int(bool(fields.get("cached"))),
                )

        # 1. Route (sticky A/B or a pinned alias) and admit.
        try:
            alias, variant = srv.route(body.model, user, rid)
        except ApiError as exc:
            finish(exc.status, error=exc.message)
            return _error(exc, headers)
        version = variant.ref.version
        headers.update({"X-Tuneline-Variant": alias, "X-Tuneline-Version": version})
        if srv.running >= srv.serve.limits.max_concurrency:
            exc = ApiError(
                429,
                f"{srv.running} requests in flight, the limit (serve.limits.max_concurrency); retry shortly",
                type_="rate_limit_error",
            )
            finish(429, error=exc.message)
            return _error(exc, headers | {"Retry-After": "1"})
        srv.running += 1
        srv.metrics.running.inc()
        variant.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                srv.running -= 1
                srv.metrics.running.dec()
                variant.release()

        try:
            # 2. Validate: tokens, images (decoded off the event loop), prompt length.
            limits = srv.serve.limits
            max_tokens = (
                body.max_completion_tokens
                or body.max_tokens
                or min(limits.default_max_tokens, limits.max_tokens)
            )
            if max_tokens > limits.max_tokens:
                raise ApiError(
                    400,
                    f"max_tokens {max_tokens} is above the limit of {limits.max_tokens} "
                    "(serve.limits.max_tokens)",
                    param="max_tokens",
                )
            if body.stream_options is not None and not body.stream:
                raise ApiError(
                    400, "stream_options is only allowed with stream: true", param="stream_options"
                )
            has_images = any(not isinstance(m.content, str) and m.content for m in body.messages)
            if has_images:
                messages, images, image_bytes, prompt_text = await asyncio.to_thread(_convert, body, limits)
            else:
                messages, images, image_bytes, prompt_text = _convert(body, limits)
            info.update(images=len(images), image_bytes=image_bytes)
            raw = None
            if srv.serve.backend == "vllm":
                raw = [m.model_dump(exclude_none=True) for m in body.messages]
            req = GenRequest(
                messages,
                images,
                max_tokens,
                body.temperature,
                body.top_p,
                raw_messages=raw,
                stream=body.stream,
            )
            try:
                n_prompt = srv.engine.prompt_tokens(variant, req)
            except Exception as exc:  # noqa: BLE001 - the chat template refused the conversation
                raise ApiError(
                    400, f"the model's chat template refused these messages: {exc}", param="messages"
                ) from None
            if n_prompt > limits.max_prompt_tokens:
                raise ApiError(
                    400,
                    f"the prompt is {n_prompt} tokens, above the limit of {limits.max_prompt_tokens} "
                    "(serve.limits.max_prompt_tokens)",
                    param="messages",
                )
            stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])

            # 3. Deterministic? The cache may already hold the answer.
            key = None
            if body.temperature == 0 and srv.serve.cache.enabled:
                srv.metrics.cache_queries.inc()
                payload = body.model_dump_json(
                    include={"messages", "max_tokens", "max_completion_tokens", "stop"}
                )
                key = hashlib.sha256(f"{alias}|{version}|{max_tokens}|{payload}".encode()).hexdigest()
        except ApiError as exc:
            release()
            finish(exc.status, error=exc.message)
            return _error(exc, headers)
        except BaseException:
            release()
            raise

        def observe(text: str, done: Done | None, ttft: float | None, cached: bool) -> None:
            if done is not None:
                srv.metrics.prompt_tokens.labels(alias).inc(done.prompt_tokens)
                srv.metrics.generation_tokens.labels(alias).inc(done.completion_tokens)
                srv.metrics.request_success.labels(done.finish_reason, alias).inc()
            if ttft is not None:
                srv.metrics.ttft.labels(alias).observe(ttft)
            if srv.serve.drift.enabled and srv.drift.add(images, prompt_text, text):
                asyncio.get_running_loop().run_in_executor(srv._drift_pool, srv.drift.check)

        created = int(time.time())

        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            event = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "system_fingerprint": f"{alias}-v{version}",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(event)}\n\n"

        def usage(done: Done) -> dict:
            return {
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
            }

        hit = srv.cache.get(key) if key else None
        if hit is not None:
            srv.metrics.cache_hits.inc()

        async def generate():
            """(text so far, Done) pairs as text arrives; from the cache in one piece."""
            if hit is not None:
                yield hit[0], hit[1]
                return
            text = ""
            async for item in srv.engine.stream(variant, req):
                if isinstance(item, Delta):
                    text += item.text
                    yield text, None
                else:
                    yield text, item

        if not body.stream:
            try:
                text, done, ttft, stopped = "", None, None, False
                async for text, d in generate():
                    if ttft is None and text:
                        ttft = time.perf_counter() - started
                    if d is not None:
                        done = d
                    text, stopped = _cut_at_stop(text, stops)
                    if stopped:
                        break
                if done is None:
                    done = Done("stop", 0, 0)
                if done.first_token_at is not None and hit is None:
                    ttft = done.first_token_at - started
                if key and hit is None and not stopped:
                    srv.cache.put(key, (text, done))
                text, pii_headers = srv.pii.complete(text)  # the cache keeps the raw text
                headers.update(pii_headers)
                reason = "stop" if stopped else done.finish_reason
                observe(text, done, ttft, hit is not None)
                result = {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.model,
                    "system_fingerprint": f"{alias}-v{version}",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": reason,
                        }
                    ],
                    "usage": usage(done),
                }
                finish(
                    200,
                    ttft_s=ttft,
                    prompt_tokens=done.prompt_tokens,
                    completion_tokens=done.completion_tokens,
                    cached=hit is not None,
                    finish_reason=reason,
                )
                return JSONResponse(result, headers=headers)
            except ApiError as exc:  # serve.pii: block
                finish(exc.status, error=exc.message)
                return _error(exc, headers)
            except GenerationError as exc:
                finish(500, error=str(exc))
                err = ApiError(500, f"generation failed: {exc}", type_="server_error")
                return _error(err, headers)
            finally:
                release()

        async def events():
            sent, done, ttft, stopped, status = "", None, None, False, 200
            holdback = max((len(s) for s in stops), default=1) - 1
            scan = srv.pii.stream()
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for text, d in generate():
                    if d is not None:
                        done = d
                    text, stopped = _cut_at_stop(text, stops)
                    ready = (
                        text if (stopped or d is not None) else text[: max(len(text) - holdback, len(sent))]
                    )
                    piece = scan.feed(ready, final=stopped or d is not None)
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        yield chunk({"content": piece})
                    sent = ready
                    if stopped:
                        break
                if piece := scan.feed(sent, final=True):
                    yield chunk({"content": piece})
                if done is None:
                    done = Done("stop", 0, 0)
                if key and hit is None and not stopped:
                    srv.cache.put(key, (sent, done))
                yield chunk({}, "stop" if stopped else done.finish_reason)
                if body.stream_options and body.stream_options.include_usage:
                    yield (
                        "data: "
                        + json.dumps(
                            {
                                "id": rid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": body.model,
                                "choices": [],
                                "usage": usage(done),
                            }
                        )
                        + "\n\n"
                    )
                observe(sent, done, ttft, hit is not None)
            except GenerationError as exc:
                status = 500
                info["error"] = str(exc)
                err = ApiError(500, f"generation failed: {exc}", type_="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
            except ApiError as exc:  # serve.pii: block, after the stream began
                status = exc.status
                info["error"] = exc.message
                yield f"data: {json.dumps(exc.body())}\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                status = 499  # the client went away
                raise
            finally:
                release()
                finish(
                    status,
                    ttft_s=ttft,
                    prompt_tokens=done.prompt_tokens if done else None,
                    completion_tokens=done.completion_tokens if done else None,
                    cached=hit is not None,
                    **({"pii": sorted(scan.kinds)} if scan.kinds else {}),
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    from prometheus_client import make_asgi_app

    app.mount("/metrics", make_asgi_app(registry=srv.metrics.registry))
    app.add_middleware(AuthMiddleware, keys=srv.keys)
    app.add_middleware(BodyLimit, max_bytes=cfg.serve.limits.max_body_bytes)
    return app


class AuthMiddleware:
    """401 for /v1/ requests without a valid key (before the body is read or parsed)."""

    def __init__(self, app, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.keys.enabled and scope["path"].startswith("/v1/"):
            header = dict(scope.get("headers") or []).get(b"authorization")
            if not self.keys.check(header.decode("latin-1") if header else None):
                why = "missing API key" if not header else "invalid API key"
                err = ApiError(
                    401,
                    f"{why}: send Authorization: Bearer <key> (keys come from serve.auth.api_key_envs)",
                    type_="authentication_error",
                    code="invalid_api_key",
                )
                access.info(json.dumps({"event": "auth", "path": scope["path"], "status": 401, "error": why}))
                return await JSONResponse(err.body(), status_code=401)(scope, receive, send)
        await self.app(scope, receive, send)
