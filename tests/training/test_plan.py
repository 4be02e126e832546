"""`tuneline plan`: the memory model's shape (monotone, checkpointing, methods), accelerators, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneline.cli import app
from tuneline.config import load_config
from tuneline.config.schema import ModelConfig, TrainConfig
from tuneline.errors import ModelError
from tuneline.training.plan import (
    GiB,
    PlanError,
    Workload,
    estimate,
    get_accelerator,
    make_plan,
    max_batch_size,
    model_profile,
)

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart" / "config.yaml"
H100 = get_accelerator("H100-80GB")


@pytest.fixture(scope="module")
def llama_1b(tmp_path_factory):
    """A Llama-3.2-1B-shaped config.json (no weights): the profile is built on the meta device."""
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("llama-1b")
    LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ).save_pretrained(folder)
    return model_profile(ModelConfig(base=str(folder)), TrainConfig())


def work(**changes) -> Workload:
    base = Workload(
        method="lora",
        dtype="bfloat16",
        batch_size=4,
        seq_len=1024,
        answer_tokens=16,
        images_per_sample=0,
        gradient_checkpointing=False,
        answer_only_logits=True,
        gradient_accumulation_steps=1,
        mixed_bf16=False,
        train_vision_tower=False,
        lora_r=8,
    )
    return replace(base, **changes)


def test_profile_counts_the_real_parameters(llama_1b):
    assert 1.2e9 < llama_1b.params < 1.3e9  # Llama 3.2 1B: 1.24B
    assert llama_1b.text.layers == 16 and llama_1b.text.kv_dim == 512 and llama_1b.text.norms_per_layer == 2
    assert llama_1b.lora.trainable == llama_1b.lora.added > 0
    assert llama_1b.dora.trainable > llama_1b.lora.trainable  # + one magnitude per output feature
    assert llama_1b.full.trainable == llama_1b.params and llama_1b.full.added == 0
    assert llama_1b.vision is None and llama_1b.vision_params == 0


def test_meta_profile_matches_the_model_the_train_stage_builds():
    """Counts from the meta device equal those of the real tiny model after prepare_for_training."""
    from tuneline.models.families import get_family
    from tuneline.models.load import load_model, resolve_base
    from tuneline.training.adapters import prepare_for_training

    cfg = load_config(QUICKSTART)
    profile = model_profile(cfg.model, cfg.train)
    real = load_model(resolve_base(cfg.model))
    assert profile.params == sum(p.numel() for p in real.parameters())
    real = prepare_for_training(real, cfg.train, get_family("gemma3"))
    assert profile.lora.trainable == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert profile.vision is not None and profile.vision.image_tokens == 4 and profile.vision_params > 0


def test_more_batch_more_memory(llama_1b):
    peaks = [estimate(llama_1b, work(batch_size=b), H100) for b in (1, 2, 4, 8)]
    assert all(a.peak < b.peak for a, b in zip(peaks, peaks[1:], strict=False))
    assert all(a.activations < b.activations for a, b in zip(peaks, peaks[1:], strict=False))
    assert len({e.weights for e in peaks}) == 1  # weights do not depend on the batch


def test_checkpointing_reduces_activations(llama_1b):
    off = estimate(llama_1b, work(batch_size=8), H100)
    on = estimate(llama_1b, work(batch_size=8, gradient_checkpointing=True), H100)
    assert on.activations < off.activations / 4 and on.peak < off.peak
    assert on.weights == off.weights and on.logits == off.logits


def test_methods_order_qlora_lora_full(llama_1b):
    q, lo, full = (estimate(llama_1b, work(method=m), H100) for m in ("qlora", "lora", "full"))
    assert q.weights < lo.weights <= full.weights
    state = [e.weights + e.adapter + e.optimizer + e.gradients for e in (q, lo, full)]
    assert state[0] < state[1] < state[2]
    assert q.peak < lo.peak < full.peak
    assert full.adapter == 0 and lo.adapter > 0


def test_answer_only_logits_scale_with_answer_tokens_not_the_sequence(llama_1b):
    short, long = (estimate(llama_1b, work(seq_len=s), H100) for s in (512, 2048))
    assert short.logits == long.logits
    more = estimate(llama_1b, work(answer_tokens=64), H100)
    assert more.logits == 4 * short.logits
    full_short, full_long = (
        estimate(llama_1b, work(seq_len=s, answer_only_logits=False), H100) for s in (512, 2048)
    )
    assert short.logits < full_short.logits < full_long.logits


def test_gradients_alive_in_the_forward_pass_only_when_accumulating(llama_1b):
    one = estimate(llama_1b, work(), H100)
    two = estimate(llama_1b, work(gradient_accumulation_steps=2), H100)
    assert one.gradients_in_forward == 0 and two.gradients_in_forward == two.gradients > 0
    assert two.forward_peak - one.forward_peak == two.gradients


def test_largest_batch_respects_the_accelerator(llama_1b):
    w = work(seq_len=2048)
    for name in ("T4-16GB", "L4", "A100-40GB", "H100", "H200-141GB"):
        acc = get_accelerator(name)
        n = max_batch_size(llama_1b, w, acc)
        assert n >= 1
        assert estimate(llama_1b, replace(w, batch_size=n), acc).peak <= acc.memory_bytes
        assert estimate(llama_1b, replace(w, batch_size=n + 1), acc).peak > acc.memory_bytes
    t4, h200 = (max_batch_size(llama_1b, w, get_accelerator(n)) for n in ("T4", "H200"))
    assert t4 < h200


def test_quickstart_plan_on_cpu():
    cfg = load_config(QUICKSTART)
    plan = make_plan(cfg)  # train.cost.accelerator defaults to cpu
    assert plan.accelerator.kind == "cpu" and plan.accelerator.memory_bytes > GiB
    assert plan.fits and plan.max_batch >= cfg.train.batch_size
    assert plan.estimate.vision_activations > 0  # a VLM: the vision tower runs
    assert plan.recommendations[0].startswith(f"batch {cfg.train.batch_size} fits on cpu")
    assert cfg.train.train_vision_tower  # the quickstart adapts its vision tower
    frozen = make_plan(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"train_vision_tower": False})})
    )
    assert plan.estimate.vision_activations > frozen.estimate.vision_activations


def test_recommendations_when_it_does_not_fit(llama_1b):
    cfg = load_config(QUICKSTART, overrides=["train.batch_size=64", "data.max_seq_length=4096"])
    t4 = make_plan(cfg, accelerator="T4", profile=replace(llama_1b, spec="llama-1b"))
    assert not t4.fits
    assert t4.recommendations[0].startswith("batch 64 does not fit on T4-16GB")
    assert any("gradient_checkpointing" in r for r in t4.recommendations)


def test_accelerator_names():
    assert get_accelerator("h100").name == "H100-80GB"
    assert get_accelerator("NVIDIA A100 80GB").name == "A100-80GB"
    assert get_accelerator("a10g-24gb").name == "A10G-24GB"
    with pytest.raises(PlanError, match="unknown accelerator 'H10'") as exc:
        get_accelerator("H10")
    assert "did you mean 'H100-80GB'" in exc.value.hint
    with pytest.raises(PlanError) as ambiguous:
        get_accelerator("A100")
    assert "A100-40GB or A100-80GB" in ambiguous.value.hint


def test_hub_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local hub cache") as exc:
        model_profile(ModelConfig(base="no-such-org/no-such-model"), TrainConfig())
    assert "config.json" in exc.value.hint


def test_cli_plan_table_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["plan", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    for word in ("weights", "adapter", "optimizer state", "gradients", "activations", "logits", "framework"):
        assert word in result.stdout
    assert "largest micro-batch" in result.stdout and "fits on cpu" in result.stdout

    result = runner.invoke(app, ["plan", str(QUICKSTART), "--json", "--accelerator", "L4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accelerator"]["name"] == "L4-24GB"
    assert {
        "weights",
        "adapter",
        "optimizer",
        "gradients",
        "activations",
        "logits",
        "overhead",
        "peak",
    } <= set(data["estimate"])
    assert (
        data["gradient_checkpointing"]["on"]["activations"]
        < data["gradient_checkpointing"]["off"]["activations"]
    )
    assert data["max_batch_size"] >= 1 and data["fits"] is True and data["recommendations"]
    assert data["model"]["params"] > 0 and data["workload"]["method"] == "lora"


def test_cli_unknown_accelerator_exits_2_with_a_suggestion():
    result = CliRunner().invoke(app, ["plan", str(QUICKSTART), "--accelerator", "H10"])
    assert result.exit_code == 2
    assert "unknown accelerator 'H10'" in result.output and "did you mean 'H100-80GB'" in result.output


@pytest.mark.slow
@pytest.mark.integration
def test_estimate_within_25_percent_of_measured_peak_rss():
    """One real measurement: a ~20M Llama, LoRA, two Trainer steps in a fresh process (bench_plan.py)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_plan.py"), "--only", "llama-20m-lora"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "0 outside" in proc.stdout


def test_plan_refuses_a_sequence_classifier_instead_of_guessing():
    with pytest.raises(ModelError, match="sequence classifier") as refused:
        model_profile(ModelConfig(base="tiny:bert"), TrainConfig())
    assert "max_steps" in refused.value.hint
