"""skypilot: a SkyPilot task YAML, rendered without importing SkyPilot (it conflicts with our pins).

    tuneline launch CONFIG --target skypilot        (then: sky jobs launch launch/<job-id>/skypilot.yaml)

``resources`` carry the accelerators (``A100:1``), ``use_spot`` and ``job_recovery`` (a managed job is
relaunched after a preemption, and on errors up to launch.max_retries times); ``num_nodes`` nodes
each run ``tuneline node`` with the rank from SKYPILOT_NODE_RANK and the master from the first line of
SKYPILOT_NODE_IPS, which starts torchrun; the bucket is a ``file_mounts`` MOUNT, so a relaunched job
resumes from its newest valid checkpoint. Secrets are listed by name under ``secrets`` and passed
from your shell (``--secret NAME``). Validate the YAML with ``sky.Task.from_yaml`` in a separate
environment that has SkyPilot (see the README).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

from tuneline.errors import TunelineError
from tuneline.launch.spec import LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "skypilot"


def build_task(spec: LaunchSpec) -> dict:
    lc = spec.launch
    resources: dict = {}
    if lc.skypilot.cloud:
        resources["infra"] = "/".join(p for p in (lc.skypilot.cloud, lc.region, lc.zone) if p)
    if spec.gpu is not None:
        resources["accelerators"] = f"{spec.gpu.sky}:{spec.gpus_per_node}"
    else:
        resources["cpus"] = "8+"
    if lc.machine_type:
        resources["instance_type"] = lc.machine_type
    resources["use_spot"] = lc.spot
    resources["disk_size"] = lc.skypilot.disk_size
    if lc.image:
        resources["image_id"] = f"docker:{lc.image}"
    resources["ports"] = lc.torchrun.master_port
    resources["job_recovery"] = {"strategy": "FAILOVER", "max_restarts_on_errors": lc.max_retries}
    args = spec.node_args(node_rank="__RANK__", master_addr="__MASTER__")
    command = shlex.join(args).replace("__RANK__", '"${SKYPILOT_NODE_RANK}"')
    command = command.replace("__MASTER__", '"${MASTER_ADDR}"')
    run = (
        "set -e\n"
        'MASTER_ADDR=$(echo "${SKYPILOT_NODE_IPS}" | head -n1)\n'
        "# tuneline node starts torchrun: --nnodes, --node-rank and the c10d rendezvous on MASTER_ADDR\n"
        f"exec {command}\n"
    )
    task: dict = {"name": spec.job_id, "num_nodes": spec.nodes, "resources": resources, "envs": spec.env()}
    if lc.secrets:
        task["secrets"] = {name: None for name in sorted(lc.secrets)}
    if spec.bucket.is_local:
        task["file_mounts"] = {spec.mount: spec.bucket.path}
    else:
        task["file_mounts"] = {spec.mount: {"source": spec.bucket.url, "mode": "MOUNT"}}
    if not lc.image:
        task["workdir"] = "."
        task["setup"] = "pip install -c constraints.txt -e .\n"
    task["run"] = run
    return task


def render(spec: LaunchSpec) -> Rendered:
    task = build_task(spec)
    secrets = " ".join(f"--secret {n}" for n in sorted(spec.launch.secrets))
    notes = [f"submit with: sky jobs launch -n {spec.job_id} {secrets} <the YAML>".replace("  ", " ")]
    notes.append("skypilot: launch.max_run_time is not enforced (SkyPilot has no run-time limit)")
    return Rendered(kind="sky.Task", documents=[task], objects=[task], fmt="yaml", notes=notes)


def _sky() -> str:
    sky = shutil.which("sky")
    if sky is None:
        raise TunelineError(
            "the sky command is not installed",
            hint="SkyPilot conflicts with tuneline's pins: install it in its own environment "
            "(pipx install skypilot) and run `sky jobs launch` on the written YAML",
        )
    return sky


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.yaml"
        path.write_text(rendered.text())
        argv = [_sky(), "jobs", "launch", "-y", "-d", "-n", spec.job_id]
        for name in sorted(spec.launch.secrets):
            argv += ["--secret", name]
        done = subprocess.run([*argv, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise TunelineError(f"sky jobs launch failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return Submitted(f"{PREFIX}:{spec.job_id}", "run `sky dashboard` for the SkyPilot console")


def _run(*args: str) -> str:
    done = subprocess.run([_sky(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise TunelineError(f"sky {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def status(ref: str) -> dict:
    name = ref.split(":", 1)[1]
    return {"job": ref, "state": _run("jobs", "queue", "--all").strip(), "name": name}


def logs(ref: str) -> str:
    return _run("jobs", "logs", "-n", ref.split(":", 1)[1], "--no-follow")


def cancel(ref: str) -> str:
    return _run("jobs", "cancel", "-y", "-n", ref.split(":", 1)[1])
