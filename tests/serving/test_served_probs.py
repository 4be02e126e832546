"""serve.loop.keep_inputs with class labels: the A/B log keeps the answering variant's class probabilities.

Cascaded requests reuse the small model's label scores (no second forward); a pinned alias, whole or
streamed, costs one forward over the labels after its answer. ``loop collect`` then takes them as they
were served, and re-scores nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import running_server, serve_config

pytestmark = pytest.mark.integration

LABELS = ["red", "green", "blue", "yellow"]


def _ask(client: httpx.Client, model: str, prompt: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 2}
    r = client.post("/v1/chat/completions", json={**body, "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    return r


def test_served_probabilities_are_logged_and_collect_uses_them(registry, tmp_path, monkeypatch):
    import tuneline.registry.resolve as resolve
    from tuneline.loop.collect import collect
    from tuneline.serving import chat

    forwards: list[str] = []
    real = chat.score_candidates

    def counting(host, adapter, messages, images, texts):
        forwards.append(str(adapter))
        return real(host, adapter, messages, images, texts)

    monkeypatch.setattr(chat, "score_candidates", counting)
    cfg = serve_config(
        tmp_path,
        registry,
        {
            "drift": {"enabled": False},
            "cache": {"enabled": False},
            "loop": {"keep_inputs": True},
            "cascade": {
                "small": f"{registry.name}@champion",
                "fallback": f"{registry.name}@challenger",
                "threshold": 0.0,  # never falls back: the small model answers
                "labels": LABELS,
            },
        },
    )
    with running_server(cfg) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        cascaded = _ask(client, registry.name, "What colour is it?")
        assert forwards == []  # the cascade's own scores: no second forward
        pinned = _ask(client, f"{registry.name}@challenger", "What colour is that?")
        assert len(forwards) == 1
        streamed = _ask(client, f"{registry.name}@champion", "And this one?", stream=True)
        assert len(forwards) == 2
        running.server.store.flush()
        running.server.keeper.flush()
    rows = {
        rid: (variant, json.loads(probs) if probs else None)
        for rid, variant, probs in sqlite3.connect(Path(cfg.serve.state_dir) / "ab.sqlite").execute(
            "SELECT id, variant, probs FROM responses"
        )
    }
    ids = {
        "cascaded": cascaded.headers["x-request-id"],
        "pinned": pinned.headers["x-request-id"],
        "streamed": streamed.headers["x-request-id"],
    }
    for rid in ids.values():
        variant, probs = rows[rid]
        assert probs is not None and sorted(probs) == sorted(LABELS)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    assert rows[ids["pinned"]][0] == "challenger" and rows[ids["cascaded"]][0] == "champion"
    small = rows[ids["cascaded"]][1]
    # no calibration curve: temperature 1, so the header's confidence is the top recorded probability
    assert max(small.values()) == pytest.approx(float(cascaded.headers["x-tuneline-confidence"]), abs=1e-4)
    assert max(small, key=small.__getitem__) == cascaded.json()["choices"][0]["message"]["content"]

    loads: list[str] = []

    def unavailable(ref, *a, **k):  # the other alias's re-scoring is tests/loop/test_served_probs.py's
        loads.append(ref)
        raise LookupError("no re-scoring in this test")

    monkeypatch.setattr(resolve, "load", unavailable)
    pool = {c.id: c for c in collect(cfg, tmp_path / "pool.jsonl", since=0.0, labels=LABELS)}
    assert set(pool) == set(ids.values())
    for rid, (variant, probs) in rows.items():
        assert pool[rid].probs == {variant: probs}
        assert pool[rid].probs_source == {variant: "served"}
    assert len(loads) <= 2  # at most one load per alias, only for candidates that lack that alias's
