"""Every multimodal family through the real stages (prepare, train, evaluate) with every method.

Slow (a few seconds per case): run with ``-m slow``. The default suite proves each family through
test_families.py (forward, backward, LoRA invariants) and the stages through tests/training/test_methods.py
on gemma3 and llama.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.models.families import family_names, get_family
from tuneline.models.load import load_model, resolve_base
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: m, seed: 0}}
model: {{base: "tiny:{family}"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 96
train: {{method: {method}, train_projector: {projector}, learning_rate: 5.0e-3, batch_size: 4, max_steps: 2,
        logging_steps: 1, save_steps: 2}}
eval: {{max_samples: 4, max_new_tokens: 2}}
registry: {{enabled: false}}
"""

MULTIMODAL = [n for n in family_names() if get_family(n).multimodal]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
@pytest.mark.parametrize("family", MULTIMODAL)
def test_family_trains_and_evaluates(family, method, tmp_path, shapes_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = CONFIG.format(
        family=family,
        data=shapes_dir / "data.jsonl",
        method=method,
        projector="true" if method == "lora" else "false",
    )
    cfg = load_config(write_config(tmp_path, text))
    run = RunDir.create(cfg, None)
    for stage in ("prepare", "train", "evaluate"):
        run_stage(stage, cfg, run)
    summary = run.summary()
    assert summary["train"]["steps"] == 2 and summary["eval"]["tuned"]["n"] == 4
    if method == "full":
        base = resolve_base(cfg.model)
        reference = load_model(base).state_dict()
        tuned = load_model(base, folder=run.adapter_dir).state_dict()
        changed = {k for k, v in tuned.items() if not torch.equal(v, reference[k])}
        vision = [m.rsplit(".", 1)[-1] for m in get_family(family).vision_modules]
        assert changed and not any(v in k for v in vision for k in changed)
