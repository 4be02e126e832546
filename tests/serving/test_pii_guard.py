"""Issue 18, PII out: generated answers scanned with the data checks' detector, per serve.pii mode,
whole and streamed across chunks, with the tuneline:pii_outputs_total{kind} count moving."""

from __future__ import annotations

import json
import random

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.serving.conftest import running_server, serve_config
from tuneline.data.checks.pii import find_pii, redact
from tuneline.serving.limits import ApiError
from tuneline.serving.pii_guard import HEADER, PiiGuard

PLANTED = {
    "email": "Sure, write to jane.doe@example.com and she will answer.",
    "phone": "Call the clinic on (555) 123-4567 before noon.",
    "card": "The card on file is 4111 1111 1111 1111, expiring soon.",
}
CLEAN = "The shape is a red circle on a white background; 3 of 12 samples, 2024-05-17."


def _count(registry: CollectorRegistry, kind: str) -> float:
    return registry.get_sample_value("tuneline:pii_outputs_total", {"kind": kind}) or 0.0


def _stream(guard: PiiGuard, text: str, cuts: list[int]) -> str:
    """Feed ``text`` as the engine would (all text so far, growing at ``cuts``); what the client gets."""
    scan, out = guard.stream(), []
    for cut in cuts:
        out.append(scan.feed(text[:cut], final=False))
    out.append(scan.feed(text, final=True))
    return "".join(out)


def _splits(text: str, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    one_by_one = list(range(1, len(text)))
    randoms = [sorted(rng.sample(range(1, len(text)), k)) for k in (1, 3, 8, 20)]
    return [one_by_one, *randoms]


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_the_detector_sees_each_planted_value(kind):
    assert [m.kind for m in find_pii(PLANTED[kind])] == [kind]


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_whole_answer_per_mode(kind):
    text, registry = PLANTED[kind], CollectorRegistry()
    guard = PiiGuard("flag", registry)
    assert guard.complete(text) == (text, {HEADER: kind})
    assert _count(registry, kind) == 1
    guard.mode = "redact"
    out, headers = guard.complete(text)
    assert out == redact(text) and f"[{kind.upper()}]" in out and headers == {HEADER: kind}
    assert find_pii(out) == []
    guard.mode = "block"
    with pytest.raises(ApiError) as refused:
        guard.complete(text)
    assert refused.value.status == 400 and refused.value.body()["error"]["code"] == "pii_in_output"
    assert kind in refused.value.message
    assert _count(registry, kind) == 3
    guard.mode = "off"
    assert guard.complete(text) == (text, {}) and _count(registry, kind) == 3
    for mode in ("flag", "redact", "block"):
        guard.mode = mode
        assert guard.complete(CLEAN) == (CLEAN, {})


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_streamed_across_chunks_is_caught_like_the_whole(kind):
    text = PLANTED[kind] + " " + CLEAN
    value = find_pii(text)[0].text
    for cuts in _splits(text, seed=len(kind)):
        registry = CollectorRegistry()
        guard = PiiGuard("redact", registry)
        assert _stream(guard, text, cuts) == redact(text)
        assert _count(registry, kind) == 1
        registry = CollectorRegistry()
        guard = PiiGuard("flag", registry)
        assert _stream(guard, text, cuts) == text
        assert _count(registry, kind) == 1
        guard = PiiGuard("block", CollectorRegistry())
        scan, sent = guard.stream(), ""
        with pytest.raises(ApiError, match=kind):
            for cut in cuts:
                sent += scan.feed(text[:cut], final=False)
            scan.feed(text, final=True)
        assert value not in sent and find_pii(sent) == []


def test_number_split_across_chunks_is_not_sent_before_its_edge_is_known():
    """'555-123-4567' is a phone, '555-123-45678' is not: the digits wait for the next character."""
    guard = PiiGuard("redact", CollectorRegistry())
    scan = guard.stream()
    sent = scan.feed("ring 555-123-45", final=False) + scan.feed("ring 555-123-4567", final=False)
    assert "555" not in sent
    sent += scan.feed("ring 555-123-4567 now", final=True)
    assert sent == "ring [PHONE] now"
    scan = PiiGuard("redact", CollectorRegistry()).stream()
    sent = scan.feed("id 555-123-4567", final=False) + scan.feed("id 555-123-45678", final=True)
    assert sent == "id 555-123-45678"


# ------------------------------------------------------------------ through the real server
@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    cfg = serve_config(tmp_path_factory.mktemp("pii"), registry, {"cache": {"enabled": False}})
    assert cfg.serve.pii == "flag"  # the default
    with running_server(cfg) as running:
        yield running


@pytest.fixture
def planted(server, monkeypatch):
    """The engine answers with a chosen text, in small chunks (a card number split across them)."""
    from tuneline.serving.engine import Delta, Done

    answer = {"text": ""}

    async def stream(variant, req):
        text = answer["text"]
        for i in range(0, len(text), 3):
            yield Delta(text[i : i + 3])
        yield Done("stop", 5, len(text) // 3 + 1)

    monkeypatch.setattr(server.server.engine, "stream", stream)
    monkeypatch.setattr(server.server.pii, "mode", server.server.pii.mode)
    return answer


def _ask(server, stream: bool):
    body = {"model": "shapes", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def _streamed(resp) -> tuple[str, list[dict]]:
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    return text, [e for e in events if "error" in e]


@pytest.mark.parametrize("kind", sorted(PLANTED))
@pytest.mark.integration
def test_server_flags_redacts_and_blocks(server, planted, kind):
    srv = server.server
    planted["text"] = PLANTED[kind]
    before = _count(srv.metrics.registry, kind)

    resp = _ask(server, stream=False)  # flag, the default
    assert resp.status_code == 200 and resp.headers[HEADER] == kind
    assert resp.json()["choices"][0]["message"]["content"] == PLANTED[kind]
    text, errors = _streamed(_ask(server, stream=True))
    assert text == PLANTED[kind] and not errors
    assert _count(srv.metrics.registry, kind) == before + 2
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'tuneline:pii_outputs_total{{kind="{kind}"}} {before + 2:.1f}' in metrics

    srv.pii.mode = "redact"
    resp = _ask(server, stream=False)
    assert resp.json()["choices"][0]["message"]["content"] == redact(PLANTED[kind])
    text, errors = _streamed(_ask(server, stream=True))
    assert text == redact(PLANTED[kind]) and f"[{kind.upper()}]" in text and not errors

    srv.pii.mode = "block"
    resp = _ask(server, stream=False)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "pii_in_output" and kind in resp.json()["error"]["message"]
    text, errors = _streamed(_ask(server, stream=True))
    assert errors and errors[0]["error"]["code"] == "pii_in_output"
    assert find_pii(text) == [] and find_pii(PLANTED[kind])[0].text not in text
    assert _count(srv.metrics.registry, kind) == before + 6


@pytest.mark.integration
def test_server_leaves_clean_answers_alone(server, planted):
    planted["text"] = CLEAN
    resp = _ask(server, stream=False)
    assert resp.status_code == 200 and HEADER not in resp.headers
    assert resp.json()["choices"][0]["message"]["content"] == CLEAN
    assert _streamed(_ask(server, stream=True)) == (CLEAN, [])
