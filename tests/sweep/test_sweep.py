"""tuneline sweep on a tiny image task: trials, frontier, resume after SIGTERM / kill -9, two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_config
from tuneline.config import load_config

SWEEP = """
run: {{name: sw, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train:
  train_projector: true
  learning_rate: 2.0e-3
  batch_size: 4
  max_steps: {steps}
  logging_steps: 2
  save_steps: 2
  cost: {{price_per_hour: 0.10}}
eval:
  task: classification
  max_new_tokens: 3
  batch_size: 16
  compare_base: false
  baselines: {{embedding_logreg: false}}
  gate: {{enabled: false}}
sweep:
  candidates:
{candidates}
  metric: accuracy
  tolerance: 0.05
  heartbeat_s: 1
"""
SIZES = ["s", "m", "l"]


def _config(workdir: Path, shapes_dir: Path, *, steps: int = 4, n: int = 2) -> Path:
    cands = "\n".join(
        f'    - {{name: {s}-lora, overrides: {{model.base: "tiny:gemma3@{s}"}}}}' for s in SIZES[:n]
    )
    text = SWEEP.format(data=shapes_dir / "data.jsonl", steps=steps, candidates=cands)
    return write_config(workdir, text)


def _trials(cfg):
    import optuna

    from tuneline.sweep.study import KEY_ATTR, storage_for, study_name

    study = optuna.load_study(study_name=study_name(cfg), storage=storage_for(cfg))
    return [(t.user_attrs.get(KEY_ATTR), t.state.name) for t in study.get_trials()]


def _tuneline(*args: str, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("tuneline")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [str(exe), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
@pytest.mark.integration
def test_sweep_writes_frontier_continues_without_rerunning_and_promotes_through_the_gate(workdir, shapes_dir):
    import mlflow

    from tuneline.errors import GateFailed
    from tuneline.stages import sweep

    path = _config(workdir, shapes_dir)
    cfg = load_config(path)
    first = sweep.run(cfg, path)
    root = first.root
    frontier = json.loads((root / "frontier.json").read_text())
    assert first.ran == ["s-lora", "m-lora"] and frontier == first.frontier
    assert frontier["recommended"] in {"s-lora", "m-lora"} and frontier["pareto"]
    assert (
        "Recommendation" in (root / "report.html").read_text()
        and "<svg" in (root / "report.html").read_text()
    )
    # Every trial saw the sweep's one prepared test split.
    test_split = (root / "prepared" / "data" / "test.jsonl").read_text()
    for key in ("s-lora", "m-lora"):
        assert (root / "trials" / key / "data" / "test.jsonl").read_text() == test_split
    # Nested MLflow runs under the sweep's parent run.
    client = mlflow.MlflowClient(f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    parents = [r for r in runs if "tuneline.sweep" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and sorted(r.data.tags["tuneline.trial"] for r in children) == [
        "m-lora",
        "s-lora",
    ]
    assert all("sweep_accuracy" in r.data.metrics for r in children)
    # Run again: nothing is rerun, the same recommendation comes out (same seed, same records).
    again = sweep.run(cfg, path)
    assert again.ran == [] and again.frontier["recommended"] == frontier["recommended"]
    assert again.frontier["trials"] == frontier["trials"]
    # promote: registered as a new version, then the usual gate (disabled here: no gate result, refused).
    with pytest.raises(GateFailed, match="no gate result"):
        sweep.promote(cfg)
    versions = client.search_model_versions("name = 'sw'")
    assert len(versions) == 1 and versions[0].tags["tuneline.run_id"] == frontier["recommended"]


def _wait_for(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_then_kill_9_and_rerun_continue_the_study(workdir, shapes_dir):
    path = _config(workdir, shapes_dir, steps=40)
    cfg = load_config(path)
    trials = workdir / "runs" / "sw" / "sweep" / "sw-sweep" / "trials"

    # SIGTERM during the first trial's training: a checkpoint is saved, exit 75, the trial queued again.
    proc = _tuneline("sweep", str(path), cwd=workdir)
    _wait_for(lambda: list((trials / "s-lora" / "checkpoints").glob("checkpoint-4")), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 75, proc.stdout.read()
    # kill -9 during the resumed trial or the next one: nothing saved but the checkpoints already there.
    proc = _tuneline("sweep", str(path), cwd=workdir)
    _wait_for(lambda: list((trials / "m-lora" / "checkpoints").glob("checkpoint-4")), proc)
    proc.kill()
    proc.wait(30)
    assert ("m-lora", "RUNNING") in _trials(cfg)
    # Rerun: the killed trial's heartbeat goes stale, it is queued again and resumes from its checkpoint.
    proc = _tuneline("sweep", str(path), cwd=workdir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    states = _trials(cfg)
    assert states.count(("s-lora", "COMPLETE")) == 1 and states.count(("m-lora", "COMPLETE")) == 1
    for key in ("s-lora", "m-lora"):
        events = [json.loads(line) for line in (trials / key / "metrics.jsonl").read_text().splitlines()]
        resumes = [e for e in events if e.get("event") == "resume"]
        assert resumes and resumes[0]["checkpoint"].startswith("checkpoint-")
        assert json.loads((trials / key / "summary.json").read_text())["train"]["steps"] == 40
    assert json.loads((trials.parent / "frontier.json").read_text())["recommended"]


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_share_one_study_and_run_no_trial_twice(workdir, shapes_dir):
    path = _config(workdir, shapes_dir, n=3)
    cfg = load_config(path)
    from tuneline.stages.sweep import ensure_prepared, sweep_dir

    ensure_prepared(load_config(path), path, sweep_dir(cfg), None)  # both workers then start trials at once
    workers = [_tuneline("sweep", str(path), "--worker", cwd=workdir) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [int(o.split("ran ")[1].split()[0]) for o in outputs]
    assert sum(ran) == 3 and all(n >= 1 for n in ran), outputs
    assert sorted(_trials(cfg)) == [("l-lora", "COMPLETE"), ("m-lora", "COMPLETE"), ("s-lora", "COMPLETE")]
    for key in ("s-lora", "m-lora", "l-lora"):
        events = (sweep_dir(cfg) / "trials" / key / "metrics.jsonl").read_text()
        assert '"resume"' not in events
    final = _tuneline("sweep", str(path), cwd=workdir)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert json.loads((sweep_dir(cfg) / "frontier.json").read_text())["recommended"] in {
        "s-lora",
        "m-lora",
        "l-lora",
    }
