"""The HTTP API (FastAPI): OpenAI-shaped chat completions over the registry's aliases.

    POST /v1/chat/completions   text and image_url (data URI) parts, max_tokens, temperature, stream (SSE)
    GET  /v1/models             the registered model (A/B routed) and NAME@alias for each variant
    POST /v1/feedback           an outcome and/or score for a response id (A/B)
    GET  /v1/monitoring/drift   live inputs against the training profile
    GET  /health  /ready        process up; every variant loaded
    GET  /metrics               Prometheus (a key only with serve.metrics_auth)

Every answer carries ``X-Tuneline-Variant`` and ``X-Tuneline-Version``; its id (``chatcmpl-...``) is what
feedback refers to. Access logs are JSON lines on the ``tuneline.access`` logger, without message text,
image bytes or keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import multiprocessing
import secrets
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tuneline.serving import ab
from tuneline.serving.auth import ApiKeys
from tuneline.serving.cache import ResponseCache
from tuneline.serving.drift import DriftMonitor
from tuneline.serving.engine import Delta, Done, GenerationError, Variant
from tuneline.serving.limits import DATA_URI_PATTERN, ApiError, BodyLimit
from tuneline.serving.metrics import Metrics
from tuneline.serving.pii_guard import PiiGuard
from tuneline.serving.requests import (
    BEYOND_SCHEMA,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ErrorResponse,
    Feedback,
    max_tokens_of,
    parse,
    prepare,
    validation_message,
)
from tuneline.serving.sources import RegistrySource
from tuneline.serving.watcher import Routes, Watcher

log = logging.getLogger("tuneline.serve")
access = logging.getLogger("tuneline.access")


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
        self._parse_pool: ProcessPoolExecutor | None = None  # started by the first large body
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
        if self._parse_pool is not None:
            self._parse_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def parse(self, model: type[BaseModel], request: Request) -> Any:
        """The request's body as ``model``: inline when small, else in the helper process (parsing holds
        the GIL, so a thread would still stall the event loop on a body of many tiny JSON values)."""
        raw = await request.body()
        limits = self.serve.limits
        if len(raw) <= limits.inline_parse_bytes:
            return parse(model, raw, limits)
        if self._parse_pool is None:
            self._parse_pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._parse_pool, parse, model, raw, limits
            )
        except BrokenProcessPool:
            self._parse_pool = None
            raise ApiError(
                503, "the body parser restarted; retry the request", type_="server_error", code="retry"
            ) from None

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


_WHY = {
    400: "Invalid request: not JSON, not the schema, or over a serve.limits bound.",
    401: "Missing or wrong API key (Authorization: Bearer KEY).",
    404: "Unknown model or response id.",
    413: "Body or image above its byte limit.",
    429: "Too many requests in flight (Retry-After).",
    500: "Generation failed.",
    503: "The variant is still loading, or the body parser restarted: retry.",
}


def _errors(*codes: int) -> dict:
    """OpenAPI responses for these error statuses, each with the OpenAI error object."""
    return {code: {"model": ErrorResponse, "description": _WHY[code]} for code in codes}


def _body(schema: str) -> dict:
    """openapi_extra for a JSON body that the route parses itself (off the event loop)."""
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _document(doc: dict, srv: Server) -> dict:
    """FastAPI's OpenAPI document made true to this server: the bodies the routes parse themselves (with
    the served model names and the serve.limits bounds), no 422 (errors are 400), and bearerAuth on the
    routes that need a key."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatRequest, Feedback, ChatCompletion, ChatCompletionChunk, ErrorResponse):
        one = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(one.pop("$defs", {}))
        schemas[model.__name__] = one
    limits = srv.serve.limits
    # stream_options only with stream: true (max_tokens_of refuses it otherwise)
    schemas["ChatRequest"]["anyOf"] = [
        {"not": {"required": ["stream_options"]}},
        {"properties": {"stream_options": {"type": "null"}}},
        {"required": ["stream"], "properties": {"stream": {"const": True}}},
    ]
    chat = schemas["ChatRequest"]["properties"]
    chat["model"]["enum"] = srv.models()
    chat["messages"]["maxItems"] = limits.max_messages
    for key in ("max_tokens", "max_completion_tokens"):
        chat[key]["anyOf"][0]["maximum"] = limits.max_tokens
    # the only image URLs decode_image reads (anything else is a 400 invalid_image_url)
    schemas["ImageUrl"]["properties"]["url"]["pattern"] = DATA_URI_PATTERN
    schemas["TextPart"]["properties"]["text"]["maxLength"] = limits.max_message_chars
    schemas["Message"]["properties"]["content"]["anyOf"][0]["maxLength"] = limits.max_message_chars
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    # a stream is described event by event (OpenAPI 3.1 without itemSchema): each data is a JSON chunk, an
    # error object (a failure after the stream began), or the final [DONE]
    ref = "#/components/schemas/"
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [{"$ref": ref + "ChatCompletionChunk"}, {"$ref": ref + "ErrorResponse"}]
                        },
                    },
                ]
            }
        },
    }
    doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"] = {
        "application/json": {"schema": {"$ref": ref + "ChatCompletion"}},
        "text/event-stream": {"schema": event},
    }
    chat_400 = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["400"]
    chat_400["description"] += (
        " A body valid by this schema can still be refused with one of these error codes (rules JSON Schema "
        "cannot state: images counted over all messages, characters in total, the decoded image, the chat "
        "template, the prompt in tokens): " + ", ".join(BEYOND_SCHEMA) + "."
    )
    if srv.keys.enabled:
        doc["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)
            if srv.keys.enabled and _protected(path, srv.serve.metrics_auth):
                op["security"] = [{"bearerAuth": []}]
    return doc


def _protected(path: str, metrics_auth: bool) -> bool:
    return path.startswith("/v1/") or (metrics_auth and path.rstrip("/") == "/metrics")


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
        message, param = validation_message(list(exc.errors()))
        return _error(ApiError(400, message, param=param))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message, code = f"no route {where}: the API is documented at /docs and /openapi.json", "not_found"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message, code = f"{where}: method not allowed here (allowed: {allowed})", "method_not_allowed"
        else:
            message, code = f"{where}: {HTTPStatus(exc.status_code).phrase}", None
        return _error(ApiError(exc.status_code, message, code=code), exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        err = ApiError(500, "internal server error (the server log has the details)", type_="server_error")
        return _error(err)

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

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text format (or OpenMetrics by Accept).",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}}
        | _errors(*([401] if cfg.serve.metrics_auth and srv.keys.enabled else [])),
    )  # fmt: skip
    async def metrics(request: Request) -> Response:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("accept"))
        return Response(encoder(srv.metrics.registry), media_type=content_type)

    auth = [401] if srv.keys.enabled else []

    @app.get("/v1/models", responses=_errors(*auth))
    async def models() -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "tuneline"} for m in srv.models()
            ],
        }

    @app.post("/v1/feedback", responses=_errors(400, *auth, 404, 413), openapi_extra=_body("Feedback"))
    async def feedback(request: Request) -> dict:
        body: Feedback = await srv.parse(Feedback, request)
        if body.outcome is None and body.score is None:
            raise ApiError(400, "feedback needs an outcome (correct/incorrect) or a score", param="outcome")
        known = await asyncio.to_thread(srv.store.known, body.response_id)
        if not known:
            raise ApiError(404, f"no response with id {body.response_id!r}", param="response_id")
        srv.store.feedback(body.response_id, body.outcome, body.score)
        return {"ok": True}

    @app.get("/v1/monitoring/drift", responses=_errors(*auth))
    async def drift() -> dict:
        if not srv.serve.drift.enabled:
            return {"status": "disabled"}
        return await asyncio.to_thread(srv.drift.check)

    @app.post(
        "/v1/chat/completions",
        responses={200: {"description": "A chat.completion, or (stream: true) chat.completion.chunk events."}}
        | _errors(400, *auth, 404, 413, 429, 500, 503),
        openapi_extra=_body("ChatRequest"),
    )
    async def chat(request: Request, x_user_id: Annotated[str | None, Header()] = None):
        started = time.perf_counter()
        body: ChatRequest = await srv.parse(ChatRequest, request)
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
            # 2. Prepare off the event loop: images decoded, the chat template rendered, the prompt counted.
            max_tokens = max_tokens_of(body, srv.serve.limits)
            prepared = await asyncio.to_thread(prepare, body, max_tokens, srv.engine, variant, srv.serve)
            req, prompt_text, images = prepared.req, prepared.prompt_text, prepared.req.images
            info.update(images=len(images), image_bytes=prepared.image_bytes)
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

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = _document(doc, srv)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(AuthMiddleware, keys=srv.keys, metrics=cfg.serve.metrics_auth)
    app.add_middleware(BodyLimit, max_bytes=cfg.serve.limits.max_body_bytes)
    return app


class AuthMiddleware:
    """401 for /v1/ requests (and /metrics with serve.metrics_auth) without a valid key, before the body is
    read or parsed."""

    def __init__(self, app, keys: ApiKeys, metrics: bool) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.keys.enabled and _protected(scope["path"], self.metrics):
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
