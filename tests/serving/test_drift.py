"""Acceptance 4: a darker input stream raises the drift score above threshold; an unshifted one does not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tests.serving.conftest import png_data_uri, running_server, serve_config
from tuneline.serving import drift


def test_statistics_behave():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(size=500)
    assert drift.psi(a, b, 10) < 0.1
    assert drift.psi(a, b + 1.0, 10) > 0.25
    assert drift.psi(np.full(100, 64.0), np.full(50, 64.0), 10) == pytest.approx(0, abs=1e-6)
    assert drift.psi(np.full(100, 64.0), np.full(50, 128.0), 10) > 1  # constant reference, new value
    x, y = rng.normal(size=(100, 8)), rng.normal(size=(100, 8))
    assert drift.mmd_test(x, y, 100)[1] > 0.05
    assert drift.mmd_test(x, y + 0.8, 100)[1] < 0.01
    assert drift.categorical_psi({"red": 0.5, "blue": 0.5}, ["red", "blue"] * 50) < 0.01
    assert drift.categorical_psi({"red": 0.5, "blue": 0.5}, ["green"] * 100) > 1


def test_reference_profile_from_the_training_images(registry):
    ref = drift.build_reference(registry.records[:50])
    assert ref["n_records"] == 50 and len(ref["features"]["brightness"]) == 50
    assert ref["embedding_kind"] == "histogram" and len(ref["embeddings"]) == 50
    assert set(ref["label_rates"]) <= {"red", "green", "blue", "yellow", "circle", "square", "triangle"}


def darker(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(0.45)


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    cfg = serve_config(
        tmp_path_factory.mktemp("drift"),
        registry,
        {"drift": {"window": 100, "min_samples": 80, "check_every": 20, "mmd_permutations": 100}},
    )
    with running_server(cfg) as running:
        yield running


def _stream(client, registry, images) -> None:
    for img in images:
        r = client.post(
            "/v1/chat/completions",
            json={
                "model": registry.name,
                "max_tokens": 1,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": png_data_uri(img)}},
                            {"type": "text", "text": "What colour is the shape?"},
                        ],
                    }
                ],
            },
        )
        assert r.status_code == 200, r.text


@pytest.mark.integration
def test_darker_images_raise_the_alert_unshifted_do_not(server, registry):
    import httpx

    held_out = [
        Image.open(r.images[0]).convert("RGB") for r in registry.records[200:300]
    ]  # not in the profile
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/v1/monitoring/drift").json()["status"] == "collecting"
        _stream(client, registry, held_out)
        same = client.get("/v1/monitoring/drift").json()
        assert same["status"] == "ok" and same["window"] == 100
        assert same["alert"] is False and same["shifted"] == []
        assert same["score"] < same["psi_threshold"]
        assert same["embedding"]["kind"] == "vision" and same["embedding"]["shifted"] is False
        assert "tuneline:drift_alert 0.0" in client.get("/metrics").text

        _stream(client, registry, [darker(im) for im in held_out])
        dark = client.get("/v1/monitoring/drift").json()
        assert dark["alert"] is True
        assert dark["score"] >= dark["psi_threshold"]
        assert "brightness" in dark["shifted"]
        b = dark["features"]["brightness"]
        assert b["live_mean"] < 0.6 * b["reference_mean"]
        assert dark["embedding"]["shifted"] is True
        metrics = client.get("/metrics").text
        assert (
            "tuneline:drift_alert 1.0" in metrics and 'tuneline:drift_score{feature="brightness"}' in metrics
        )


@pytest.mark.integration
def test_monitor_drift_cli(server, registry, tmp_path):
    from typer.testing import CliRunner

    from tuneline.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {base: 'tiny:gemma3'}\ndata: {sources: [{type: jsonl, path: x.jsonl}]}\n")
    result = CliRunner().invoke(app, ["monitor", "drift", str(cfg), "--url", server.url, "--fail-on-alert"])
    assert result.exit_code == 8, result.output
    assert "brightness" in result.output and "drift alert" in result.output
