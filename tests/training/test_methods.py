"""Every method (lora, dora, qlora, full) trains a tiny VLM and a tiny text model, and evaluates."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.config.schema import TrainConfig
from tuneline.models.load import load_model, resolve_base
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: m, seed: 0}}
model: {{base: "{base}"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{method: {method}, train_projector: {projector}, learning_rate: 5.0e-3, batch_size: 4, max_steps: 4,
        logging_steps: 2, save_steps: 4}}
eval: {{max_samples: 4, max_new_tokens: 2}}
registry: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    words = ["red", "green", "blue", "yellow"]
    lines = [
        {
            "id": f"t{i}",
            "messages": [
                {"role": "user", "content": f"Say the word {w}"},
                {"role": "assistant", "content": w},
            ],
        }
        for i, w in enumerate(words * 8)
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder / "data.jsonl"


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full"])
@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_method_trains_and_evaluates(method, family, tmp_path, shapes_dir, text_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = shapes_dir / "data.jsonl" if family == "gemma3" else text_data
    text = CONFIG.format(
        base=f"tiny:{family}",
        data=data,
        method=method,
        projector="true" if family == "gemma3" and method != "qlora" else "false",
    )
    cfg = load_config(write_config(tmp_path, text))
    run = RunDir.create(cfg, None)
    for stage in ("prepare", "train", "evaluate"):
        run_stage(stage, cfg, run)
    summary = run.summary()
    assert summary["train"]["steps"] == 4 and summary["eval"]["tuned"]["n"] == 4

    base = resolve_base(cfg.model)
    reference = load_model(base).state_dict()
    if method == "full":
        tuned = load_model(base, folder=run.adapter_dir)
        changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, reference[k])}
        assert any("layers" in k for k in changed)  # the language model trained
        assert not any("vision_tower" in k for k in changed)  # the vision tower stayed frozen
        return
    tuned = PeftModel.from_pretrained(load_model(base, quantize_4bit=method == "qlora"), run.adapter_dir)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means trained
    if method == "dora":
        assert any("lora_magnitude_vector" in n for n, _ in tuned.named_parameters())
    if method == "qlora":
        assert any("Linear4bit" in type(m).__name__ for m in tuned.modules())
        return
    frozen = 0
    for name, param in tuned.base_model.model.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(param, reference[key]), name
        frozen += 1
    assert frozen > 10
    # Merging the adapter into the weights gives the same logits as applying it on the fly.
    ids = torch.tensor([[1, 5, 9, 12, 30, 7]])
    with torch.no_grad():
        unmerged = tuned(input_ids=ids).logits
        merged = tuned.merge_and_unload()(input_ids=ids).logits
    assert torch.allclose(unmerged, merged, atol=1e-5), float((unmerged - merged).abs().max())


def test_training_the_vision_tower_never_adapts_a_family_s_protected_modules():
    import re

    from tuneline.models.families import get_family
    from tuneline.training.adapters import lora_config

    llama4 = get_family("llama4")
    for train in (TrainConfig(), TrainConfig(train_vision_tower=True)):
        exclude = re.compile(lora_config(train, llama4).exclude_modules)
        assert exclude.fullmatch("language_model.model.layers.0.feed_forward.router")  # MoE router: never
    assert not re.compile(
        lora_config(TrainConfig(train_vision_tower=True), llama4).exclude_modules
    ).fullmatch("vision_model.model.layers.0.self_attn.q_proj")
