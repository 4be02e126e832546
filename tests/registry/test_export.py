"""Acceptance 3: an exported merged model loads with plain transformers and gives the adapter model's
logits; the adapter export loads with plain PEFT; pickled weights are refused unless explicitly allowed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.registry.conftest import mlflow_client
from tuneline.cli import app

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _inputs(processor, shapes_dir):
    """One chat turn with an image, built by the exported processor alone."""
    record = json.loads((shapes_dir / "data.jsonl").read_text().splitlines()[0])
    image = Image.open(shapes_dir / record["messages"][0]["content"][0]["path"]).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=text, images=[image], return_tensors="pt")


@pytest.fixture
def registered(two_runs, workdir):
    ok("models", "register", str(two_runs.passed))
    ok("models", "promote", "tiny", "1")
    return f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"


def test_merged_export_loads_with_plain_transformers_and_matches_the_adapter(registered, workdir, shapes_dir):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tuneline.registry.resolve import load

    out = workdir / "exported"
    assert "exported tiny@champion (merged)" in ok("export", "tiny@champion", "--format", "merged", str(out))
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "tuneline_export.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".exported")]  # no temp folder left
    record = json.loads((out / "tuneline_export.json").read_text())
    assert record["version"] == "1" and record["aliases"] == ["champion"] and record["format"] == "merged"
    assert "# tiny — version 1" in (out / "README.md").read_text()

    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    adapter_model, _ = load("models:/tiny@champion")
    assert isinstance(adapter_model, PeftModel)  # the adapter is applied, not merged
    inputs = _inputs(processor, shapes_dir)
    with torch.no_grad():
        want = adapter_model(**inputs).logits
        got = merged(**inputs).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # The adapter changed the model: these logits are not the base model's.
    base = AutoModelForImageTextToText.from_pretrained(record["base_model"]["folder"]).eval()
    with torch.no_grad():
        assert (base(**inputs).logits - want).abs().max() > 1e-3

    # The adapter export: adapter weights plus a pointer to the base, loadable by plain PEFT.
    adapter_out = workdir / "adapter-export"
    ok("export", "tiny/1", "--format", "adapter", str(adapter_out), "--tracking-uri", registered)
    cfg = json.loads((adapter_out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == record["base_model"]["folder"]
    peft_model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(cfg["base_model_name_or_path"]), adapter_out
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, want, atol=1e-5, rtol=0)

    # bf16: a smaller copy of the same model.
    half = workdir / "bf16"
    ok("export", "tiny@champion", "--format", "merged", "--dtype", "bf16", str(half))
    assert AutoModelForImageTextToText.from_pretrained(half).dtype == torch.bfloat16
    # An existing folder is not overwritten by accident.
    again = runner.invoke(app, ["export", "tiny@champion", str(out)])
    assert again.exit_code == 4 and "not empty" in again.output


def test_pickled_adapter_is_refused_unless_allowed(registered, workdir):
    from safetensors.torch import load_file

    from tuneline.errors import ModelError
    from tuneline.registry.resolve import load, resolve

    # A version whose artifact holds the same adapter as a pickle (adapter_model.bin).
    c = mlflow_client(registered)
    v1 = c.get_model_version("tiny", "1")
    src = resolve("tiny/1").source_dir
    pickled = workdir / "pickled-adapter"
    shutil.copytree(src, pickled)
    weights = load_file(str(pickled / "adapter_model.safetensors"))
    torch.save(weights, pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    c.create_model_version("tiny", source=pickled.as_uri(), run_id=v1.run_id, tags=v1.tags)

    with pytest.raises(ModelError, match="pickled files"):
        load("tiny/2")
    out = workdir / "out"
    refused = runner.invoke(app, ["export", "tiny/2", "--format", "adapter", str(out)])
    assert (
        refused.exit_code == 4 and "never unpickles" in refused.output and "--allow-pickle" in refused.output
    )
    assert not out.exists()

    ok("export", "tiny/2", "--format", "adapter", "--allow-pickle", str(out))
    assert not list(out.glob("*.bin"))  # converted: the export itself is safetensors
    converted = load_file(str(out / "adapter_model.safetensors"))
    assert converted.keys() == weights.keys()
    assert all(torch.equal(converted[k], weights[k]) for k in weights)
