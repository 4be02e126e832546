"""No single request stalls the server: /health answers while a maximal text prompt is being refused."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.serving.conftest import running_server, serve_config

CHARS = 500_000  # the char bound of this test's server; the prompt is just under it


@pytest.mark.integration
def test_health_answers_within_100_ms_while_a_maximal_prompt_is_refused(registry, tmp_path):
    """A prompt just under serve.limits.max_prompt_chars passes the cheap bound and needs a long
    tokenization (about 100,000 tokens, a second or more here) before its refusal for max_prompt_tokens.
    Every /health probe sent while it is prepared must answer within 100 ms; the probes must overlap the
    tokenization itself (it is timed from inside the engine), so the test cannot pass by missing it."""
    cfg = serve_config(
        tmp_path,
        registry,
        {
            "limits": {"max_prompt_chars": CHARS, "max_message_chars": CHARS, "max_body_bytes": 2 * CHARS},
            "drift": {"enabled": False},
        },
    )
    with running_server(cfg) as running:
        engine = running.server.engine
        counted = engine.prompt_tokens
        tokenizing: list[float] = []  # perf_counter at start and end of the token count

        def timed(variant, req):
            tokenizing.append(time.perf_counter())
            try:
                return counted(variant, req)
            finally:
                tokenizing.append(time.perf_counter())

        engine.prompt_tokens = timed
        text = ("word " * (CHARS // 5))[: CHARS - 100]
        body = {"model": registry.name, "messages": [{"role": "user", "content": text}], "max_tokens": 2}
        refused: dict = {}

        def send() -> None:
            r = httpx.post(f"{running.url}/v1/chat/completions", json=body, timeout=120)
            refused.update(status=r.status_code, error=r.json().get("error", {}))

        probes: list[tuple[float, float]] = []  # (sent at, seconds to answer)
        with httpx.Client(base_url=running.url, timeout=30) as probe:
            probe.get("/health")  # the connection is open before the clock starts
            sender = threading.Thread(target=send)
            sender.start()
            while sender.is_alive():
                t0 = time.perf_counter()
                assert probe.get("/health").status_code == 200
                probes.append((t0, time.perf_counter() - t0))
                time.sleep(0.01)
            sender.join()

    assert refused["status"] == 400, refused
    assert "serve.limits.max_prompt_tokens" in refused["error"]["message"], refused
    assert len(tokenizing) == 2, "the prompt never reached tokenization"
    start, end = tokenizing
    during = [dt for t0, dt in probes if start <= t0 <= end]
    assert len(during) >= 3, f"only {len(during)} probes during {end - start:.2f} s of tokenization"
    slowest = max(dt for _, dt in probes)
    # A /health queued behind the tokenization would take about as long as it (and leave fewer than 3
    # probes inside it); 100 ms, or a third of the tokenization on a machine slow enough to stretch it.
    assert slowest < max(0.1, (end - start) / 3), (
        f"/health took {slowest * 1000:.0f} ms while the prompt was prepared "
        f"({len(probes)} probes, tokenization {end - start:.2f} s)"
    )
