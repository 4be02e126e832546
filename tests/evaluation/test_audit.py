"""Issue 18, memorisation audit: secret-sharer canaries planted in training only, exposure measured."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_RUN, write_config
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.errors import ConfigError
from tuneline.evaluation.audit import exposure, rank_of

AUDIT_RUN = """
run: {{name: {name}, seed: {seed}}}
model: {{base: "tiny:llama"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  max_seq_length: 64
train:
  learning_rate: 1.0e-2
  batch_size: 8
  max_steps: {steps}
  logging_steps: 20
  save_steps: 1000
  privacy: {{dp: {dp}}}
eval: {{max_new_tokens: 3, gate: {{enabled: false}}, audit: {{canaries: 5}}}}
registry: {{enabled: {registry}}}
"""


def _text_data(folder):
    rng = random.Random(0)
    lines = []
    for i in range(40):
        c = rng.choice(["red", "green", "blue", "yellow"])
        messages = [
            {"role": "user", "content": f"Item {i} is painted {c}. What colour is item {i}?"},
            {"role": "assistant", "content": c},
        ]
        lines.append(json.dumps({"id": f"t{i}", "messages": messages}))
    (folder / "text.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "text.jsonl"


def _run(workdir, name, *, steps, dp=None, registry="false", seed=0):
    text = AUDIT_RUN.format(
        name=name, seed=seed, data=_text_data(workdir), steps=steps, dp=dp or "null", registry=registry
    )
    result = CliRunner().invoke(app, ["run", str(write_config(workdir, text, f"{name}.yaml"))])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / name).iterdir()
    return run_dir


def test_exposure_is_log2_of_the_space_over_the_rank():
    assert exposure(1, 99) == pytest.approx(math.log2(100))
    assert exposure(100, 99) == pytest.approx(0.0)
    assert exposure(50, 99) == pytest.approx(1.0)


def test_rank_counts_every_candidate_at_least_as_likely_as_the_secret():
    assert rank_of(np.array([-1.0, -2.0, -3.0])) == 1  # the secret is the most likely
    assert rank_of(np.array([-2.5, -2.0, -3.0, -1.0])) == 3
    # A model that cannot tell candidates apart exposes nothing: ties rank the secret last.
    flat = np.full(100, -4.0)
    assert rank_of(flat) == 100 and exposure(rank_of(flat), 99) == pytest.approx(0.0)


def test_audit_config_needs_room_for_the_candidates(tmp_path):
    base = "model: {base: 'tiny:llama'}\ndata: {sources: [{type: jsonl, path: d.jsonl}]}\n"
    cfg = load_config(write_config(tmp_path, base + "eval: {audit: {canaries: 5}}\n"), env={})
    assert (cfg.eval.audit.canaries, cfg.eval.audit.candidates, cfg.eval.audit.digits) == (5, 99, 6)
    bad = write_config(tmp_path, base + "eval: {audit: {canaries: 5, digits: 4, candidates: 10000}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    assert any("eval.audit" in p and "raise eval.audit.digits" in p for p in info.value.problems)


def test_canaries_train_only_and_reported_in_report_html_and_card(workdir):
    from tuneline.registry import store
    from tuneline.registry.export import card_text

    run_dir = _run(workdir, "audit", steps=4, registry="true")
    info = json.loads((run_dir / "data" / "canaries.json").read_text())
    assert len(info["planted"]) == len(info["controls"]) == 5
    secrets = {c["secret"] for c in info["planted"] + info["controls"]}
    assert len(secrets) == 10 and all(len(s) == 6 and s.isdigit() for s in secrets)
    # Only in training: no split file holds them; the trainer saw them; no metric counts them.
    for split in ("train", "val", "test"):
        assert "canary" not in (run_dir / "data" / f"{split}.jsonl").read_text()
    assert len((run_dir / "data" / "canaries.jsonl").read_text().splitlines()) == 5
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["canaries"] == 5 and sum(summary["data"]["counts"].values()) == 40
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["n"] == summary["data"]["counts"]["test"]
    audit = report["audit"]
    assert audit["canaries"] == 5 and audit["candidates"] == 99
    assert all(1 <= c["rank"] <= 100 for c in audit["planted"] + audit["controls"])
    assert audit["exposure_mean"] == pytest.approx(sum(c["exposure"] for c in audit["planted"]) / 5)
    assert summary["eval"]["audit"]["exposure_mean"] == audit["exposure_mean"]
    assert "Memorisation audit" in (run_dir / "eval" / "report.html").read_text()
    (mv,) = store.client(None).search_model_versions("name = 'audit'")
    assert "## Memorisation audit" in card_text(store.client(None), mv.run_id)


def test_image_task_trains_text_canaries_beside_its_images(workdir, shapes_dir):
    """Image tasks take the same digit-secret canaries (a vision-language model answers text too)."""
    text = TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=3).replace(
        "gate: {enabled: false}}", "gate: {enabled: false}, audit: {canaries: 3, candidates: 19}}"
    )
    result = CliRunner().invoke(app, ["run", str(write_config(workdir, text))])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / "tiny").iterdir()
    audit = json.loads((run_dir / "eval" / "report.json").read_text())["audit"]
    assert audit["canaries"] == 3 and len(audit["controls"]) == 3
    assert all(1 <= c["rank"] <= 20 for c in audit["planted"] + audit["controls"])
    assert "canary" not in (run_dir / "data" / "train.jsonl").read_text()


@pytest.mark.slow
def test_overfit_canaries_are_exposed_and_dp_at_epsilon_1_hides_them(workdir):
    """Acceptance 3. Margins from repeated runs of exactly this setup (seeds 0-4, CPU): without DP, 300
    steps put the 5 secrets at mean exposure 5.84-6.64 bits (6.64 = log2(100), every secret at rank 1 in
    four seeds), controls 0.88-2.06; at epsilon 0.99 the planted mean was 1.02-1.87 bits, like the
    never-trained controls (0.46-1.33). Smallest gap no-DP minus DP: 3.97 bits (seed 3)."""
    plain = json.loads((_run(workdir, "plain", steps=300) / "eval" / "report.json").read_text())["audit"]
    private = _run(workdir, "private", steps=300, dp="{target_epsilon: 1.0}")
    dp = json.loads((private / "eval" / "report.json").read_text())["audit"]
    eps = json.loads((private / "summary.json").read_text())["train"]["privacy"]["dp"]["epsilon"]
    print(f"exposure: no DP {plain['exposure_mean']:.2f}, DP eps {eps:.2f} {dp['exposure_mean']:.2f}")
    assert eps <= 1.0
    assert plain["exposure_mean"] >= 5.0 > plain["control_exposure_mean"]
    assert dp["exposure_mean"] <= plain["exposure_mean"] - 2.5
    assert dp["exposure_mean"] <= 3.0  # near chance: what a never-trained secret shows
