"""Two tiny runs built once for the registry tests: one whose evaluation gate passed, one whose gate failed.

Both are real runs (prepare → train → evaluate) of the same data; only the gate differs: the passing run
asks that the tuned model's log loss improve on the base model's (it does, by a wide margin), the failing
run asks for an improvement of 100 nats, which no model can show. Registration is left to the tests, each
in its own working directory (so each test has its own default MLflow store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import write_config

RUN = """
run: {{name: tiny, seed: 0, output_dir: "{out}"}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 2.0e-3, batch_size: 8, max_steps: 6, logging_steps: 2,
        save_steps: 100}}
eval:
  task: classification
  max_new_tokens: 2
  batch_size: 16
  bootstrap_resamples: 100
  slices: [shape]
  min_slice_size: 1
  baselines: {{embedding_logreg: false}}
  gate: {{primary: log_loss, against: base, sanity: false, min_improvement: {improvement},
          ci_excludes_zero: false}}
registry: {{enabled: false}}
"""


@dataclass(frozen=True)
class TwoRuns:
    passed: Path  # run directory whose gate passed
    failed: Path  # run directory whose gate failed


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, shapes_dir) -> TwoRuns:
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_all

    root = tmp_path_factory.mktemp("registry-runs")
    before = Path.cwd()
    os.chdir(root)  # the data snapshot lands in root/.tuneline
    try:
        dirs = []
        for label, improvement in (("pass", 0.0), ("fail", 100.0)):
            text = RUN.format(out=root / "runs", data=shapes_dir / "data.jsonl", improvement=improvement)
            path = write_config(root, text, name=f"{label}.yaml")
            run = run_all(load_config(path), path)
            dirs.append(run.path)
    finally:
        os.chdir(before)
    runs = TwoRuns(*dirs)
    assert RunDir(runs.passed).summary()["eval"]["gate"]["passed"] is True
    assert RunDir(runs.failed).summary()["eval"]["gate"]["passed"] is False
    return runs


def mlflow_client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def aliases(client: MlflowClient, name: str = "tiny") -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
