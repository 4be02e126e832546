"""Every bad input gets a 4xx with a clear message, and the server keeps serving; API keys; limits."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import httpx
import pytest
from PIL import Image

from tests.serving.conftest import png_data_uri, running_server, serve_config

KEY = "sk-test-0123456789"


def huge_png_header(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header says width x height (no pixel data worth decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    import os

    os.environ["TUNELINE_TEST_KEY"] = KEY
    os.environ["TUNELINE_TEST_KEY2"] = "sk-rotated"
    cfg = serve_config(
        tmp_path_factory.mktemp("bad"),
        registry,
        {
            "auth": {"api_key_envs": ["TUNELINE_TEST_KEY", "TUNELINE_TEST_KEY2"]},
            "limits": {
                "max_body_bytes": 300_000,
                "max_image_bytes": 100_000,
                "max_tokens": 16,
                "max_images": 2,
                "max_messages": 8,
                "max_message_chars": 20_000,
                "max_prompt_chars": 30_000,
            },
            "drift": {"enabled": False},
        },
    )
    with running_server(cfg) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def image_message(url: str) -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "colour?"}],
    }


def body(registry, messages=None, **extra) -> dict:
    return {
        "model": registry.name,
        "messages": messages or [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        **extra,
    }


def _png(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


CASES = {
    "invalid JSON": (
        lambda r: {
            "content": b'{"model": "shapes", "messages": [',
            "headers": {"content-type": "application/json"},
        },
        400,
        "not valid JSON",
    ),
    "missing messages": (lambda r: {"json": {"model": r.name}}, 400, "messages"),
    "bad role": (lambda r: {"json": body(r, [{"role": "robot", "content": "x"}])}, 400, "messages.0.role"),
    "string max_tokens": (lambda r: {"json": body(r, max_tokens="5")}, 400, "max_tokens"),
    "max_tokens over limit": (lambda r: {"json": body(r, max_tokens=17)}, 400, "serve.limits.max_tokens"),
    "n > 1": (lambda r: {"json": body(r, n=2)}, 400, "n"),
    "unknown field": (lambda r: {"json": body(r, logit_bias={})}, 400, "logit_bias"),
    "unknown model": (lambda r: {"json": {**body(r), "model": "gpt-4"}}, 404, "not served here"),
    "unknown alias": (lambda r: {"json": {**body(r), "model": f"{r.name}@nope"}}, 404, "not served here"),
    "remote image URL": (
        lambda r: {"json": body(r, [image_message("https://example.com/cat.png")])},
        400,
        "remote image URLs are not fetched",
    ),
    "file path": (lambda r: {"json": body(r, [image_message("/etc/passwd")])}, 400, "file paths"),
    "invalid base64": (
        lambda r: {"json": body(r, [image_message("data:image/png;base64,@@@not-base64@@@")])},
        400,
        "not valid base64",
    ),
    "not an image": (
        lambda r: {
            "json": body(
                r, [image_message("data:image/png;base64," + base64.b64encode(b"hello world").decode())]
            )
        },
        400,
        "not an image",
    ),
    "truncated image": (
        lambda r: {
            "json": body(
                r, [image_message("data:image/png;base64," + base64.b64encode(_png((64, 64))[:-40]).decode())]
            )
        },
        400,
        "truncated or corrupt",
    ),
    "30000x30000 image": (
        lambda r: {
            "json": body(
                r, [image_message("data:image/png;base64," + base64.b64encode(huge_png_header()).decode())]
            )
        },
        400,
        "900,000,000 pixels",
    ),
    "6000x6000 image": (
        lambda r: {
            "json": body(
                r,
                [
                    image_message(
                        "data:image/png;base64," + base64.b64encode(huge_png_header(6000, 6000)).decode()
                    )
                ],
            )
        },
        400,
        "6000x6000",
    ),
    "image bytes over limit": (
        lambda r: {"json": body(r, [image_message("data:image/png;base64," + "A" * 200_000)])},
        413,
        "serve.limits.max_image_bytes",
    ),
    "too many images": (
        lambda r: {"json": body(r, [image_message(png_data_uri(Image.new("RGB", (8, 8))))] * 3)},
        400,
        "serve.limits.max_images",
    ),
    "JSON nested 100,000 deep": (
        lambda r: {
            "content": b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "nested too deeply",
    ),
    "lone surrogate in the text": (
        lambda r: {
            "content": b'{"model": "shapes", "messages": [{"role": "user", "content": "a\\ud800 b"}]}',
            "headers": {"content-type": "application/json"},
        },
        400,
        "lone UTF-16 surrogate",
    ),
    "empty body": (lambda r: {"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty"),
    "too many messages": (
        lambda r: {"json": body(r, [{"role": "user", "content": "x"}] * 9)},
        400,
        "serve.limits.max_messages",
    ),
    "5,000 messages (parsed in the helper process)": (
        lambda r: {"json": body(r, [{"role": "user", "content": "x"}] * 5_000)},
        400,
        "serve.limits.max_messages",
    ),
    "message over the char bound": (
        lambda r: {"json": body(r, [{"role": "user", "content": [{"type": "text", "text": "x" * 20_001}]}])},
        400,
        "serve.limits.max_message_chars",
    ),
    "messages over the total char bound": (
        lambda r: {"json": body(r, [{"role": "user", "content": "x" * 16_000}] * 2)},
        400,
        "serve.limits.max_prompt_chars",
    ),
    "body over limit": (
        lambda r: {"json": body(r, [{"role": "user", "content": "x" * 400_000}])},
        413,
        "serve.limits.max_body_bytes",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.integration
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(case, client, registry):
    make, status, words = CASES[case]
    r = client.post("/v1/chat/completions", **make(registry))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"], error
    ok = client.post("/v1/chat/completions", json=body(registry))
    assert ok.status_code == 200, ok.text


@pytest.mark.integration
def test_chunked_body_over_the_limit(client, registry):
    def chunks():
        yield b'{"model": "shapes", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]


@pytest.mark.integration
def test_api_keys(server, registry):
    plain = body(registry)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/chat/completions", json=plain)
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json=plain, headers={"Authorization": "Bearer sk-wrong"})
        assert r.status_code == 401 and "invalid API key" in r.json()["error"]["message"]
        # Invalid JSON without a key: the key is checked first.
        r = c.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        # Both configured keys work (rotation).
        for key in (KEY, "sk-rotated"):
            assert (
                c.post(
                    "/v1/chat/completions", json=plain, headers={"Authorization": f"Bearer {key}"}
                ).status_code
                == 200
            )


@pytest.mark.integration
def test_access_log_has_no_keys_or_image_bytes(client, registry, caplog):
    import json
    import logging

    uri = png_data_uri(Image.new("RGB", (16, 16), (1, 2, 3)))
    with caplog.at_level(logging.INFO, logger="tuneline.access"):
        r = client.post(
            "/v1/chat/completions", json=body(registry, [image_message(uri)], user="secret-user-id")
        )
        assert r.status_code == 200
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "tuneline.access"]
    entry = next(e for e in lines if e.get("id") == r.json()["id"])
    assert entry["status"] == 200 and entry["images"] == 1 and entry["image_bytes"] > 0
    assert entry["variant"] == "champion" and entry["user_hash"] and "latency_ms" in entry
    text = caplog.text
    assert (
        KEY not in text and uri[30:80] not in text and "secret-user-id" not in text and "colour?" not in text
    )


@pytest.mark.integration
def test_concurrency_limit_gives_429(registry, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cfg = serve_config(
        tmp_path,
        registry,
        {"limits": {"max_concurrency": 2}, "batching": {"max_batch_size": 1}, "drift": {"enabled": False}},
    )
    with running_server(cfg) as running, httpx.Client(base_url=running.url, timeout=60) as c:
        with ThreadPoolExecutor(12) as pool:
            codes = list(
                pool.map(
                    lambda _: c.post("/v1/chat/completions", json={**body(registry), "max_tokens": 24}),
                    range(24),
                )
            )
        statuses = {r.status_code for r in codes}
        assert statuses == {200, 429}
        busy = next(r for r in codes if r.status_code == 429)
        assert "serve.limits.max_concurrency" in busy.json()["error"]["message"]
        assert busy.headers["retry-after"] == "1"
        assert c.post("/v1/chat/completions", json=body(registry)).status_code == 200


@pytest.mark.integration
def test_response_cache_for_temperature_zero(client, server, registry):
    req = body(registry, [{"role": "user", "content": "cache me"}], temperature=0, max_tokens=6)
    hits = server.server.metrics.cache_hits._value.get()
    a = client.post("/v1/chat/completions", json=req).json()
    b = client.post("/v1/chat/completions", json=req).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["id"] != b["id"]
    assert server.server.metrics.cache_hits._value.get() == hits + 1
    client.post("/v1/chat/completions", json={**req, "temperature": 0.7})  # sampled: never cached
    assert server.server.metrics.cache_hits._value.get() == hits + 1
    metrics = client.get("/metrics").text
    for name in (
        "tuneline:requests_total", "tuneline:time_to_first_token_seconds_bucket",
        "tuneline:e2e_request_latency_seconds_bucket", "tuneline:prompt_tokens_total",
        "tuneline:generation_tokens_total", "tuneline:response_cache_hits_total",
        "tuneline:batch_size_bucket",
        "tuneline:request_success_total",
    ):  # fmt: skip
        assert name in metrics, name


def test_an_encoder_classifier_is_refused_with_a_clear_error():
    from tuneline.errors import ModelError
    from tuneline.serving.engine import ModelHost

    with pytest.raises(ModelError, match="sequence classifier"):
        ModelHost("tiny:bert", dtype="float32", device="cpu", max_batch_size=1, max_wait_ms=0)


def test_rows_of_one_batch_end_at_their_own_max_tokens():
    """Requests batched together with different max_tokens: each ends at its own limit (or a stop token)."""
    import threading
    import time

    from tuneline.serving.engine import Done, ModelHost, _Control, _Job

    host = ModelHost("tiny:llama", dtype="float32", device="cpu", max_batch_size=4, max_wait_ms=500)
    try:
        gate = threading.Event()
        host._queue.put(_Control(gate.wait))  # hold the worker until both requests are queued
        outs: dict[int, list] = {2: [], 6: []}
        prompt = host.processor.render([{"role": "user", "content": "hello"}], add_generation_prompt=True)
        for n in outs:
            host._queue.put(_Job(None, prompt, [], n, 0.0, 1.0, outs[n].append, stream=False))
        host._last_batch = 2  # the worker waits max_wait_ms for company, as under load
        gate.set()
        deadline = time.monotonic() + 60
        while not all(o and isinstance(o[-1], Done) for o in outs.values()):
            assert time.monotonic() < deadline, outs
            time.sleep(0.01)
        for n, items in outs.items():
            done = items[-1]
            tokens = [t for chunk in items[:-1] for t in chunk]
            assert done.batch_size == 2 and len(tokens) == done.completion_tokens <= n
            assert done.finish_reason == "stop" or done.completion_tokens == n
    finally:
        host.close()


@pytest.mark.integration
def test_unknown_routes_and_methods_get_the_openai_error_shape(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert (
        r.json()["error"]["code"] == "not_found" and "no route GET /v1/nope" in r.json()["error"]["message"]
    )
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "allowed: POST" in r.json()["error"]["message"] and r.json()["error"]["type"]


@pytest.mark.integration
def test_integral_floats_are_integers_as_in_json_schema(client, registry):
    assert client.post("/v1/chat/completions", json=body(registry, max_tokens=2.0)).status_code == 200
    r = client.post("/v1/chat/completions", json=body(registry, max_tokens=2.5))
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = client.post("/v1/chat/completions", json=body(registry, max_tokens=True))
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


@pytest.mark.integration
def test_metrics_answer_without_a_key_or_a_redirect_by_default(server):
    r = httpx.get(f"{server.url}/metrics", follow_redirects=False)
    assert r.status_code == 200 and "tuneline:requests_total" in r.text


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-3])
@pytest.mark.integration
def test_a_temperature_next_to_zero_is_greedy_not_a_server_error(client, registry, temperature):
    # Found by the schema fuzzer: logits / 1e-300 overflow to inf and sampling failed with a 500.
    req = body(registry, [{"role": "user", "content": "hi"}], temperature=temperature, max_tokens=4)
    resp = client.post("/v1/chat/completions", json=req)
    assert resp.status_code == 200, resp.text
    greedy = client.post("/v1/chat/completions", json={**req, "temperature": 0}).json()
    assert resp.json()["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
