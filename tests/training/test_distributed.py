"""Two CPU processes under torchrun (gloo) train like one process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_config

CONFIG = """
run: {{name: dist, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 2.0e-3, batch_size: 8, max_steps: 6, logging_steps: 1,
        save_steps: 3}}
registry: {{enabled: false}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tuneline(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tuneline")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [str(exe), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )


def _run_dir(workdir: Path, name: str) -> Path:
    (path,) = (workdir / "runs" / name).iterdir()
    return path


@pytest.mark.integration
def test_two_process_torchrun_matches_one_process(workdir):
    from tuneline_synth.shapes import generate

    data = generate(workdir / "shapes", n=60, seed=7)
    cfg = write_config(workdir, CONFIG.format(data=data))
    for name in ("single", "ddp"):
        done = _tuneline(workdir, "prepare", str(cfg), "--set", f"run.name={name}")
        assert done.returncode == 0, done.stderr
    train_count = json.loads((_run_dir(workdir, "single") / "summary.json").read_text())["data"]["counts"][
        "train"
    ]
    assert train_count % 8 == 0  # same global batches only when nothing is padded out

    single = _tuneline(workdir, "train", str(cfg), "--set", "run.name=single")
    assert single.returncode == 0, single.stderr
    ddp = _tuneline(
        workdir,
        "train",
        str(cfg),
        "--set",
        "run.name=ddp",
        "--set",
        "train.batch_size=4",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "torchrun" in ddp.stderr

    def losses(name: str) -> list[float]:
        lines = (_run_dir(workdir, name) / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines if '"loss"' in x]

    one, two = losses("single"), losses("ddp")
    assert len(one) == len(two) == 6  # rank 0 alone writes the metrics
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(one, two, strict=True)), (one, two)
    summary = json.loads((_run_dir(workdir, "ddp") / "summary.json").read_text())
    assert summary["train"]["world_size"] == 2 and summary["stages"] == ["prepare", "train"]
    a = load_file(_run_dir(workdir, "single") / "adapter" / "adapter_model.safetensors")
    b = load_file(_run_dir(workdir, "ddp") / "adapter" / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4
    # checkpoints of a distributed run are sealed too, with every rank's RNG state inside
    manifest = json.loads(
        (_run_dir(workdir, "ddp") / "checkpoints" / "checkpoint-6" / "tuneline-manifest.json").read_text()
    )
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest["files"])
    assert torch.distributed.is_available()
