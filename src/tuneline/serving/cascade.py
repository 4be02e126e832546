"""Hybrid serving: the small model answers first; the fallback only when the small model is unsure.

    serve:
      cascade: {small: shapes@small, fallback: shapes@large, threshold: auto, target: {min: 0.9}}
      # or fallback: {url: http://127.0.0.1:8001/v1, model: big, api_key: ${BIG_KEY}}

A request for the bare model name goes to ``cascade.small``. Its confidence is the top class probability
over ``cascade.labels`` (default ``eval.labels``; the answer is the most probable label), else
exp(mean token log-prob) of its generated answer (:mod:`tuneline.serving.confidence`). Below the
threshold (``auto``: the one ``tuneline serve calibrate`` chose, read from the curve JSON) the request
goes to the fallback: a registered version served here (NAME@alias) or an OpenAI-compatible endpoint
through the ``openai`` client (timeout and retries from the config). Over the daily budget the bar for
falling back is raised (``serve.budget``).

A fallback that fails, is slow (``timeout_s``), answers garbage, or whose circuit is open degrades to
the small model's answer: flagged in ``X-Tuneline-Degraded`` and the body's ``tuneline.degraded``,
counted in ``tuneline:cascade_routes_total{route, degraded}``, never a 5xx. Streaming: the route is
decided, and the answer complete, before the first event, so a failing fallback degrades cleanly too.

Headers: ``X-Tuneline-Route`` (small / fallback), ``X-Tuneline-Confidence``, ``X-Tuneline-Threshold``
(the bar in force; ``none`` over budget with small_only), ``X-Tuneline-Cost``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tuneline.errors import ConfigError
from tuneline.serving.breaker import OPEN, CircuitBreaker
from tuneline.serving.cascade_curve import softmax
from tuneline.serving.confidence import generation_confidence, score_candidates
from tuneline.serving.engine import Delta, Done, GenerationError
from tuneline.serving.limits import ApiError

if TYPE_CHECKING:
    from tuneline.serving.chat import ChatCall

log = logging.getLogger("tuneline.serve")

CURVE_FILE = Path("cascade") / "curve.json"


def curve_path(serve_cfg) -> Path:
    c = serve_cfg.cascade
    return Path(c.curve) if c is not None and c.curve is not None else Path(serve_cfg.state_dir) / CURVE_FILE


def read_curve(serve_cfg) -> dict | None:
    path = curve_path(serve_cfg)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(
            [f"the cascade curve {path} is not JSON ({exc})"],
            hint="run `tuneline serve calibrate CONFIG` again",
        ) from None


def aliases(serve_cfg, model_name: str) -> list[str]:
    """The aliases the server loads: serve.traffic's, then the cascade's local ones."""
    out = list(serve_cfg.traffic)
    c = serve_cfg.cascade
    if c is not None:
        refs = [c.small] + ([c.fallback] if isinstance(c.fallback, str) else [])
        for ref in refs:
            name, _, alias = ref.partition("@")
            if name != model_name:
                raise ConfigError(
                    [f"serve.cascade: {ref!r} names model {name!r}, but this server serves {model_name!r}"],
                    hint=f"use {model_name}@ALIAS, or a {{url, model}} fallback for another model",
                )
            if alias not in out:
                out.append(alias)
    return out


class FallbackFailed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Answer:
    text: str
    done: Done
    busy_s: float
    confidence: float | None = None
    cost: float = 0.0
    log_probs: np.ndarray | None = None  # per label, when scored over cascade.labels


class Cascade:
    def __init__(self, cfg, model_name: str, metrics, costs) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        serve = cfg.serve
        c = serve.cascade
        self.cfg, self.serve, self.c = cfg, serve, c
        self.model_name = model_name
        self.small_alias = c.small.partition("@")[2]
        self.local_fallback = c.fallback.partition("@")[2] if isinstance(c.fallback, str) else None
        self.remote = None if isinstance(c.fallback, str) else c.fallback
        self.fallback_label = self.local_fallback or f"remote:{c.fallback.model}"
        self.labels = list(c.labels or cfg.eval.labels or []) or None
        if serve.backend != "transformers":
            raise ConfigError(
                ["serve.cascade needs serve.backend: transformers (it scores the small model's answer)"],
                hint="serve the small model with the transformers backend; the fallback can be a vLLM URL",
            )
        curve = read_curve(serve)
        self.temperature = (
            float(curve.get("temperature") or 1.0) if curve and c.calibration != "none" else 1.0
        )
        if curve and self.labels and curve.get("labels") and list(curve["labels"]) != self.labels:
            log.warning(
                "the cascade curve %s was calibrated for labels %s, not %s: run `tuneline serve calibrate`",
                curve_path(serve),
                curve["labels"],
                self.labels,
            )
        if c.threshold == "auto":
            if curve is None or curve.get("threshold") is None:
                raise ConfigError(
                    [f"serve.cascade.threshold is auto but there is no curve at {curve_path(serve)}"],
                    hint="run `tuneline serve calibrate CONFIG` first, or set serve.cascade.threshold: 0.x",
                )
            self.threshold = float(curve["threshold"])
        else:
            self.threshold = float(c.threshold)
        self.metrics, self.costs = metrics, costs
        r = metrics.registry
        self.routes = Counter(
            "tuneline:cascade_routes",
            "Cascade answers by route (small, fallback) and degradation (none, timeout, error, invalid, "
            "circuit_open, budget, unavailable).",
            ["route", "degraded"],
            registry=r,
        )
        self.confidence = Histogram(
            "tuneline:cascade_confidence",
            "The small model's confidence per cascade request.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.bar = Gauge(
            "tuneline:cascade_threshold",
            "Confidence below which the cascade falls back now (raised bar over budget; -1: never).",
            registry=r,
        )
        self.breaker_open = Gauge(
            "tuneline:cascade_breaker_open", "1 while the fallback circuit is open.", registry=r
        )
        self.breaker = CircuitBreaker(c.breaker.failures, c.breaker.reset_s)
        self.breaker.on_change = lambda state: self.breaker_open.set(1 if state == OPEN else 0)
        self.bar.set(self.threshold)
        self._client: Any = None

    # ---------------------------------------------------------------- the small model
    async def _small(self, call: ChatCall) -> Answer:
        variant, req = call.variant, call.req
        host = variant.host
        if self.labels:
            scored = await asyncio.to_thread(
                score_candidates, host, variant.adapter, req.messages, req.images, self.labels
            )
            p = softmax(scored.log_probs, self.temperature)
            k = int(np.argmax(p))
            done = Done("stop", scored.prompt_tokens, int(scored.tokens[k]))
            return Answer(self.labels[k], done, scored.busy_s, float(p[k]), log_probs=scored.log_probs)
        began = time.perf_counter()
        text, done = await _collect(call.srv.engine, variant, replace(req, stream=False))
        busy = (time.perf_counter() - began) / max(done.batch_size, 1)
        scored = await asyncio.to_thread(
            score_candidates, host, variant.adapter, req.messages, req.images, [text]
        )
        conf = generation_confidence(float(scored.log_probs[0]), int(scored.tokens[0]))
        return Answer(text, done, busy + scored.busy_s, conf)

    # ---------------------------------------------------------------- the fallback
    async def _fallback(self, call: ChatCall) -> Answer:
        if self.remote is not None:
            return await self._remote(call)
        assert self.local_fallback is not None
        variant = call.srv.routes.get(self.local_fallback)
        if variant is None:
            raise FallbackFailed("unavailable", f"{self.local_fallback} is not loaded")
        variant.acquire()
        try:
            req = replace(call.req, prompt=None, stream=False)  # its own chat template
            if self.labels:
                scored = await asyncio.wait_for(
                    asyncio.to_thread(
                        score_candidates, variant.host, variant.adapter, req.messages, req.images, self.labels
                    ),
                    self.c.timeout_s,
                )
                k = int(np.argmax(scored.log_probs))
                done = Done("stop", scored.prompt_tokens, int(scored.tokens[k]))
                return Answer(self.labels[k], done, scored.busy_s, cost=self.costs.local(scored.busy_s))
            began = time.perf_counter()
            text, done = await asyncio.wait_for(_collect(call.srv.engine, variant, req), self.c.timeout_s)
            busy = (time.perf_counter() - began) / max(done.batch_size, 1)
            return Answer(text, done, busy, cost=self.costs.local(busy))
        except TimeoutError:
            raise FallbackFailed("timeout", f"no answer within {self.c.timeout_s:g} s") from None
        except GenerationError as exc:
            raise FallbackFailed("error", str(exc)) from None
        finally:
            variant.release()

    def client(self):
        if self._client is None:
            from openai import AsyncOpenAI

            assert self.remote is not None
            self._client = AsyncOpenAI(
                base_url=self.remote.url,
                api_key=self.remote.api_key or "none",
                timeout=self.c.timeout_s,
                max_retries=self.c.retries,
            )
        return self._client

    async def _remote(self, call: ChatCall) -> Answer:
        import openai

        assert self.remote is not None
        body = call.body
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        began = time.perf_counter()
        overall = self.c.timeout_s * (self.c.retries + 1) + 1.0
        try:
            resp = await asyncio.wait_for(
                self.client().chat.completions.create(
                    model=self.remote.model,
                    messages=messages,
                    max_tokens=call.max_tokens,
                    temperature=body.temperature,
                    top_p=body.top_p,
                ),
                overall,
            )
        except (TimeoutError, openai.APITimeoutError):
            raise FallbackFailed("timeout", f"no answer within {self.c.timeout_s:g} s") from None
        except openai.APIStatusError as exc:
            raise FallbackFailed("error", f"status {exc.status_code}") from None
        except openai.APIConnectionError as exc:
            raise FallbackFailed("error", f"unreachable ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - an unparseable answer
            raise FallbackFailed("invalid", type(exc).__name__) from None
        choices = getattr(resp, "choices", None)
        content = getattr(getattr(choices[0], "message", None), "content", None) if choices else None
        if not choices or not isinstance(content, str) or not content.strip():
            raise FallbackFailed("invalid", "no message content in the answer")
        usage = getattr(resp, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        reason = getattr(choices[0], "finish_reason", None) or "stop"
        done = Done(str(reason), prompt, completion)
        return Answer(content, done, time.perf_counter() - began, cost=self.costs.remote(prompt, completion))

    # ---------------------------------------------------------------- one request
    async def answer(self, call: ChatCall) -> Response:
        """The endpoint's answer for a cascade request (whole, or streamed once decided)."""
        call.cascaded = True
        call.created = int(time.time())
        srv = call.srv
        key = f"{call.key}|cascade|{self.threshold}" if call.key else None
        cached = srv.cache.get(key) if key else None
        try:
            if cached is not None:
                srv.metrics.cache_hits.inc()
                final, meta = cached
                meta = {**meta, "cost": 0.0, "cached": True}
            else:
                final, meta = await self._decide(call)
                if key and not meta.get("degraded"):
                    srv.cache.put(key, (final, meta))
            await call.score_labels()  # a cached answer: the small model's probabilities, one forward
        except GenerationError as exc:
            call.release()
            call.finish(500, error=str(exc))
            return JSONResponse(
                ApiError(500, f"generation failed: {exc}", type_="server_error").body(),
                status_code=500,
                headers=call.headers,
            )
        except BaseException:
            call.release()
            raise
        call.headers.update(_headers(meta))
        text, pii_headers = srv.pii.complete(final.text)
        call.headers.update(pii_headers)
        ttft = time.perf_counter() - call.started
        call.observe(text, final.done, ttft)
        call.prediction = text
        call.release()
        call.finish(
            200,
            ttft_s=ttft,
            prompt_tokens=final.done.prompt_tokens,
            completion_tokens=final.done.completion_tokens,
            cached=cached is not None,
            finish_reason=final.done.finish_reason,
            route=meta["route"],
            **({"degraded": meta["degraded"]} if meta.get("degraded") else {}),
        )
        if not call.body.stream:
            return JSONResponse(_completion(call, text, final.done, meta), headers=call.headers)
        return StreamingResponse(
            _events(call, text, final.done, meta), media_type="text/event-stream", headers=call.headers
        )

    async def _decide(self, call: ChatCall) -> tuple[Answer, dict]:
        small = await self._small(call)
        if small.log_probs is not None and self.labels and call.loop_labels():
            # the log row's variant is the small alias: keep its probabilities, no second forward
            call.set_probs(small.log_probs, self.labels)
        conf = float(small.confidence if small.confidence is not None else 1.0)
        self.confidence.observe(conf)
        bar = self.costs.budget.fallback_threshold(self.threshold)
        self.bar.set(-1 if bar is None else bar)
        small.cost = self.costs.local(small.busy_s)
        route, degraded, fallback = "small", None, None
        if conf < self.threshold and bar is None:
            degraded = "budget"  # would have fallen back; the budget says no
        elif bar is not None and conf < bar:
            if not self.breaker.allow():
                degraded = "circuit_open"
            else:
                try:
                    fallback = await self._fallback(call)
                    self.breaker.success()
                    route = "fallback"
                except FallbackFailed as exc:
                    self.breaker.failure()
                    degraded = exc.reason
                    log.warning(
                        "cascade fallback %s failed (%s): the small model answers", self.fallback_label, exc
                    )
        self.routes.labels(route, degraded or "none").inc()
        self.costs.spend(self.small_alias, small.cost)
        if fallback is not None:
            self.costs.spend(self.fallback_label, fallback.cost)
        fb_cost = fallback.cost if fallback is not None else 0.0
        self.costs.log(
            call.rid, self.small_alias, route, small.cost, fb_cost, confidence=conf, degraded=degraded
        )
        meta = {
            "route": route,
            "answered_by": self.fallback_label if route == "fallback" else self.small_alias,
            "confidence": conf,
            "threshold": bar,
            "degraded": degraded,
            "cost": small.cost + fb_cost,
            "budget_exceeded": self.costs.budget.exceeded,
        }
        return (fallback if fallback is not None else small), meta


async def _collect(engine, variant, req) -> tuple[str, Done]:
    text, done = "", None
    async for item in engine.stream(variant, req):
        if isinstance(item, Delta):
            text += item.text
        else:
            done = item
    return text, done or Done("stop", 0, 0)


def _headers(meta: dict) -> dict[str, str]:
    h = {
        "X-Tuneline-Route": meta["route"],
        "X-Tuneline-Answered-By": meta["answered_by"],
        "X-Tuneline-Confidence": f"{meta['confidence']:.4f}",
        "X-Tuneline-Threshold": "none" if meta["threshold"] is None else f"{meta['threshold']:.4f}",
        "X-Tuneline-Cost": f"{meta['cost']:.6g}",
    }
    if meta.get("degraded"):
        h["X-Tuneline-Degraded"] = meta["degraded"]
    if meta.get("budget_exceeded"):
        h["X-Tuneline-Budget"] = "exceeded"
    return h


def _completion(call: ChatCall, text: str, done: Done, meta: dict) -> dict:
    return {
        "id": call.rid,
        "object": "chat.completion",
        "created": call.created,
        "model": call.body.model,
        "system_fingerprint": f"{call.alias}-v{call.version}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": call.usage(done),
        "tuneline": meta,
    }


async def _events(call: ChatCall, text: str, done: Done, meta: dict):
    yield call.chunk({"role": "assistant", "content": ""})
    if text:
        yield call.chunk({"content": text})
    yield call.chunk({}, done.finish_reason)
    body = call.body
    if body.stream_options and body.stream_options.include_usage:
        usage = {
            "id": call.rid,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": body.model,
        }
        yield (
            "data: "
            + json.dumps({**usage, "choices": [], "usage": call.usage(done), "tuneline": meta})
            + "\n\n"
        )
    yield "data: [DONE]\n\n"
