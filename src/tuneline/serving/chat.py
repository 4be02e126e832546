"""``POST /v1/chat/completions``, one step at a time: route, admit, prepare, look up, answer.

:func:`handle` is the endpoint's body. A :class:`ChatCall` holds one request's state (its id, the
variant it was routed to, the response headers, the access-log fields) and the steps that use it:
``finish`` (metrics, access log, the request store), ``release`` (the concurrency slot), ``observe``
(token counts, time to first token, drift), ``complete`` (a whole answer) and ``events`` (a stream of
server-sent chunks).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tuneline.serving import ab
from tuneline.serving.cascade_curve import softmax
from tuneline.serving.confidence import score_candidates
from tuneline.serving.engine import Delta, Done, GenerationError, Variant
from tuneline.serving.limits import ApiError
from tuneline.serving.requests import ChatRequest, max_tokens_of, prepare

if TYPE_CHECKING:
    from tuneline.serving.app import Server

access = logging.getLogger("tuneline.access")
log = logging.getLogger("tuneline.serve")


def error_response(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


async def handle(srv: Server, request: Request, x_user_id: str | None) -> Response:
    """The endpoint: route and admit, prepare off the event loop, then answer whole or streamed."""
    call = ChatCall(srv, await srv.parse(ChatRequest, request), x_user_id, time.perf_counter())
    # 1. Route (sticky A/B or a pinned alias) and admit.
    if (refused := call.route_and_admit()) is not None:
        return refused
    try:
        # 2. Prepare off the event loop: images decoded, the chat template rendered, the prompt counted.
        await call.prepare()
        # 3. Deterministic? The cache may already hold the answer.
        call.cache_key()
    except ApiError as exc:
        call.release()
        call.finish(exc.status, error=exc.message)
        return error_response(exc, call.headers)
    except BaseException:
        call.release()
        raise
    if call.cascaded and srv.cascade is not None:  # serve.cascade: its own cache entries
        return await srv.cascade.answer(call)
    call.lookup()
    if not call.body.stream:
        return await call.complete()
    return StreamingResponse(call.events(), media_type="text/event-stream", headers=call.headers)


class ChatCall:
    """One chat request's state and the steps that answer it."""

    variant: Variant  # set by route_and_admit

    def __init__(self, srv: Server, body: ChatRequest, x_user_id: str | None, started: float) -> None:
        self.srv, self.body, self.started = srv, body, started
        self.rid = "chatcmpl-" + secrets.token_hex(12)
        self.user = body.user or x_user_id
        self.info: dict[str, Any] = {
            "id": self.rid,
            "stream": body.stream,
            "user_hash": ab.user_hash(self.user),
        }
        self.alias: str | None = None
        self.version: str | None = None
        self.headers = {"X-Request-Id": self.rid}
        self.released = False
        self.key: str | None = None
        self.hit: tuple[str, Done] | None = None
        self.prediction: str | None = None  # the answer, for the request store (never the access log)
        self.cascaded = srv.cascade is not None and body.model == srv.model_name  # serve.cascade
        # serve.loop.keep_inputs with class labels: the answering variant's {label: probability}
        self.probs: dict[str, float] | None = None

    # ---------------------------------------------------------------- bookkeeping
    def finish(self, status: int, **fields: Any) -> None:
        """Count the request, write its access-log line and (once routed) its row in the request store."""
        srv, alias, info = self.srv, self.alias, self.info
        latency = time.perf_counter() - self.started
        srv.metrics.requests.labels(str(status), alias or "-").inc()
        if alias is not None:
            srv.metrics.e2e.labels(alias).observe(latency)
        info.update(fields, status=status, latency_ms=round(latency * 1000, 2))
        access.info(json.dumps({"event": "chat", "variant": alias, "version": self.version, **info}))
        srv.costs.finished(self, status, latency, fields)
        if alias is not None:
            srv.store.record(
                id=self.rid,
                ts=time.time(),
                variant=alias,
                version=self.version,
                user_hash=info["user_hash"],
                status=status,
                latency_s=latency,
                ttft_s=fields.get("ttft_s"),
                prompt_tokens=fields.get("prompt_tokens"),
                completion_tokens=fields.get("completion_tokens"),
                cached=int(bool(fields.get("cached"))),
                prediction=self.prediction,
                probs=json.dumps(self.probs) if status == 200 and self.probs is not None else None,
                input_id=self._keep() if status == 200 else None,
            )

    def _keep(self) -> str | None:
        """serve.loop.keep_inputs: the id of this request's kept inputs (None when off)."""
        keeper = self.srv.keeper
        req = getattr(self, "req", None)
        return None if keeper is None or req is None else keeper.keep(req.messages, req.images)

    def loop_labels(self) -> list[str] | None:
        """The class labels whose probabilities the loop keeps: the cascade's, else eval.labels."""
        srv = self.srv
        if srv.keeper is None or srv.serve.backend != "transformers":
            return None
        labels = srv.cascade.labels if srv.cascade is not None else srv.cfg.eval.labels
        return list(labels) if labels else None

    def set_probs(self, log_probs, labels: list[str]) -> None:
        """The softmax (temperature 1, as loop collect's re-scoring) of per-label log-probabilities."""
        p = softmax(log_probs)
        self.probs = {lab: float(x) for lab, x in zip(labels, p, strict=True)}

    async def score_labels(self) -> None:
        """keep_inputs with class labels: one forward of the served variant over the labels.

        The cascade already scored them (it sets ``probs`` itself); otherwise this costs the request one
        forward pass after its answer, on the variant that answered. Never fails the request.
        """
        labels = self.loop_labels()
        req = getattr(self, "req", None)
        if labels is None or self.probs is not None or req is None:
            return
        v = self.variant
        try:
            scored = await asyncio.to_thread(
                score_candidates, v.host, v.adapter, req.messages, req.images, labels
            )
        except Exception:  # noqa: BLE001 - keeping probabilities must never fail a request
            log.exception("could not score the labels of request %s", self.rid)
            return
        self.set_probs(scored.log_probs, labels)

    def route_and_admit(self) -> Response | None:
        """Pick the variant and take a concurrency slot; the refusal to send back, if any."""
        srv = self.srv
        try:
            self.alias, self.variant = srv.route(self.body.model, self.user, self.rid)
        except ApiError as exc:
            self.finish(exc.status, error=exc.message)
            return error_response(exc, self.headers)
        self.version = self.variant.ref.version
        self.headers.update({"X-Tuneline-Variant": self.alias, "X-Tuneline-Version": self.version})
        if srv.running >= srv.serve.limits.max_concurrency:
            busy = ApiError(
                429,
                f"{srv.running} requests in flight, the limit (serve.limits.max_concurrency); retry shortly",
                type_="rate_limit_error",
            )
            self.finish(429, error=busy.message)
            return error_response(busy, self.headers | {"Retry-After": "1"})
        srv.running += 1
        srv.metrics.running.inc()
        self.variant.acquire()
        return None

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.srv.running -= 1
            self.srv.metrics.running.dec()
            self.variant.release()

    async def prepare(self) -> None:
        srv, body = self.srv, self.body
        self.max_tokens = max_tokens_of(body, srv.serve.limits)
        prepared = await asyncio.to_thread(
            prepare, body, self.max_tokens, srv.engine, self.variant, srv.serve
        )
        self.req, self.prompt_text, self.images = prepared.req, prepared.prompt_text, prepared.req.images
        self.info.update(images=len(self.images), image_bytes=prepared.image_bytes)
        self.stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])

    def cache_key(self) -> None:
        body = self.body
        if body.temperature == 0 and self.srv.serve.cache.enabled:
            self.srv.metrics.cache_queries.inc()
            payload = body.model_dump_json(
                include={"messages", "max_tokens", "max_completion_tokens", "stop"}
            )
            self.key = hashlib.sha256(
                f"{self.alias}|{self.version}|{self.max_tokens}|{payload}".encode()
            ).hexdigest()

    def lookup(self) -> None:
        self.created = int(time.time())
        self.hit = self.srv.cache.get(self.key) if self.key else None
        if self.hit is not None:
            self.srv.metrics.cache_hits.inc()

    def observe(self, text: str, done: Done | None, ttft: float | None) -> None:
        srv, alias = self.srv, self.alias
        if done is not None:
            srv.metrics.prompt_tokens.labels(alias).inc(done.prompt_tokens)
            srv.metrics.generation_tokens.labels(alias).inc(done.completion_tokens)
            srv.metrics.request_success.labels(done.finish_reason, alias).inc()
        if ttft is not None:
            srv.metrics.ttft.labels(alias).observe(ttft)
        if srv.serve.drift.enabled and srv.drift.add(self.images, self.prompt_text, text):
            asyncio.get_running_loop().run_in_executor(srv._drift_pool, srv.drift.check)

    # ---------------------------------------------------------------- the answer
    def chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        event = {
            "id": self.rid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.body.model,
            "system_fingerprint": f"{self.alias}-v{self.version}",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(event)}\n\n"

    @staticmethod
    def usage(done: Done) -> dict:
        return {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        }

    async def generate(self) -> AsyncIterator[tuple[str, Done | None]]:
        """(text so far, Done) pairs as text arrives; from the cache in one piece."""
        if self.hit is not None:
            yield self.hit[0], self.hit[1]
            return
        text = ""
        async for item in self.srv.engine.stream(self.variant, self.req):
            if isinstance(item, Delta):
                text += item.text
                yield text, None
            else:
                yield text, item

    async def complete(self) -> Response:
        """The whole answer as one chat.completion (stream: false)."""
        srv, hit = self.srv, self.hit
        try:
            text, done, ttft, stopped = "", None, None, False
            async for text, d in self.generate():
                if ttft is None and text:
                    ttft = time.perf_counter() - self.started
                if d is not None:
                    done = d
                text, stopped = cut_at_stop(text, self.stops)
                if stopped:
                    break
            if done is None:
                done = Done("stop", 0, 0)
            if done.first_token_at is not None and hit is None:
                ttft = done.first_token_at - self.started
            if self.key and hit is None and not stopped:
                srv.cache.put(self.key, (text, done))
            text, pii_headers = srv.pii.complete(text)  # the cache keeps the raw text
            self.headers.update(pii_headers)
            reason = "stop" if stopped else done.finish_reason
            self.observe(text, done, ttft)
            self.prediction = text
            await self.score_labels()
            result = {
                "id": self.rid,
                "object": "chat.completion",
                "created": self.created,
                "model": self.body.model,
                "system_fingerprint": f"{self.alias}-v{self.version}",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": self.usage(done),
            }
            self.finish(
                200,
                ttft_s=ttft,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                cached=hit is not None,
                finish_reason=reason,
                batch_size=done.batch_size,
            )
            return JSONResponse(result, headers=self.headers)
        except ApiError as exc:  # serve.pii: block
            self.finish(exc.status, error=exc.message)
            return error_response(exc, self.headers)
        except GenerationError as exc:
            self.finish(500, error=str(exc))
            err = ApiError(500, f"generation failed: {exc}", type_="server_error")
            return error_response(err, self.headers)
        finally:
            self.release()

    async def events(self) -> AsyncIterator[str]:
        """The answer as server-sent chat.completion.chunk events (stream: true)."""
        srv, body, hit, stops = self.srv, self.body, self.hit, self.stops
        sent, done, ttft, stopped, status = "", None, None, False, 200
        holdback = max((len(s) for s in stops), default=1) - 1
        scan = srv.pii.stream()
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            async for text, d in self.generate():
                if d is not None:
                    done = d
                text, stopped = cut_at_stop(text, stops)
                ready = text if (stopped or d is not None) else text[: max(len(text) - holdback, len(sent))]
                piece = scan.feed(ready, final=stopped or d is not None)
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - self.started
                    yield self.chunk({"content": piece})
                sent = ready
                if stopped:
                    break
            if piece := scan.feed(sent, final=True):
                yield self.chunk({"content": piece})
            if done is None:
                done = Done("stop", 0, 0)
            if self.key and hit is None and not stopped:
                srv.cache.put(self.key, (sent, done))
            yield self.chunk({}, "stop" if stopped else done.finish_reason)
            if body.stream_options and body.stream_options.include_usage:
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "id": self.rid,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": body.model,
                            "choices": [],
                            "usage": self.usage(done),
                        }
                    )
                    + "\n\n"
                )
            self.observe(sent, done, ttft)
            self.prediction = sent
            await self.score_labels()
        except GenerationError as exc:
            status = 500
            self.info["error"] = str(exc)
            err = ApiError(500, f"generation failed: {exc}", type_="server_error")
            yield f"data: {json.dumps(err.body())}\n\n"
        except ApiError as exc:  # serve.pii: block, after the stream began
            status = exc.status
            self.info["error"] = exc.message
            yield f"data: {json.dumps(exc.body())}\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status = 499  # the client went away
            raise
        finally:
            self.release()
            self.finish(
                status,
                ttft_s=ttft,
                prompt_tokens=done.prompt_tokens if done else None,
                completion_tokens=done.completion_tokens if done else None,
                cached=hit is not None,
                batch_size=done.batch_size if done else 1,
                **({"pii": sorted(scan.kinds)} if scan.kinds else {}),
            )
        yield "data: [DONE]\n\n"
