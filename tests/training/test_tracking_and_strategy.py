"""Live MLflow metrics during training (one MLflow run per run directory, no duplicates at register),
and train.distributed.strategy rendered into the Trainer's own FSDP / DeepSpeed arguments."""

from __future__ import annotations

import json

import pytest
from transformers import TrainingArguments

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.config.schema import DistributedConfig
from tuneline.errors import ConfigError
from tuneline.registry import store
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage
from tuneline.training.distributed import strategy_arguments

CONFIG = """
run: {{name: live, seed: 0}}
model: {{base: "tiny:llama"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified, train: 0.6, val: 0.2, test: 0.2}}
  max_seq_length: 64
train: {{batch_size: 4, max_steps: 12, logging_steps: 2, save_steps: 6, class_balance: loss}}
eval: {{max_samples: 4, max_new_tokens: 2}}
"""


def test_training_curve_is_live_in_mlflow_and_register_does_not_duplicate_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = ["red"] * 24 + ["blue"] * 6  # imbalanced: class_balance: loss weights blue up
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Say {w} {i}"},
                        {"role": "assistant", "content": w},
                    ]
                }
            )
            + "\n"
            for i, w in enumerate(words)
        )
    )
    cfg = load_config(write_config(tmp_path, CONFIG.format(data=data)))
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    run_stage("train", cfg, run)

    rid = run.summary()["mlflow"]["run_id"]
    client = store.client(None)
    history = client.get_metric_history(rid, "train_loss")
    logged = [m["step"] for m in run.metrics() if "loss" in m]
    assert sorted(h.step for h in history) == logged == [2, 4, 6, 8, 10, 12]
    assert run.summary()["mlflow"]["live_metrics_complete"] is True

    run_stage("evaluate", cfg, run)
    run_stage("register", cfg, run)
    assert run.summary()["registry"]["mlflow_run_id"] == rid  # the same MLflow run, not a second one
    assert len(client.get_metric_history(rid, "train_loss")) == len(logged)  # not logged twice
    assert client.get_run(rid).data.tags["tuneline.run_id"] == run.run_id


def test_unreachable_tracking_server_costs_a_warning_not_the_training(tmp_path, monkeypatch, caplog):
    from tuneline.stages.train import live_mlflow

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        write_config(
            tmp_path,
            CONFIG.format(data=tmp_path / "x.jsonl") + "registry: {tracking_uri: 'http://127.0.0.1:9'}\n",
        )
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    run = RunDir.create(cfg, None)
    assert live_mlflow(cfg, run) == []
    assert "training goes on" in caplog.text


def test_strategies_render_to_trainer_arguments(tmp_path):
    assert strategy_arguments(DistributedConfig(), cuda=False) == {}
    with pytest.raises(ConfigError, match="needs GPUs"):  # accelerate would silently run DDP instead
        strategy_arguments(DistributedConfig(strategy="fsdp"), cuda=False)
    fsdp = strategy_arguments(DistributedConfig(strategy="fsdp", fsdp_cpu_offload=True), cuda=True)
    assert fsdp["fsdp"] == "full_shard auto_wrap offload"
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **fsdp)
    assert args.fsdp_config["version"] == 2 and args.fsdp_config["cpu_offload"] is True
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="deepspeed package is not installed"):
            strategy_arguments(DistributedConfig(strategy="deepspeed"), cuda=True)
    else:  # pragma: no cover - GPU images
        ds = strategy_arguments(DistributedConfig(strategy="deepspeed", deepspeed_stage=3), cuda=True)
        assert ds["deepspeed"]["zero_optimization"]["stage"] == 3
