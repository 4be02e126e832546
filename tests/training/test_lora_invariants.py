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
    from tests.conftest import TINY_RUN, write_config

    folder = tmp_path_factory.mktemp("lora")
    path = write_config(
        folder, TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=6) + "registry: {enabled: false}\n"
    )
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
