"""The local target end to end: launch, follow, cancel (SIGTERM -> checkpoint -> exit 75), relaunch the
same job id, which resumes from the checkpoint in the bucket and completes."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.cli import app
from tuneline.launch import procs

CONFIG = """
run: {{name: localjob, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, batch_size: 4, max_steps: 400, logging_steps: 2, save_steps: 10}}
registry: {{enabled: false}}
launch: {{bucket: "{bucket}", command: train}}
"""


def _wait(ref: str, timeout: float) -> dict:
    deadline = time.time() + timeout
    while (status := procs.status(ref))["state"] == "RUNNING":
        assert time.time() < deadline, procs.logs(ref)[-3000:]
        time.sleep(0.3)
    return status


@pytest.mark.slow
@pytest.mark.integration
def test_local_job_cancel_then_relaunch_resumes(workdir, shapes_dir):
    bucket = workdir / "bucket"
    config = write_config(workdir, CONFIG.format(data=shapes_dir / "data.jsonl", bucket=bucket))
    runner = CliRunner()
    launched = runner.invoke(app, ["launch", str(config), "--target", "local", "--job-id", "j1"])
    assert launched.exit_code == 0, launched.output
    ref = launched.stdout.strip()
    assert ref == f"local:{bucket / 'jobs' / 'j1'}"
    metrics = bucket / "runs" / "localjob" / "j1" / "metrics.jsonl"
    deadline = time.time() + 180
    while not (metrics.is_file() and any('"step": 12' in line for line in metrics.read_text().splitlines())):
        assert time.time() < deadline and procs.status(ref)["state"] == "RUNNING", procs.logs(ref)[-3000:]
        time.sleep(0.1)
    assert json.loads(runner.invoke(app, ["jobs", "status", ref]).stdout)["state"] == "RUNNING"
    cancel = runner.invoke(app, ["jobs", "cancel", ref])
    assert "sent SIGTERM to 1" in cancel.stdout
    stopped = _wait(ref, 120)
    assert stopped["state"] == "FAILED" and stopped["nodes"]["0"]["exit_code"] == 75
    assert "run the same command again to resume" in runner.invoke(app, ["jobs", "logs", ref]).stdout

    again = runner.invoke(app, ["launch", str(config), "--target", "local", "--job-id", "j1"])
    assert again.exit_code == 0 and again.stdout.strip() == ref
    assert _wait(ref, 300)["state"] == "SUCCEEDED", procs.logs(ref)[-3000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["checkpoint"] for r in records if r.get("event") == "resume"]
    summary = json.loads((bucket / "runs" / "localjob" / "j1" / "summary.json").read_text())
    assert summary["stages"] == ["prepare", "train"] and summary["train"]["steps"] == 400
