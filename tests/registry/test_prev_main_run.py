"""Acceptance 6 of issue 15: a run directory written by the previous main (tests/fixtures/run_prev_main)
still works with ``register``, ``models show``, ``export`` and ``serve``.

The fixture was checked in without its weights; the test gives the copy a LoRA adapter of the shape the
previous main's train stage wrote (the PEFT adapter of ``tiny:gemma3`` for the run's own ``train``
section, with the processor beside it), and leaves every JSON artifact and the config as written then.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneline.cli import app

FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_prev_main"
runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def old_run(workdir) -> Path:
    """A copy of the fixture with an adapter in it (the only thing the fixture lacks)."""
    import torch
    from peft import get_peft_model

    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.runs import RunDir
    from tuneline.training.adapters import lora_config

    dst = workdir / "runs" / "tiny" / FIXTURE.name
    shutil.copytree(FIXTURE, dst)
    run = RunDir.open(dst)
    cfg = run.config()
    resolved = resolve_base(cfg.model)
    torch.manual_seed(cfg.run.seed)
    model = get_peft_model(load_model(resolved, cfg.model.dtype), lora_config(cfg.train, resolved.family))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained adapter changes the model's outputs
            torch.nn.init.normal_(p, std=0.3)
    model.save_pretrained(run.adapter_dir, safe_serialization=True)
    load_processor(resolved).inner.save_pretrained(run.adapter_dir)
    return dst


def test_register_show_export_of_a_previous_main_run(old_run, workdir):
    from transformers import AutoModelForImageTextToText

    before = {f: (old_run / f).read_text() for f in ("eval.json", "config.resolved.yaml", "data_report.json")}
    assert "registered tiny version 1 (challenger)" in " ".join(
        ok("models", "register", str(old_run)).split()
    )
    # The previous main's artifacts are read, not rewritten (summary.json gains its registry section).
    assert {f: (old_run / f).read_text() for f in before} == before
    summary = json.loads((old_run / "summary.json").read_text())
    assert summary["registry"]["model_name"] == "tiny" and summary["registry"]["version"] == "1"
    assert summary["eval"]["gate"]["passed"] is True  # the old sections kept as written

    shown = " ".join(ok("models", "show", "tiny/1").split())
    assert "tiny version 1" in shown and "aliases: challenger" in shown
    assert "base model: tiny:gemma3" in shown and "gate passed: true" in shown
    assert "Evaluation gate: passed (against base" in shown  # the card, rendered from the old run
    assert "learning rate | 0.002" in shown

    ok("models", "promote", "tiny", "1")
    out = workdir / "exported"
    assert "exported tiny@champion (merged)" in ok("export", "tiny@champion", "--format", "merged", str(out))
    record = json.loads((out / "tuneline_export.json").read_text())
    assert record["version"] == "1" and record["format"] == "merged"
    assert "# tiny — version 1" in (out / "README.md").read_text()
    assert AutoModelForImageTextToText.from_pretrained(out) is not None
    adapter_out = workdir / "adapter-export"
    ok("export", "tiny/1", "--format", "adapter", str(adapter_out))
    assert (adapter_out / "adapter_model.safetensors").is_file()


def test_serve_answers_from_a_previous_main_run(old_run, workdir):
    from fastapi.testclient import TestClient

    from tuneline.config import load_config
    from tuneline.serving.app import create_app

    ok("models", "register", str(old_run))
    ok("models", "promote", "tiny", "1")
    uri = f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"
    path = workdir / "serve.yaml"
    path.write_text(
        f'run: {{name: tiny}}\nmodel: {{base: "tiny:gemma3"}}\n'
        f'data: {{sources: [{{type: jsonl, path: "{old_run / "data" / "train.jsonl"}"}}]}}\n'
        f'registry: {{tracking_uri: "{uri}", model_name: tiny}}\n'
        f'serve: {{state_dir: "{workdir / "state"}", traffic: {{champion: 100}}}}\n'
    )
    cfg = load_config(path, [])
    with TestClient(create_app(cfg)) as client:  # in process: no port, no subprocess
        deadline = time.monotonic() + 120  # a generous bound on loading a tiny model, not a speed check
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.05)
        r = client.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "What colour is the shape?"}],
                "max_tokens": 3,
                "temperature": 0,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert r.headers["x-tuneline-version"] == "1" and r.headers["x-tuneline-variant"] == "champion"
