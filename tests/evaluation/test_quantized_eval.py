"""serve.quantization: evaluation scores the int8 model that will serve, and the gate judges those scores."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: quant, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 2.0e-3, batch_size: 8, max_steps: 6, save_steps: 100}}
eval:
  task: classification
  batch_size: 32
  max_new_tokens: 2
  bootstrap_resamples: 200
  baselines: {{embedding_logreg: false}}
  gate: {{primary: accuracy, min_improvement: -1.0, ci_excludes_zero: false}}
serve: {{quantization: {quant}}}
registry: {{enabled: false}}
"""


def _probabilities(rd: RunDir):
    rows = [
        r for r in pq.read_table(rd.eval_dir / "predictions.parquet").to_pylist() if r["model"] == "tuned"
    ]
    return [[v for k, v in r.items() if k.startswith("p_")] for r in rows]


@pytest.mark.slow
def test_int8_candidate_is_evaluated_quantized_and_gated_on_it(workdir, shapes_dir):
    plain_cfg = load_config(
        write_config(workdir, CONFIG.format(data=shapes_dir / "data.jsonl", quant="none"))
    )
    int8_cfg = load_config(
        write_config(workdir, CONFIG.format(data=shapes_dir / "data.jsonl", quant="int8"), "int8.yaml")
    )
    plain = RunDir.create(plain_cfg, None)
    for stage in ("prepare", "train", "evaluate"):
        run_stage(stage, plain_cfg, plain)
    quantized = RunDir(workdir / "int8-run")
    shutil.copytree(plain.path, quantized.path)  # the same adapter, evaluated with int8 weights
    run_stage("evaluate", int8_cfg, quantized)

    p_plain, p_int8 = _probabilities(plain), _probabilities(quantized)
    assert len(p_plain) == len(p_int8) and p_plain != p_int8
    assert (
        max(abs(a - b) for ra, rb in zip(p_plain, p_int8, strict=True) for a, b in zip(ra, rb, strict=True))
        > 1e-4
    )
    report = json.loads((quantized.eval_dir / "report.json").read_text())
    assert report["models"]["tuned"]["quantization"] == "int8"
    assert json.loads(plain.eval_file.read_text())["quantization"] == "none"
    # The gate's comparison is the int8 model's metric, recomputed from its own stored probabilities.
    comparison = next(c for c in report["comparisons"] if c["a"] == "base" and c["metric"] == "accuracy")
    assert comparison["value_b"] == report["models"]["tuned"]["metrics"]["accuracy"]
    labels = report["labels"]
    rows = [
        r
        for r in pq.read_table(quantized.eval_dir / "predictions.parquet").to_pylist()
        if r["model"] == "tuned"
    ]
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert abs(accuracy - report["models"]["tuned"]["metrics"]["accuracy"]) < 1e-9 and labels
    assert report["gate"]["primary"] == "accuracy"
