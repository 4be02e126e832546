"""The OpenAPI document tells the truth: schemathesis, fed only the served document, sends valid and invalid
requests to the real server over loopback (with the API key) and checks every answer against that document
(no 5xx, documented status, content type, headers and body schema; invalid data refused, valid data not
refused with an undocumented status)."""

from __future__ import annotations

import pytest

from tests.serving.conftest import serve_config

KEY = "conformance-key"


def _config(folder, registry, monkeypatch):
    monkeypatch.setenv("TUNELINE_CONFORMANCE_KEY", KEY)
    return serve_config(
        folder,
        registry,
        {
            "auth": {"api_key_envs": ["TUNELINE_CONFORMANCE_KEY"]},
            "limits": {"max_tokens": 4, "default_max_tokens": 2, "max_message_chars": 2000,
                       "max_prompt_chars": 4000},
            "drift": {"enabled": False},
            "batching": {"max_wait_ms": 0},
        },
    )  # fmt: skip


@pytest.mark.integration
def test_openapi_document_is_true_to_the_server(registry, tmp_path, monkeypatch):
    """The document's own claims, read directly: bearer auth on /v1/, the served names as the model enum,
    integer fields that accept 517.0 the way JSON Schema does, and 400 documented where a route returns it."""
    import httpx

    from tests.serving.conftest import running_server

    with running_server(_config(tmp_path, registry, monkeypatch)) as running:
        doc = httpx.get(f"{running.url}/openapi.json").json()
        auth = {"Authorization": f"Bearer {KEY}"}
        assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                assert (op.get("security") == [{"bearerAuth": []}]) == path.startswith("/v1/"), (path, method)
                assert "422" not in op["responses"], (path, method)
        chat = doc["components"]["schemas"]["ChatRequest"]["properties"]
        assert chat["model"]["enum"] == ["shapes", "shapes@champion"]
        assert "400" in doc["paths"]["/v1/feedback"]["post"]["responses"]
        body = {"model": "shapes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3.0}
        r = httpx.post(f"{running.url}/v1/chat/completions", json=body, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{running.url}/v1/chat/completions", json=body | {"max_tokens": 2.5}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
        # a feedback body with only response_id is outside the document, and the server refuses it
        feedback = doc["components"]["schemas"]["Feedback"]
        assert {"required": ["outcome"]}.items() <= feedback["anyOf"][0].items()
        r = httpx.post(f"{running.url}/v1/feedback", json={"response_id": "x"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "outcome", r.text


def _schemathesis_run(registry, folder, monkeypatch, examples: int) -> dict[str, dict[int, int]]:
    """Every operation of the served document, positive and negative, ``examples`` cases each; returns
    status counts per operation. Fails listing the (shrunk) failure of every operation where a check broke."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from tests.serving.conftest import running_server

    monkeypatch.chdir(folder)  # schemathesis writes .hypothesis/ and .schemathesis/ here
    cfg = _config(folder, registry, monkeypatch)
    seen: dict[str, dict[int, int]] = {}
    failures: list[str] = []
    with running_server(cfg) as running:
        config = schemathesis.Config.from_dict({"headers": {"Authorization": f"Bearer {KEY}"}})
        schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json", config=config)
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(operation, mode, running.url, examples, seen)
                except Unsatisfiable:  # nothing to negate (no parameters, no body)
                    assert mode == GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the (shrunk) failure
                    failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {exc}")
    assert not failures, "\n\n".join(failures[:5])
    return seen


def _fuzz(operation, mode, url: str, examples: int, seen: dict) -> None:
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    auth = {"Authorization": f"Bearer {KEY}"}

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=url, headers=auth, timeout=60)
        counts = seen.setdefault(operation.label, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        # every built-in check but positive_data_acceptance, which _valid_body_accepted replaces
        case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=auth)
        if mode == GenerationMode.POSITIVE:
            _valid_body_accepted(response)

    check()


def _valid_body_accepted(response) -> None:
    """Schemathesis' positive_data_acceptance, stricter: a schema-valid request is answered 2xx, 404 (an
    unknown response id) or 429 (busy); a 400/413 only with one of the error codes that the document lists
    as rules beyond JSON Schema (BEYOND_SCHEMA). Never a 5xx."""
    from tuneline.serving.requests import BEYOND_SCHEMA

    status = response.status_code
    if 200 <= status < 300 or status in (404, 429):
        return
    code = response.json().get("error", {}).get("code") if status in (400, 413) else None
    assert code in BEYOND_SCHEMA, f"schema-valid request refused: {status} {response.text[:400]}"


@pytest.mark.integration
def test_schemathesis_finds_no_server_error_and_no_schema_violation(registry, tmp_path, monkeypatch):
    seen = _schemathesis_run(registry, tmp_path, monkeypatch, examples=12)
    print("status counts per operation:", seen)
    chat = seen["POST /v1/chat/completions"]
    assert chat.get(200, 0) > 0 and any(400 <= c < 500 for c in chat), seen  # generation was reached
    assert not any(c >= 500 for counts in seen.values() for c in counts), seen


@pytest.mark.slow
@pytest.mark.integration
def test_schemathesis_longer_run(registry, tmp_path, monkeypatch):
    seen = _schemathesis_run(registry, tmp_path, monkeypatch, examples=100)
    assert not any(c >= 500 for counts in seen.values() for c in counts), seen
