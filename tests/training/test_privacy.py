"""Issue 18, differentially private training through Opacus (train.privacy.dp)."""

from __future__ import annotations

import json
import signal  # noqa: F401 - kill -9 below is Popen.kill

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.errors import ConfigError, ModelError
from tuneline.training.privacy import PoissonBatchSampler, check_layers, spent

DP_RUN = """
run: {{name: {name}, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train:
  train_projector: {projector}
  learning_rate: 2.0e-3
  batch_size: 8
  max_steps: {steps}
  logging_steps: 2
  save_steps: {save}
  privacy: {{dp: {dp}}}
eval: {{max_samples: 4, max_new_tokens: 2, gate: {gate}}}
registry: {{enabled: {registry}}}
"""


def _config(
    workdir,
    shapes_dir,
    *,
    name="dp",
    projector="false",
    steps=6,
    save=3,
    dp="{noise_multiplier: 1.0}",
    gate="{enabled: false}",
    registry="false",
):
    text = DP_RUN.format(
        name=name,
        data=shapes_dir / "data.jsonl",
        projector=projector,
        steps=steps,
        save=save,
        dp=dp,
        gate=gate,
        registry=registry,
    )
    return write_config(workdir, text, f"{name}.yaml")


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    q, delta = 0.2, 1e-3
    by_steps = [spent(1.0, q, n, delta) for n in (1, 10, 100, 1000)]
    assert by_steps == sorted(by_steps) and by_steps[0] < by_steps[-1] / 10
    by_noise = [spent(sigma, q, 100, delta) for sigma in (0.6, 1.0, 2.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True) and by_noise[-1] < by_noise[0] / 10
    assert spent(1.0, q, 0, delta) == 0.0


def test_target_epsilon_is_met_at_the_planned_step(shapes_dir, workdir):
    from tuneline.models.load import load_model, resolve_base
    from tuneline.training.adapters import prepare_for_training
    from tuneline.training.privacy import DpSession

    cfg = load_config(_config(workdir, shapes_dir, steps=40, dp="{target_epsilon: 3.0}"), [])
    base = resolve_base(cfg.model)
    model = prepare_for_training(load_model(base), cfg.train, base.family)
    session = DpSession(cfg, model, 38)
    # Planned for the 40 steps and the loader's prefetched draw: the recorded epsilon stays within budget.
    assert spent(session.noise_multiplier, session.sample_rate, 41, session.delta) <= 3.0
    assert spent(session.noise_multiplier, session.sample_rate, 40, session.delta) > 2.8
    assert session.delta == pytest.approx(1 / 38)
    # Per-sample gradients only on the trainable parameters (LoRA), none on the frozen base weights.
    hooked = {name for name, p in model.named_parameters() if p.requires_grad}
    assert hooked and all("lora_" in name for name in hooked)


def test_dp_config_rules():
    from tuneline.config.schema import TrainConfig

    with pytest.raises(ValueError, match="exactly one of target_epsilon and noise_multiplier"):
        TrainConfig(privacy={"dp": {"target_epsilon": 3.0, "noise_multiplier": 1.0}})
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1"):
        TrainConfig(gradient_accumulation_steps=2, privacy={"dp": {"noise_multiplier": 1.0}})
    assert ConfigError  # the loader reports these as config problems (exit 2)


def test_poisson_sampler_is_a_function_of_seed_and_epoch():
    a, b = PoissonBatchSampler(40, 0.2, seed=1), PoissonBatchSampler(40, 0.2, seed=1)
    first = list(a)
    assert first == list(b) and len(a) == 5 and a.drawn == 5
    sizes = [len(x) for x in first]
    assert len(set(sizes)) > 1  # Poisson: the batch size varies
    a.set_epoch(1)
    assert list(a) != first and a.drawn == 10


def test_unsupported_trainable_layer_fails_at_start_naming_it(shapes_dir, workdir):
    from tuneline.config.schema import TrainConfig
    from tuneline.models.load import load_model, resolve_base
    from tuneline.training.adapters import prepare_for_training

    cfg = load_config(_config(workdir, shapes_dir, projector="true"), [])
    base = resolve_base(cfg.model)
    model = prepare_for_training(load_model(base), TrainConfig(train_projector=True), base.family)
    with pytest.raises(ModelError, match=r"multi_modal_projector.*Gemma3MultiModalProjector") as caught:
        check_layers(model)
    assert "train.train_projector: false" in caught.value.hint

    # Through the CLI: the train stage fails before any step, nothing trained.
    runner = CliRunner()
    assert runner.invoke(app, ["prepare", str(workdir / "dp.yaml")]).exit_code == 0
    result = runner.invoke(app, ["train", str(workdir / "dp.yaml")])
    assert result.exit_code == ModelError.exit_code, result.output
    assert "multi_modal_projector" in result.output and "train.train_projector: false" in result.output
    (run_dir,) = (workdir / "runs" / "dp").iterdir()
    assert not (run_dir / "adapter").exists() and not list((run_dir / "checkpoints").glob("checkpoint-*"))


def test_dp_run_records_the_epsilon_the_accountant_reports(shapes_dir, workdir):
    from safetensors.torch import load_file

    runner = CliRunner()
    adapters = {}
    for name, dp in (
        ("dp", "{noise_multiplier: 1.0, max_grad_norm: 0.5}"),
        ("dp2", "{noise_multiplier: 4.0}"),
    ):
        result = runner.invoke(app, ["run", str(_config(workdir, shapes_dir, name=name, dp=dp))])
        assert result.exit_code == 0, result.output
        (run_dir,) = (workdir / "runs" / name).iterdir()
        adapters[name] = load_file(run_dir / "adapter" / "adapter_model.safetensors")
        summary = json.loads((run_dir / "summary.json").read_text())
        rec = summary["train"]["privacy"]["dp"]
        assert rec["sampling"] == "poisson" and rec["accountant"] == "rdp"
        assert rec["steps"] >= summary["train"]["steps"] == 6
        assert rec["epsilon"] == pytest.approx(
            spent(rec["noise_multiplier"], rec["sample_rate"], rec["steps"], rec["delta"])
        )
        logged = [
            m["dp_epsilon"]
            for m in (json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines())
            if "dp_epsilon" in m
        ]
        assert logged == sorted(logged) and logged[-1] == pytest.approx(rec["epsilon"], abs=1e-5)
    eps = {
        n: json.loads(next((workdir / "runs" / n).glob("*/summary.json")).read_text())["train"]["privacy"][
            "dp"
        ]["epsilon"]
        for n in adapters
    }
    assert eps["dp2"] < eps["dp"]  # more noise, less spent
    assert any(not torch.equal(adapters["dp"][k], adapters["dp2"][k]) for k in adapters["dp"])


def test_epsilon_reaches_tags_card_mlflow_and_the_gate(shapes_dir, workdir):
    """The registered version carries epsilon (tags, card, MLflow metric); a gate guard bounds it."""
    from tuneline.registry import store
    from tuneline.registry.export import card_text

    guard = (
        "{enabled: true, min_improvement: -1000.0, ci_excludes_zero: false, "
        "guards: [{metric: dp_epsilon, max: 0.5}]}"
    )
    result = CliRunner().invoke(app, ["run", str(_config(workdir, shapes_dir, gate=guard, registry="true"))])
    (run_dir,) = (workdir / "runs" / "dp").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    dp = summary["train"]["privacy"]["dp"]
    assert dp["epsilon"] > 0.5
    assert result.exit_code == 7, result.output  # GateFailed: epsilon above the budget
    (rule,) = [r for r in summary["eval"]["gate"]["rules"] if "dp_epsilon" in r["rule"]]
    assert rule["passed"] is False and rule["value"] == pytest.approx(dp["epsilon"])
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["privacy"]["dp"]["epsilon"] == dp["epsilon"]

    client = store.client(None)
    (mv,) = client.search_model_versions("name = 'dp'")
    assert float(mv.tags["tuneline.dp_epsilon"]) == pytest.approx(dp["epsilon"], rel=1e-5)
    assert float(mv.tags["tuneline.dp_delta"]) == pytest.approx(dp["delta"], rel=1e-5)
    assert client.get_run(mv.run_id).data.metrics["dp_epsilon"] == pytest.approx(dp["epsilon"])
    assert f"ε = {dp['epsilon']:.3g}" in card_text(client, mv.run_id)

    # Within budget, the same guard passes.
    config = _config(workdir, shapes_dir, name="dpok", gate=guard.replace("max: 0.5", "max: 100.0"))
    CliRunner().invoke(app, ["run", str(config)])
    summary = json.loads(next((workdir / "runs" / "dpok").glob("*/summary.json")).read_text())
    assert [r["passed"] for r in summary["eval"]["gate"]["rules"] if "dp_epsilon" in r["rule"]] == [True]


@pytest.mark.slow
@pytest.mark.integration
def test_kill9_and_resume_spends_the_same_epsilon_and_ends_with_the_same_adapter(shapes_dir, workdir):
    from tests.training.test_resume import _adapter, _tuneline, _wait_for_step

    ref_cfg = _config(workdir, shapes_dir, name="dpref", steps=30, save=5)
    cfg = _config(workdir, shapes_dir, name="dpkill", steps=30, save=5)
    reference = _tuneline(workdir, "run", str(ref_cfg))
    assert reference.wait(timeout=600) == 0, reference.stdout.read()

    victim = _tuneline(workdir, "run", str(cfg))
    _wait_for_step(workdir, "dpkill", 14, victim, timeout=300)
    victim.kill()  # SIGKILL: nothing saved on the way out
    victim.wait(timeout=60)
    (run_dir,) = (workdir / "runs" / "dpkill").iterdir()
    assert not (run_dir / "adapter").exists()
    resumed = _tuneline(workdir, "run", str(cfg))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("event") == "resume" for m in metrics)

    ref, got = _adapter(workdir, "dpref"), _adapter(workdir, "dpkill")
    assert ref.keys() == got.keys()
    assert max(float((ref[k] - got[k]).abs().max()) for k in ref) <= 1e-6
    eps = [
        json.loads(next((workdir / "runs" / n).glob("*/summary.json")).read_text())["train"]["privacy"]["dp"]
        for n in ("dpref", "dpkill")
    ]
    assert eps[0]["steps"] == eps[1]["steps"] and eps[0]["epsilon"] == eps[1]["epsilon"]


def test_dp_run_on_the_tiny_text_model(workdir):
    """The tiny text model (tiny:llama, text-only chat records) trains under DP and records epsilon."""
    import random

    rng = random.Random(0)
    colours = ["red", "green", "blue", "yellow"]
    lines = []
    for i in range(40):
        c = rng.choice(colours)
        messages = [
            {"role": "user", "content": f"Item {i} is painted {c}. What colour is item {i}?"},
            {"role": "assistant", "content": c},
        ]
        lines.append(json.dumps({"id": f"t{i}", "messages": messages}))
    (workdir / "text.jsonl").write_text("\n".join(lines) + "\n")
    text = DP_RUN.format(
        name="dptext",
        data=workdir / "text.jsonl",
        projector="false",
        steps=4,
        save=2,
        dp="{target_epsilon: 8.0, max_grad_norm: 1.0}",
        gate="{enabled: false}",
        registry="false",
    ).replace('"tiny:gemma3"', '"tiny:llama"')
    result = CliRunner().invoke(app, ["run", str(write_config(workdir, text, "dptext.yaml"))])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((workdir / "runs" / "dptext").glob("*/summary.json")).read_text())
    dp = summary["train"]["privacy"]["dp"]
    assert dp["target_epsilon"] == 8.0 and 0 < dp["epsilon"] <= 8.0 and summary["train"]["steps"] == 4
