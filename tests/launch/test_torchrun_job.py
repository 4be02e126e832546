"""The torchrun target for real: a 2-node x 1-process job on this machine (two torchrun agents,
--nnodes 2, c10d rendezvous on 127.0.0.1) loses a node mid-training and still ends with the adapter
of an uninterrupted run (one process at the same global batch, trained meanwhile in this process:
DDP over 2 x 4 samples equals 1 x 8 to ~1e-7 here, see tests/training/test_distributed.py).

Node 1 is killed outright (its `tuneline node`, torchrun agent and worker, SIGKILL: a vanished VM).
Node 0's worker loses its peer, and its agent restarts the worker group (--max-restarts) and waits in
the rendezvous; node 1 is started again with the same job id, as a scheduler's retry would
(`tuneline launch ... --set launch.torchrun.node_rank=1`); both resume from the newest valid
checkpoint in the shared run directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import write_config
from tests.training.test_distributed import _free_port
from tuneline.cli import app
from tuneline.launch import procs

CONFIG = """
run: {{name: twonode, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 2.0e-3, batch_size: 4, max_steps: 60, logging_steps: 2,
        save_steps: 10}}
registry: {{enabled: false}}
launch: {{nodes: 2, bucket: "{bucket}", command: train, torchrun: {{max_restarts: 3}}}}
"""


def _launch(config: Path, job: str, port: int, *extra: str) -> str:
    args = ["launch", str(config), "--target", "torchrun", "--job-id", job, "--out", f"spec-{job}"]
    args += ["--set", f"launch.torchrun.master_port={port}", *[x for e in extra for x in ("--set", e)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _steps(run_dir: Path) -> list[int]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()]


def _wait(ref: str, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = procs.status(ref)
        if status["state"] != "RUNNING":
            return status
        time.sleep(0.5)
    procs.cancel(ref)
    raise AssertionError(f"{ref} still running after {timeout} s:\n{procs.logs(ref)[-4000:]}")


def _kill_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return tree


def _train_reference(config: Path) -> Path:
    """The uninterrupted run: one process, batch 8 = the job's 2 nodes x 4."""
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    cfg = load_config(config, ["run.name=reference", "train.batch_size=8", "run.output_dir=reference"])
    rd = RunDir.create(cfg, config)
    run_stage("prepare", cfg, rd)
    run_stage("train", cfg, rd)
    return rd.adapter_dir / "adapter_model.safetensors"


def _launch_victim(workdir: Path):
    """Two-node job "victim" on 60 shapes (48 training records: whole global batches):
    (config, job, rendezvous port, run directory, pid-file folder)."""
    from tuneline_synth.shapes import generate

    data = generate(workdir / "shapes", n=60, seed=7)
    bucket = workdir / "bucket"
    config = write_config(workdir, CONFIG.format(data=data, bucket=bucket))
    port = _free_port()
    job = _launch(config, "victim", port)
    return config, job, port, bucket / "runs" / "twonode" / "victim", bucket / "jobs" / "victim"


def _adapter_difference(reference: Path, run_dir: Path) -> float:
    """Largest absolute difference between the reference adapter and the job's (same tensors required)."""
    ref, got = load_file(reference), load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    return max(float((ref[k] - got[k]).abs().max()) for k in ref)


@pytest.mark.integration
def test_two_node_job_survives_a_killed_node_and_matches_an_uninterrupted_run(workdir):
    config, job, port, run_dir, pid_files = _launch_victim(workdir)
    try:
        reference = _train_reference(config)  # meanwhile, the job prepares and starts training

        # kill node 1 (every process of it) once checkpoint-20 is sealed, well before the end (step 60)
        deadline = time.time() + 180
        while max(_steps(run_dir), default=0) < 24:
            assert time.time() < deadline and procs.status(job)["state"] == "RUNNING", procs.logs(job)[-4000:]
            time.sleep(0.1)
        tree = _kill_tree(int((pid_files / "node-1.pid").read_text()))
        killed_at = max(_steps(run_dir))
        assert len(tree) >= 3, tree  # tuneline node, the torchrun agent, the worker
        assert killed_at < 60
        psutil.wait_procs(tree, timeout=10)
        assert procs.status(job)["nodes"]["1"]["state"] == "LOST"

        # the scheduler's retry: the same job, node 1 only
        assert _launch(config, "victim", port, "launch.torchrun.node_rank=1") == job
        final = _wait(job, 240)
        assert final["state"] == "SUCCEEDED", procs.logs(job)[-6000:]
    finally:
        for pid_file in pid_files.glob("node-*.pid"):
            _kill_tree(int(pid_file.read_text()))

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumes = [m["checkpoint"] for m in metrics if m.get("event") == "resume"]
    assert resumes and int(resumes[-1].split("-")[1]) in range(20, killed_at + 1, 10), (resumes, killed_at)
    after = metrics[[m.get("event") for m in metrics].index("resume") + 1 :]
    assert (
        min(m["step"] for m in after if "loss" in m) == int(resumes[-1].split("-")[1]) + 2
    )  # no step skipped
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"]["world_size"] == 2 and summary["train"]["steps"] == 60

    worst = _adapter_difference(reference, run_dir)
    assert worst <= 1e-6, worst


@pytest.mark.slow
@pytest.mark.integration
def test_losing_node_0_makes_the_other_node_exit_retryable_and_a_relaunch_resumes(workdir):
    """Node 0 hosts the rendezvous: without it node 1 cannot go on, and exits 75 so that its engine
    (Batch: RETRY_TASK on 75) retries it; the relaunched job resumes from the shared checkpoint."""
    config, job, port, run_dir, pid_files = _launch_victim(workdir)
    try:
        reference = _train_reference(config)
        deadline = time.time() + 180
        while max(_steps(run_dir), default=0) < 24:
            assert time.time() < deadline and procs.status(job)["state"] == "RUNNING", procs.logs(job)[-4000:]
            time.sleep(0.1)
        psutil.wait_procs(_kill_tree(int((pid_files / "node-0.pid").read_text())), timeout=10)
        deadline = time.time() + 180
        while procs.status(job)["nodes"]["1"]["state"] == "RUNNING":
            assert time.time() < deadline, procs.logs(job)[-4000:]
            time.sleep(0.5)
        node1 = procs.status(job)["nodes"]["1"]
        assert node1["state"] == "FAILED" and node1["exit_code"] == 75, procs.logs(job)[-4000:]

        assert _launch(config, "victim", _free_port()) == job  # the engine retries both nodes
        final = _wait(job, 240)
        assert final["state"] == "SUCCEEDED", procs.logs(job)[-6000:]
    finally:
        for pid_file in pid_files.glob("node-*.pid"):
            _kill_tree(int(pid_file.read_text()))

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["checkpoint"] for m in metrics if m.get("event") == "resume"]
    assert _adapter_difference(reference, run_dir) <= 1e-6
