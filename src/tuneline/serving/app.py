"""The HTTP API (FastAPI): OpenAI-shaped chat completions over the registry's aliases.

    POST /v1/chat/completions   text and image_url (data URI) parts, max_tokens, temperature, stream (SSE)
    GET  /v1/models             the registered model (A/B routed) and NAME@alias for each variant
    POST /v1/feedback           an outcome, score and/or corrected label for a response id (A/B, loop)
    GET  /v1/monitoring/drift   live inputs against the training profile
    GET  /health  /ready        process up; every variant loaded
    GET  /metrics               Prometheus (a key only with serve.metrics_auth)

Every answer carries ``X-Tuneline-Variant`` and ``X-Tuneline-Version``; its id (``chatcmpl-...``) is what
feedback refers to. Access logs are JSON lines on the ``tuneline.access`` logger, without message text,
image bytes or keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
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
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tuneline.serving import ab, cascade
from tuneline.serving import chat as chat_steps
from tuneline.serving.auth import ApiKeys
from tuneline.serving.cache import ResponseCache
from tuneline.serving.cascade import Cascade
from tuneline.serving.costs import CostTracker
from tuneline.serving.drift import DriftMonitor
from tuneline.serving.engine import Variant
from tuneline.serving.keep import InputKeeper
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
    parse,
    validation_message,
)
from tuneline.serving.sources import RegistrySource
from tuneline.serving.watcher import Routes, Watcher, canary_traffic

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
        self.keeper = InputKeeper(state / "inputs", cfg.serve.loop) if cfg.serve.loop.keep_inputs else None
        self.cache = ResponseCache(cfg.serve.cache.max_entries, cfg.serve.cache.ttl_s)
        self.costs = CostTracker(cfg.serve, self.metrics, self.store)
        self.cascade = Cascade(cfg, self.model_name, self.metrics, self.costs) if cfg.serve.cascade else None
        self.routes = Routes(cascade.aliases(cfg.serve, self.model_name))
        self.primary = next(iter(cfg.serve.traffic))
        self.traffic = dict(cfg.serve.traffic)  # serve.traffic, or a canary's share from the registry
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
            on_weight=self._on_weight,
        )

    def _on_swap(self, alias: str, variant: Variant) -> None:
        if alias == self.primary and self.serve.drift.enabled:
            self.drift.set_reference(variant.drift_reference)

    def _on_weight(self, alias: str, weight: float | None) -> None:
        self.traffic = canary_traffic(self.serve.traffic, alias, weight)  # one assignment
        log.info("A/B traffic now %s (%s canary weight %s)", self.traffic, alias, weight)

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
        if self.keeper is not None:
            self.keeper.close()

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
        if model == self.model_name and self.cascade is not None:
            alias = self.cascade.small_alias
        elif model == self.model_name:
            alias = ab.assign(self.traffic, self.serve.salt, user or response_id)
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
_error = chat_steps.error_response


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
            "traffic": dict(srv.traffic),
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

        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
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
        if body.outcome is None and body.score is None and body.label is None:
            raise ApiError(
                400, "feedback needs an outcome (correct/incorrect), a score or a label", param="outcome"
            )
        known = await asyncio.to_thread(srv.store.known, body.response_id)
        if not known:
            raise ApiError(404, f"no response with id {body.response_id!r}", param="response_id")
        srv.store.feedback(body.response_id, body.outcome, body.score, body.label)
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
        return await chat_steps.handle(srv, request, x_user_id)

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
