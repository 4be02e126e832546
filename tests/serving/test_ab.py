"""Acceptance 2: sticky A/B assignment, a 50/50 split within ±5% over 1,000 users; feedback and report."""

from __future__ import annotations

import httpx
import pytest

from tests.serving.conftest import running_server, serve_config
from tuneline.serving import ab


def test_assignment_is_sticky_and_splits_1000_users_evenly():
    traffic = {"champion": 50.0, "challenger": 50.0}
    users = [f"user-{i}" for i in range(1000)]
    first = [ab.assign(traffic, "salt", u) for u in users]
    assert first == [ab.assign(traffic, "salt", u) for u in users]  # sticky
    share = first.count("challenger") / len(users)
    assert 0.45 <= share <= 0.55
    # Another salt reshuffles users (but keeps the split).
    other = [ab.assign(traffic, "other-salt", u) for u in users]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 300
    assert 0.45 <= other.count("challenger") / len(users) <= 0.55


def test_uneven_split_and_zero_share():
    users = [f"u{i}" for i in range(2000)]
    got = [ab.assign({"champion": 90, "challenger": 10}, "s", u) for u in users]
    assert 0.07 <= got.count("challenger") / len(users) <= 0.13
    assert {ab.assign({"champion": 100, "challenger": 0}, "s", u) for u in users} == {"champion"}


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    cfg = serve_config(
        tmp_path_factory.mktemp("ab"),
        registry,
        {"traffic": {"champion": 50, "challenger": 50}, "salt": "test-salt", "drift": {"enabled": False}},
    )
    with running_server(cfg) as running:
        yield running


def _ask(client: httpx.Client, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.integration
def test_server_routes_users_stickily_and_records_feedback(server, registry, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    users = [f"user-{i}" for i in range(60)]
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def variant(user: str, how: str) -> tuple[str, str]:
            r = (
                _ask(client, registry.name, user=user)
                if how == "body"
                else client.post(
                    "/v1/chat/completions",
                    json={
                        "model": registry.name,
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 1,
                    },
                    headers={"X-User-Id": user},
                )
            )
            assert r.status_code == 200, r.text
            return r.headers["x-tuneline-variant"], r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda u: variant(u, "body"), users))
            second = list(pool.map(lambda u: variant(u, "header"), users))
        # The same user lands on the same variant, by body `user` or X-User-Id, and as ab.assign says.
        assert [v for v, _ in first] == [v for v, _ in second]
        assert [v for v, _ in first] == [
            ab.assign({"champion": 50, "challenger": 50}, "test-salt", u) for u in users
        ]
        assert {v for v, _ in first} == {"champion", "challenger"}

        # Feedback against response ids: champion right, challenger wrong.
        for v, rid in first:
            r = client.post(
                "/v1/feedback",
                json={
                    "response_id": rid,
                    "outcome": "correct" if v == "champion" else "incorrect",
                    "score": 1.0 if v == "champion" else 0.0,
                },
            )
            assert r.status_code == 200, r.text
        r = client.post("/v1/feedback", json={"response_id": "chatcmpl-nope", "outcome": "correct"})
        assert r.status_code == 404 and "chatcmpl-nope" in r.json()["error"]["message"]
        assert client.post("/v1/feedback", json={"response_id": first[0][1]}).status_code == 400

    server.server.store.flush()
    rep = ab.report(server.server.store.path, resamples=200)
    champ, chall = rep["variants"]["champion"], rep["variants"]["challenger"]
    n_champ = sum(v == "champion" for v, _ in first)
    assert champ["requests"] == 2 * n_champ and chall["requests"] == 2 * (len(users) - n_champ)
    assert champ["accuracy"]["value"] == 1.0 and chall["accuracy"]["value"] == 0.0
    assert champ["error_rate"]["value"] == 0.0
    lo, hi = champ["latency_p50_s"]["ci95"]
    assert 0 < lo <= champ["latency_p50_s"]["value"] <= hi
    lo, hi = rep["comparisons"]["challenger - champion"]["accuracy"]
    assert hi < 0  # the CI of the difference excludes 0: the data shows challenger is worse


@pytest.mark.integration
def test_report_cli(server, registry, tmp_path):
    from typer.testing import CliRunner

    from tuneline.cli import app

    server.server.store.flush()
    cfg_path = tmp_path / "report.yaml"
    state = server.server.store.path.parent
    cfg_path.write_text(
        f"model: {{base: 'tiny:gemma3'}}\ndata: {{sources: [{{type: jsonl, path: x.jsonl}}]}}\n"
        f"serve: {{state_dir: '{state}', traffic: {{champion: 50, challenger: 50}}}}\n"
    )
    result = CliRunner().invoke(app, ["serve", "report", str(cfg_path)])
    assert result.exit_code == 0, result.output
    assert "champion" in result.output and "challenger" in result.output and "accuracy" in result.output
