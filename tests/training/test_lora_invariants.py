from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from tuneline.config import load_config
from tuneline.models.load import folder_content_hash, load_model, resolve_base
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_dir):
    from tests.conftest import TINY_RUN

    folder = tmp_path_factory.mktemp("lora")
    return _train(
        folder, TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=6) + "registry: {enabled: false}\n"
    )


def _train(folder, config_text: str):
    """Prepare and train a run of config_text in folder: (config, run, resolved base, base hash before)."""
    from tests.conftest import write_config

    path = write_config(folder, config_text)
    cfg = load_config(path, [f"run.output_dir={folder / 'runs'}"])
    base = resolve_base(cfg.model)
    before = folder_content_hash(base.folder)
    run = RunDir.create(cfg, path)
    run_stage("prepare", cfg, run)
    run_stage("train", cfg, run)
    return cfg, run, base, before


def test_base_checkpoint_untouched_and_adapter_holds_only_trainable_weights(trained):
    cfg, run, base, before = trained
    assert folder_content_hash(base.folder) == before
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in k or "multi_modal_projector" in k for k in weights)
    assert not any("vision_tower" in k for k in weights)  # auto targeting leaves the vision side alone
    assert any("language_model" in k and "lora_" in k for k in weights)


def test_frozen_weights_unchanged_and_adapter_weights_changed(trained):
    cfg, run, base, _ = trained
    fresh = load_model(base)
    reference = {k: v.clone() for k, v in fresh.state_dict().items()}
    tuned = PeftModel.from_pretrained(load_model(base), run.adapter_dir)
    compared = 0
    for name, param in tuned.base_model.model.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(param, reference[key]), f"frozen weight {name} changed"
        compared += 1
    assert compared > 40  # every frozen tensor of the tiny model, not a vacuous pass
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means trained
    projector = tuned.base_model.model.model.multi_modal_projector.modules_to_save["default"]
    assert not torch.equal(
        projector.mm_input_projection_weight,
        reference["model.multi_modal_projector.mm_input_projection_weight"],
    )


def test_metrics_and_checkpoints_written(trained):
    _, run, _, _ = trained
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 3  # logging_steps=2 over 6 steps
    assert sorted(p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-5",
        "checkpoint-6",
    ]
    summary = run.summary()
    assert summary["train"]["steps"] == 6 and summary["stages"] == ["prepare", "train"]


# The same invariants for a classifier family (tiny bert): LoRA on the encoder, the head trained in full.
ENCODER_RUN = """
run: {{name: encoder, seed: 0}}
model: {{base: "tiny:bert"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified_group}}
  max_seq_length: 32
  checks: {{actions: {{token_budget_exceeded: warn}}}}
train:
  learning_rate: 2.0e-3
  batch_size: 8
  max_steps: 6
  logging_steps: 2
  save_steps: 3
  class_balance: loss
eval: {{gate: {{enabled: false}}}}
registry: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def trained_encoder(tmp_path_factory):
    from tuneline_synth.reviews import generate

    folder = tmp_path_factory.mktemp("encoder")
    data = generate(folder / "data", n=80, seed=5)
    return _train(folder, ENCODER_RUN.format(data=data))


def test_encoder_adapter_holds_lora_and_the_head(trained_encoder):
    _, run, base, before = trained_encoder
    assert folder_content_hash(base.folder) == before
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert all("lora_" in k or ".classifier." in k for k in weights)
    assert {k for k in weights if "lora_" not in k} == {
        "base_model.model.classifier.weight",
        "base_model.model.classifier.bias",
    }
    assert run.summary()["train"]["labels"] == ["negative", "positive"]


def test_encoder_frozen_weights_unchanged_head_and_adapters_trained(trained_encoder):
    from transformers import set_seed

    cfg, run, base, _ = trained_encoder
    labels = ["negative", "positive"]
    set_seed(cfg.run.seed)  # the head training started from, as the train stage drew it
    reference = {k: v.clone() for k, v in load_model(base, labels=labels).state_dict().items()}
    set_seed(cfg.run.seed)
    tuned = PeftModel.from_pretrained(load_model(base, labels=labels), run.adapter_dir)
    compared = 0
    for name, param in tuned.base_model.model.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(param, reference[key]), f"frozen weight {name} changed"
        compared += 1
    assert compared > 30
    assert all(p.abs().sum() > 0 for n, p in tuned.named_parameters() if "lora_B" in n)
    head = tuned.base_model.model.classifier.modules_to_save["default"]
    assert not torch.equal(head.weight, reference["classifier.weight"])


def test_encoder_resumes_to_the_same_weights(trained_encoder, tmp_path):
    """Checkpoints and resume follow the chat models' Trainer path: from step 3 it ends where 0 -> 6 did."""
    import shutil

    from tuneline.stages import train

    cfg, run, _, _ = trained_encoder
    copy = RunDir.open(shutil.copytree(run.path, tmp_path / "copy"))
    shutil.rmtree(copy.adapter_dir)
    shutil.rmtree(copy.checkpoints_dir / "checkpoint-6")
    train.run(cfg, copy)
    assert [m for m in copy.metrics() if m.get("event") == "resume"][-1]["checkpoint"] == "checkpoint-3"
    first = load_file(run.adapter_dir / "adapter_model.safetensors")
    again = load_file(copy.adapter_dir / "adapter_model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
