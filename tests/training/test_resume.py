"""Training survives SIGTERM, kill -9 and a corrupted checkpoint, and ends where an uninterrupted run ends.

Real subprocesses of the `tuneline` console script, as a scheduler would run them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_config

CONFIG = """
run: {{name: resume, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train:
  train_projector: true
  learning_rate: 1.0e-3
  batch_size: 4
  max_steps: 240
  logging_steps: 5
  save_steps: 30
  save_total_limit: 3
eval: {{max_samples: 4, compare_base: false, max_new_tokens: 2, gate: {{enabled: false}}}}
registry: {{enabled: false}}
"""


def _tuneline(workdir: Path, *args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("tuneline")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [str(exe), *args], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_step(workdir: Path, name: str, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for metrics in (workdir / "runs" / name).glob("*/metrics.jsonl"):
            steps = [
                json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()
            ]
            if steps and max(steps) >= step:
                return
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _adapter(workdir: Path, name: str) -> dict[str, torch.Tensor]:
    (run_dir,) = (workdir / "runs" / name).iterdir()
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.integration
def test_sigterm_kill9_and_corrupt_checkpoint_end_like_an_uninterrupted_run(workdir, shapes_dir):
    cfg = write_config(workdir, CONFIG.format(data=shapes_dir / "data.jsonl"))

    reference = _tuneline(workdir, "run", str(cfg), "--set", "run.name=reference")
    assert reference.wait(timeout=300) == 0, reference.stdout.read()

    # 1. SIGTERM mid-training: a checkpoint at the step boundary, exit code 75.
    victim = _tuneline(workdir, "run", str(cfg))
    _wait_for_step(workdir, "resume", 70, victim)
    victim.send_signal(signal.SIGTERM)
    out = victim.communicate(timeout=120)[0]
    assert victim.returncode == 75, out
    assert "run the same command again to resume" in out
    (run_dir,) = (workdir / "runs" / "resume").iterdir()
    assert "TrainingInterrupted" in (run_dir / "FAILED").read_text()
    stopped = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert (
        stopped >= 70
        and (run_dir / "checkpoints" / f"checkpoint-{stopped}" / "tuneline-manifest.json").is_file()
    )

    # 2. The same command resumes; kill -9 at a later step.
    victim = _tuneline(workdir, "run", str(cfg))
    _wait_for_step(workdir, "resume", stopped + 60, victim)
    victim.kill()
    victim.wait(timeout=60)

    # 3. Corrupt the newest sealed checkpoint: it must be skipped, not loaded.
    sealed = sorted(
        (
            p
            for p in (run_dir / "checkpoints").glob("checkpoint-*")
            if (p / "tuneline-manifest.json").exists()
        ),
        key=lambda p: int(p.name.split("-")[1]),
    )
    newest = sealed[-1] / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    victim = _tuneline(workdir, "run", str(cfg))
    out = victim.communicate(timeout=300)[0]
    assert victim.returncode == 0, out
    assert f"skipping {sealed[-1].name}" in (run_dir / "run.log").read_text()
    assert len(list((workdir / "runs" / "resume").iterdir())) == 1  # resumed, never restarted elsewhere
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumes = [m["checkpoint"] for m in metrics if m.get("event") == "resume"]
    assert resumes == [f"checkpoint-{stopped}", sealed[-2].name]  # really resumed, from the right ones
    after_last = metrics[[i for i, m in enumerate(metrics) if m.get("event") == "resume"][-1] + 1 :]
    assert min(m["step"] for m in after_last if "step" in m) > int(sealed[-2].name.split("-")[1])

    # 4. Same adapter as the run that was never interrupted.
    ref, got = _adapter(workdir, "reference"), _adapter(workdir, "resume")
    assert ref.keys() == got.keys()
    worst = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    assert worst <= 1e-6, worst
