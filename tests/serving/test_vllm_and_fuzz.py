"""The vLLM command tuneline renders, and a schemathesis fuzz of the API from its own OpenAPI schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.conftest import serve_config


def test_vllm_command(registry, tmp_path):
    from tuneline.serving.vllm import render_command

    cfg = serve_config(
        tmp_path,
        registry,
        {
            "backend": "vllm",
            "traffic": {"champion": 90, "challenger": 10},
            "vllm": {"port": 8123, "max_lora_rank": 16, "extra_args": ["--max-model-len", "4096"]},
        },
    ).serve
    cmd = render_command(
        cfg, "google/gemma-3-4b-it", {"champion_v1": Path("/m/1"), "challenger_v2": Path("/m/2")}
    )
    assert cmd[:3] == ["vllm", "serve", "google/gemma-3-4b-it"]
    assert cmd[cmd.index("--port") + 1] == "8123" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "--enable-lora" in cmd
    i = cmd.index("--lora-modules")
    assert cmd[i + 1 : i + 3] == ["champion_v1=/m/1", "challenger_v2=/m/2"]
    assert cmd[cmd.index("--max-loras") + 1] == "4"  # room to load a promoted version beside the old
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    assert cmd[cmd.index("--max-num-seqs") + 1] == str(cfg.limits.max_concurrency)
    assert cmd[-2:] == ["--max-model-len", "4096"]


@pytest.mark.integration
def test_fuzz_the_api_from_its_openapi_schema(registry, tmp_path_factory, monkeypatch):
    """Schema-generated requests (valid and invalid) against a running server: never a 5xx."""
    import schemathesis

    from tests.serving.conftest import running_server

    folder = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(folder)  # schemathesis writes .hypothesis/ and .schemathesis/ here
    cfg = serve_config(folder, registry, {"limits": {"max_tokens": 4}, "drift": {"enabled": False}})
    seen: dict[str, set[int]] = {}
    with running_server(cfg) as running:
        schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
        for result in schema.get_all_operations():
            _fuzz(result.ok(), running.url, seen)
    chat = next(codes for label, codes in seen.items() if label.startswith("POST /v1/chat/completions"))
    assert any(400 <= c < 500 for c in chat), seen
    assert any(c == 200 for codes in seen.values() for c in codes), seen


def _fuzz(operation, url: str, seen: dict) -> None:
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def check(case):
        response = case.call(base_url=url, timeout=60)
        seen.setdefault(operation.label, set()).add(response.status_code)
        assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text[:300]}"

    check()
