"""Hybrid serving over loopback: the small model first, the fallback when unsure (issue 19, acc. 1, 2, 4).

The fallback is either a second, stand-in OpenAI-compatible server on loopback (whose behaviour a test
switches: ok, down, slow, garbage) or another registered version served in the same process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.serving.conftest import free_port, running_server, serve_config

pytestmark = pytest.mark.integration

LABELS = ["red", "green", "blue", "yellow"]
PROMPTS = [f"What colour is thing number {i}?" for i in range(10)]


@contextmanager
def stand_in():
    """An OpenAI-compatible /v1/chat/completions whose behaviour ``state['mode']`` picks."""
    import uvicorn

    state = {"mode": "ok", "hits": 0}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        state["hits"] += 1
        body = await request.json()
        mode = state["mode"]
        if mode == "down":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if mode == "slow":
            await asyncio.sleep(3)
        if mode == "garbage":
            return PlainTextResponse("<<<not json at all", status_code=200)
        if mode == "empty":
            return JSONResponse(
                {"id": "x", "object": "chat.completion", "created": 0, "model": "big", "choices": []}
            )
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "blue"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _body(model: str, prompt: str, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 2}
    return {**body, "temperature": 0, **extra}


def _ask(client: httpx.Client, model: str, prompt: str, **extra) -> httpx.Response:
    return client.post("/v1/chat/completions", json=_body(model, prompt, **extra))


def _metric(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if line.startswith("#") or not (head == name or head.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def remote(registry, tmp_path_factory):
    with stand_in() as (url, state):
        folder = tmp_path_factory.mktemp("cascade-remote")
        cfg = serve_config(
            folder,
            registry,
            {
                "drift": {"enabled": False},
                "cascade": {
                    "small": f"{registry.name}@champion",
                    "fallback": {"url": url, "model": "big", "api_key": "k"},
                    "threshold": 0.0,
                    "labels": LABELS,
                    "timeout_s": 0.5,
                    "retries": 0,
                    "breaker": {"failures": 3, "reset_s": 1.0},
                },
                "costs": {"price_per_hour": 3.6, "input_per_1k": 1.0, "output_per_1k": 2.0},
            },
        )
        with running_server(cfg) as running:
            yield running, state, folder


def test_confident_requests_stay_small_unsure_ones_go_to_the_fallback(remote, registry):
    running, state, folder = remote
    cascade = running.server.cascade
    state["mode"] = "ok"
    with httpx.Client(base_url=running.url, timeout=60) as client:
        # threshold 0: nobody falls back; the confidences come back in the body (and a header). The
        # untrained tiny model is sure of everything by several nats: a temperature spreads it out.
        cascade.threshold, cascade.temperature = 0.0, 10.0
        first = [_ask(client, registry.name, p) for p in PROMPTS]
        assert all(r.status_code == 200 for r in first)
        assert {r.headers["x-tuneline-route"] for r in first} == {"small"}
        conf = [r.json()["tuneline"]["confidence"] for r in first]
        assert conf == pytest.approx([float(r.headers["x-tuneline-confidence"]) for r in first], abs=1e-4)
        assert all(r.json()["choices"][0]["message"]["content"] in LABELS for r in first)
        assert len(set(conf)) > 1, conf
        # a threshold between the confidences: the unsure ones go to the fallback (which says "blue")
        ranked = sorted(set(conf))
        cascade.threshold = (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
        hits = state["hits"]
        second = [_ask(client, registry.name, p) for p in PROMPTS]
        routes = [r.headers["x-tuneline-route"] for r in second]
        assert routes == ["fallback" if c < cascade.threshold else "small" for c in conf]
        assert set(routes) == {"small", "fallback"}
        assert state["hits"] - hits == routes.count("fallback")
        for r, route in zip(second, routes, strict=True):
            meta = r.json()["tuneline"]
            assert meta["route"] == route and meta["degraded"] is None
            assert r.headers["x-tuneline-answered-by"] == (
                "remote:big" if route == "fallback" else "champion"
            )
            if route == "fallback":
                assert r.json()["choices"][0]["message"]["content"] == "blue"
                assert float(r.headers["x-tuneline-cost"]) >= 0.1 + 0.02  # 100 in x 1/1k + 10 out x 2/1k
        # streaming: routed before the first event; the fallback's answer streams (here from the response
        # cache: the same deterministic request), usage and route at the end
        unsure = PROMPTS[routes.index("fallback")]
        stream = {"stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", "/v1/chat/completions", json=_body(registry.name, unsure, **stream)) as s:
            assert s.status_code == 200 and s.headers["x-tuneline-route"] == "fallback"
            events = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
        assert (
            "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "blue"
        )
        last = events[-1]
        assert last["usage"]["completion_tokens"] == 10 and last["tuneline"]["route"] == "fallback"
        assert last["tuneline"]["cached"] is True and last["tuneline"]["cost"] == 0
        # a pinned alias skips the cascade
        pinned = _ask(client, f"{registry.name}@champion", PROMPTS[0])
        assert pinned.status_code == 200 and "x-tuneline-route" not in pinned.headers
        # feedback, then the metrics and serve report count both routes
        for r in second:
            client.post("/v1/feedback", json={"response_id": r.json()["id"], "outcome": "correct"})
        metrics = client.get("/metrics").text
    n_fallback = routes.count("fallback")  # the streamed one came from the cache
    assert _metric(metrics, "tuneline:cascade_routes_total", route="fallback") == n_fallback
    assert _metric(metrics, "tuneline:cascade_routes_total", route="small") == len(PROMPTS) + routes.count(
        "small"
    )
    assert _metric(metrics, "tuneline:cost_total", variant="remote:big") == pytest.approx(n_fallback * 0.12)
    assert _metric(metrics, "tuneline:cost_total", variant="champion") > 0
    running.server.store.flush()
    from typer.testing import CliRunner

    from tuneline.cli import app

    result = CliRunner().invoke(app, ["serve", "report", str(folder / "serve.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    costs = json.loads(result.output)["costs"]["champion"]
    assert costs["cascade_requests"] == 2 * len(PROMPTS)
    assert costs["share_fallback"] == pytest.approx(n_fallback / (2 * len(PROMPTS)))
    assert costs["cost_per_1k"] > 0
    assert costs["accuracy_by_route"]["fallback"]["n"] == routes.count("fallback")
    table = CliRunner().invoke(app, ["serve", "report", str(folder / "serve.yaml")])
    assert "to fallback" in table.output and "cost / 1,000" in table.output


@pytest.mark.parametrize(
    "mode,reason", [("down", "error"), ("slow", "timeout"), ("garbage", "invalid"), ("empty", "invalid")]
)
def test_a_failing_fallback_degrades_to_the_small_answer_flagged(remote, registry, mode, reason):
    running, state, _ = remote
    cascade = running.server.cascade
    cascade.threshold = 1.0  # everything would fall back
    cascade.breaker.success()  # closed
    state["mode"] = mode
    with httpx.Client(base_url=running.url, timeout=60) as client:
        began = time.perf_counter()
        r = _ask(client, registry.name, f"degrade {mode}")
        took = time.perf_counter() - began
        assert r.status_code == 200, r.text
        assert r.headers["x-tuneline-route"] == "small"
        assert r.headers["x-tuneline-degraded"] == reason
        assert r.json()["tuneline"]["degraded"] == reason
        assert r.json()["choices"][0]["message"]["content"] in LABELS
        assert took < 0.5 + 2.5  # the fallback's timeout plus the small model, not the stand-in's 3 s
        # streaming: the same decision before the first event, the small answer streamed
        with client.stream("POST", "/v1/chat/completions", json={
            "model": registry.name, "messages": [{"role": "user", "content": f"stream {mode}"}],
            "max_tokens": 2, "temperature": 0, "stream": True,
        }) as s:  # fmt: skip
            assert s.status_code == 200 and s.headers["x-tuneline-degraded"] == reason
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert text in LABELS


def test_the_circuit_opens_after_repeated_failures_and_closes_again(remote, registry):
    running, state, _ = remote
    cascade = running.server.cascade
    cascade.threshold = 1.0
    cascade.breaker.success()
    state["mode"] = "down"
    with httpx.Client(base_url=running.url, timeout=60) as client:
        reasons = [_ask(client, registry.name, f"cb {i}").headers["x-tuneline-degraded"] for i in range(3)]
        assert reasons == ["error"] * 3
        hits = state["hits"]
        r = _ask(client, registry.name, "cb open")
        assert r.status_code == 200 and r.headers["x-tuneline-degraded"] == "circuit_open"
        assert state["hits"] == hits  # not even tried
        assert "tuneline:cascade_breaker_open 1.0" in client.get("/metrics").text
        state["mode"] = "ok"
        time.sleep(1.1)  # reset_s: half-open, one trial
        r = _ask(client, registry.name, "cb trial")
        assert r.headers["x-tuneline-route"] == "fallback" and "x-tuneline-degraded" not in r.headers
        assert cascade.breaker.state == "closed"
        assert "tuneline:cascade_breaker_open 0.0" in client.get("/metrics").text
        assert _ask(client, registry.name, "cb after").headers["x-tuneline-route"] == "fallback"


def test_a_local_registered_fallback_and_the_daily_budget(registry, tmp_path):
    """fallback: NAME@alias served here; serve.budget.per_day trips at the configured spend and then the
    bar for falling back is raised (strict_threshold 0: nobody falls back), said in the metrics."""
    cfg = serve_config(
        tmp_path,
        registry,
        {
            "drift": {"enabled": False},
            "cascade": {
                "small": f"{registry.name}@champion",
                "fallback": f"{registry.name}@challenger",
                "threshold": 1.0,
                "labels": LABELS,
            },
            "costs": {"price_per_hour": 36000.0},  # 10 per busy second: one request crosses the budget
            "budget": {"per_day": 0.01, "action": "strict", "strict_threshold": 0.0},
        },
    )
    with running_server(cfg) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        metrics = client.get("/metrics").text
        assert "tuneline:budget_exceeded 0.0" in metrics and "tuneline:budget_per_day 0.01" in metrics
        r = _ask(client, registry.name, "first")
        assert r.headers["x-tuneline-route"] == "fallback"
        assert r.headers["x-tuneline-answered-by"] == "challenger"
        assert r.json()["choices"][0]["message"]["content"] in LABELS
        spent = running.server.costs.budget.today()
        assert spent >= 0.01  # crossed with this request
        metrics = client.get("/metrics").text
        assert "tuneline:budget_exceeded 1.0" in metrics
        r = _ask(client, registry.name, "second")
        assert r.headers["x-tuneline-route"] == "small"
        assert r.headers["x-tuneline-threshold"] == "0.0000" and r.headers["x-tuneline-budget"] == "exceeded"
        assert r.json()["tuneline"]["budget_exceeded"] is True
        assert "tuneline:cascade_threshold 0.0" in client.get("/metrics").text
        # small_only: never fall back over budget, flagged as such
        running.server.costs.budget.action = "small_only"
        r = _ask(client, registry.name, "third")
        assert r.headers["x-tuneline-route"] == "small" and r.headers["x-tuneline-degraded"] == "budget"
        assert r.headers["x-tuneline-threshold"] == "none"
        assert "tuneline:cascade_threshold -1.0" in client.get("/metrics").text


def test_calibrate_scores_val_with_both_registered_models_and_auto_serves_its_threshold(registry, tmp_path):
    """The stage behind `tuneline serve calibrate` on real registered versions (evaluation's label scorer),
    then a server with threshold: auto uses what it chose."""
    from tuneline.stages import calibrate

    cfg = serve_config(
        tmp_path,
        registry,
        {
            "drift": {"enabled": False},
            "cascade": {
                "small": f"{registry.name}@champion",
                "fallback": f"{registry.name}@challenger",
                "threshold": "auto",
                "labels": LABELS,
                "calibration": "temperature",
                "target": {"max_cost_per_1k": 1e9},  # no cap that binds: the most accurate threshold
            },
            "costs": {"price_per_hour": 3.6},
        },
    )
    val = [r for r in registry.records if r.target in LABELS][:12]
    result = calibrate.run(cfg, records=val, tracking_uri=registry.uri)
    assert result["n"] == len(val) and result["met"]
    best = max(p["accuracy"] for p in result["points"])
    assert result["chosen"]["accuracy"] == pytest.approx(best)
    assert result["small"]["cost_per_1k"] > 0 and result["ece_after"] is not None
    assert (tmp_path / "state" / "cascade" / "curve.svg").is_file()
    with running_server(cfg) as running:
        assert running.server.cascade.threshold == pytest.approx(result["threshold"])
        assert running.server.cascade.temperature == pytest.approx(result["temperature"])


def test_a_request_that_falls_back_costs_the_small_model_one_forward_pass(remote, registry, monkeypatch):
    """The small model's confidence path is one scoring call (one forward pass, no generation); a request
    that falls back does not score or generate on the small model again (issue 19)."""
    import tuneline.serving.cascade as cascade_mod

    running, state, _ = remote
    cascade = running.server.cascade
    state["mode"] = "ok"
    scorings, forwards, generations = [], [], []
    real_score = cascade_mod.score_candidates

    def counting_score(*args, **kwargs):
        scored = real_score(*args, **kwargs)
        scorings.append(scored.busy_s)
        return scored

    monkeypatch.setattr(cascade_mod, "score_candidates", counting_score)
    small = running.server.routes.get("champion")
    hook = small.host.model.register_forward_hook(lambda *_: forwards.append(1))
    engine = running.server.engine
    real_stream = engine.stream
    monkeypatch.setattr(engine, "stream", lambda *a, **k: generations.append(1) or real_stream(*a, **k))
    cascade.breaker.success()
    cascade.threshold = 1.01  # every request is unsure: all fall back
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            answers = [_ask(client, registry.name, f"One pass only, request {i}?") for i in range(3)]
    finally:
        hook.remove()
    assert [r.headers["x-tuneline-route"] for r in answers] == ["fallback"] * 3
    assert len(scorings) == 3 and len(forwards) == 3 and generations == []
    for r, busy in zip(answers, scorings, strict=True):
        small_cost = r.json()["tuneline"]["cost"] - 0.12  # the fallback's 100 in x 1/1k + 10 out x 2/1k
        assert small_cost == pytest.approx(busy / 3600 * 3.6, rel=1e-3, abs=1e-9)
