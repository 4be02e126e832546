"""Evaluation during training: keep the best checkpoint, stop early, record cost and resources."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.errors import ConfigError
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: es, seed: 0}}
model: {{base: "tiny:llama"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified, train: 0.6, val: 0.2, test: 0.2}}
  max_seq_length: 64
train:
  learning_rate: {lr}
  batch_size: 4
  max_steps: 60
  logging_steps: 2
  eval_steps: 2
  save_steps: 2
  early_stopping_patience: 2
  save_total_limit: 2
  cost: {{accelerator: L4, count: 2, price_per_hour: 2.5}}
registry: {{enabled: false}}
"""


@pytest.fixture
def text_data(tmp_path):
    words = ["red", "green", "blue", "yellow", "black"]
    lines = [
        {"messages": [{"role": "user", "content": f"Say {w} please"}, {"role": "assistant", "content": w}]}
        for w in words * 8
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_diverging_run_stops_early_and_keeps_the_best_checkpoint(tmp_path, text_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        write_config(tmp_path, CONFIG.format(data=text_data, lr=10.0))
    )  # far too high: diverges
    # (3.0 stopped diverging within 60 steps once length grouping mixed near-equal lengths)
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    run_stage("train", cfg, run)
    train = run.summary()["train"]
    evals = [m for m in run.metrics() if "eval_loss" in m]
    assert train["stopped_early"] and train["steps"] < 60 and len(evals) >= 3
    best = min(evals, key=lambda m: m["eval_loss"])
    assert train["best_eval_loss"] == pytest.approx(best["eval_loss"])
    assert train["best_checkpoint"] == f"checkpoint-{best['step']}"
    kept = run.checkpoints_dir / train["best_checkpoint"]
    assert kept.is_dir()  # rotation never deletes the best one
    final = load_file(run.adapter_dir / "adapter_model.safetensors")
    at_best = load_file(kept / "adapter_model.safetensors")
    assert all(torch.equal(final[k], at_best[k]) for k in final)  # the adapter is the best, not the last
    cost = train["cost"]
    assert cost["accelerator"] == "L4" and cost["accelerator_hours"] == pytest.approx(
        train["seconds"] * 2 / 3600, rel=0.01
    )
    assert cost["cost"] == pytest.approx(cost["accelerator_hours"] * 2.5, rel=1e-6)
    assert train["tokens"] > 0 and train["peak_memory_gb"] > 0


def test_evaluation_schedule_is_validated(tmp_path, text_data):
    text = CONFIG.format(data=text_data, lr=0.1)
    with pytest.raises(ConfigError, match="save_steps .3. must be a multiple of eval_steps"):
        load_config(write_config(tmp_path, text), ["train.save_steps=3"])
    with pytest.raises(ConfigError, match="early_stopping_patience needs eval_steps"):
        load_config(write_config(tmp_path, text), ["train.eval_steps=null"])
