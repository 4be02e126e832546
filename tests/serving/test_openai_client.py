"""Acceptance 1: the OpenAI Python client talks to the server unchanged: text, image, streaming."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.serving.conftest import png_data_uri, running_server, serve_config


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    cfg = serve_config(
        tmp_path_factory.mktemp("openai"), registry, {"traffic": {"champion": 50, "challenger": 50}}
    )
    with running_server(cfg) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.integration
def test_models_lists_the_registered_model_and_each_alias(client, registry):
    ids = {m.id for m in client.models.list()}
    assert ids == {registry.name, f"{registry.name}@champion", f"{registry.name}@challenger"}


@pytest.mark.integration
def test_text_completion(client, registry):
    out = client.chat.completions.create(
        model=registry.name,
        messages=[{"role": "user", "content": "What colour is the shape?"}],
        max_tokens=5,
        temperature=0,
        user="alice",
    )
    choice = out.choices[0]
    assert out.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= out.usage.prompt_tokens and out.usage.completion_tokens <= 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


@pytest.mark.integration
def test_image_completion_with_headers(client, registry):
    img = Image.open(registry.records[0].images[0])
    raw = client.chat.completions.with_raw_response.create(
        model=f"{registry.name}@challenger",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_uri(img)}},
                    {"type": "text", "text": "What colour is the shape?"},
                ],
            }
        ],
        max_tokens=4,
        temperature=0,
    )
    out = raw.parse()
    assert raw.headers["x-tuneline-variant"] == "challenger"
    assert raw.headers["x-tuneline-version"] == registry.versions["b"]
    assert raw.headers["x-request-id"] == out.id
    # The image tokens are part of the prompt: far more than the text alone.
    text_only = client.chat.completions.create(
        model=f"{registry.name}@challenger",
        messages=[{"role": "user", "content": "What colour is the shape?"}],
        max_tokens=1,
    )
    assert out.usage.prompt_tokens > text_only.usage.prompt_tokens


@pytest.mark.integration
def test_streaming_matches_the_non_streamed_answer(client, registry):
    messages = [{"role": "user", "content": "What shape is this?"}]
    whole = client.chat.completions.create(
        model=f"{registry.name}@champion", messages=messages, max_tokens=8, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=f"{registry.name}@champion",
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.integration
def test_the_variants_share_one_base_model_with_one_adapter_each(server, registry):
    """One base model in memory, one adapter per version; the adapters really change the model."""
    import torch

    engine = server.server.engine
    assert len(engine.hosts) == 1
    host = next(iter(engine.hosts.values()))
    keys = {f"champion_v{registry.versions['a']}", f"challenger_v{registry.versions['b']}"}
    assert host.adapters == keys

    def logits(adapter):
        host.model.set_adapter(adapter)
        host._active = adapter
        ids = host.processor.tokenizer("What colour is the shape?", return_tensors="pt")
        with torch.inference_mode():
            return host.model(**ids).logits[0, -1]

    a, b = (host.call(lambda k=k: logits(k)) for k in sorted(keys))
    assert not torch.allclose(a, b, atol=1e-3)


@pytest.mark.integration
def test_sampling_request(client, registry):
    out = client.chat.completions.create(
        model=registry.name,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        temperature=0.8,
        top_p=0.9,
    )
    assert out.usage.completion_tokens <= 3
