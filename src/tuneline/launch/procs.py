"""Local and torchrun jobs: node processes in the background, tracked by pid files in the bucket.

BUCKET/jobs/<job-id>/node-<rank>.pid   .log   .exit (written when the node ends)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tuneline.errors import TunelineError
from tuneline.launch.spec import LaunchSpec


def start(spec: LaunchSpec, nodes: list[dict]) -> Path:
    missing = [name for name in spec.launch.secrets if name not in os.environ]
    if missing:
        raise TunelineError(
            f"launch.secrets {', '.join(missing)} not set in this shell",
            hint=f"{spec.target} passes secrets from the launching shell's environment; export them first",
        )
    folder = Path(spec.bucket.path) / "jobs" / spec.job_id
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for node in nodes:
        rank = node["node_rank"]
        (folder / f"node-{rank}.exit").unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tuneline.cli", *node["command"][1:]]
        argv += ["--status-file", str(folder / f"node-{rank}.exit")]
        with (folder / f"node-{rank}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (folder / f"node-{rank}.pid").write_text(f"{proc.pid}\n")
    (folder / "job.json").write_text(
        json.dumps({"target": spec.target, "nodes": [n["node_rank"] for n in nodes]})
    )
    return folder


def _folder(ref: str) -> Path:
    folder = Path(ref.split(":", 1)[1])
    if not (folder / "job.json").is_file():
        raise TunelineError(f"no local job at {folder}", hint="pass the id `tuneline launch` printed")
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, not yet reaped) has ended
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def status(ref: str) -> dict:
    folder = _folder(ref)
    nodes = {}
    for pid_file in sorted(folder.glob("node-*.pid")):
        rank = pid_file.stem.split("-")[1]
        exit_file = folder / f"node-{rank}.exit"
        pid = int(pid_file.read_text())
        if exit_file.is_file():
            code = int(exit_file.read_text())
            nodes[rank] = {"pid": pid, "state": "SUCCEEDED" if code == 0 else "FAILED", "exit_code": code}
        elif _alive(pid):
            nodes[rank] = {"pid": pid, "state": "RUNNING"}
        else:
            nodes[rank] = {"pid": pid, "state": "LOST"}
    states = {n["state"] for n in nodes.values()}
    overall: str
    for state in ("FAILED", "LOST", "RUNNING"):
        if state in states:
            overall = state
            break
    else:
        overall = "SUCCEEDED"
    return {"job": ref, "state": overall, "nodes": nodes}


def logs(ref: str) -> str:
    folder = _folder(ref)
    parts = []
    for log in sorted(folder.glob("node-*.log")):
        parts.append(f"==> {log.name} <==\n{log.read_text(errors='replace')}")
    return "\n".join(parts)


def cancel(ref: str) -> str:
    """SIGTERM every node: each saves a checkpoint at the step boundary and exits 75."""
    folder = _folder(ref)
    sent = []
    for pid_file in sorted(folder.glob("node-*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
    return f"sent SIGTERM to {len(sent)} node process(es)" if sent else "no node process was running"
