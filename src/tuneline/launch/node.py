"""node: what every node of a launched job runs, on every engine and every retry.

    tuneline node CONFIG --job-id J --workdir BUCKET_MOUNT [--nnodes N --nproc-per-node G
                  --node-rank R --master-addr A --master-port P --max-restarts K] [--command run|train]

1. Work inside the bucket: the run directory is BUCKET/runs/<run.name>/<J> (the same on every retry),
   snapshots and the default MLflow store land in BUCKET/.tuneline.
2. Node 0 creates the run directory and prepares the data unless a previous attempt did; the other
   nodes wait for it.
3. Train: in this process on a one-process job, else under torchrun (c10d rendezvous on the master,
   ``--max-restarts``). Either way training resumes from the newest checkpoint that verifies.
4. Node 0 then evaluates and registers (``--command run``).

Exit codes: 0 done; 75 retryable (stopped by a signal after a checkpoint, or the node group failed
under torchrun: a lost node); 1-7 tuneline's own failures (bad config, data, model, ...).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tuneline.errors import RunDirError, TunelineError
from tuneline.launch.spec import RETRYABLE_EXIT

log = logging.getLogger("tuneline.launch")


@dataclass(frozen=True)
class NodeArgs:
    config: Path
    job_id: str
    workdir: Path
    command: str = "run"
    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    max_restarts: int = 3
    overrides: tuple[str, ...] = ()
    wait_timeout: float = 3600.0

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def torchrun_argv(a: NodeArgs, worker: list[str]) -> list[str]:
    """torch.distributed.run for this node: standalone on one node, c10d rendezvous across several."""
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={a.nnodes}",
        f"--nproc-per-node={a.nproc_per_node}",
        f"--max-restarts={a.max_restarts}",
    ]
    if a.nnodes == 1:
        argv.append("--standalone")
    else:
        # node 0 hosts the rendezvous store (is_host), so a lost worker node never takes the store along
        host = "true" if a.node_rank == 0 else "false"
        argv += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={a.master_addr}:{a.master_port}",
            f"--rdzv-id={a.job_id}",
            f"--rdzv-conf=is_host={host},join_timeout={int(a.wait_timeout)}",
            f"--node-rank={a.node_rank}",
        ]
    return [*argv, *worker]


def vertex_cluster(env: dict[str, str]) -> tuple[int, str] | None:
    """(node rank, master host) from Vertex AI's CLUSTER_SPEC: workerpool0 is node 0, workerpool1 the rest."""
    raw = env.get("CLUSTER_SPEC")
    if not raw:
        return None
    spec = json.loads(raw)
    task = spec["task"]
    rank = task["index"] if task["type"] == "workerpool0" else task["index"] + 1
    master = spec["cluster"]["workerpool0"][0].rsplit(":", 1)[0]
    return rank, master


def run_node(a: NodeArgs) -> int:
    from tuneline.config import load_config
    from tuneline.runs import RunDir

    def run_stage(name, cfg, rd, report):  # the stages import torch & co.: only where they run
        from tuneline.stages.pipeline import run_stage

        return run_stage(name, cfg, rd, report=report)

    a.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(a.workdir)  # .tuneline/ (snapshots, default MLflow store) lives in the bucket
    resolve_secret_refs(os.environ)
    output_dir = a.workdir / "runs"
    overrides = [*a.overrides, f"run.output_dir={output_dir}"]
    cfg = load_config(a.config, overrides)
    path = output_dir / cfg.run.name / a.job_id

    if a.node_rank == 0:
        from tuneline.stages.pipeline import preflight

        preflight(cfg)
        if not (path / "summary.json").is_file():
            if path.exists():  # an attempt died between mkdir and its first summary
                import shutil

                shutil.rmtree(path)
            rd = RunDir.create(cfg, a.config, run_id=a.job_id)
        else:
            rd = RunDir.open(path)
        if "prepare" not in rd.summary_model().stages:
            run_stage("prepare", cfg, rd, report=_report)
    else:
        rd = _wait_prepared(path, a.wait_timeout)
        if "train" in rd.summary_model().stages:
            return 0  # a retry of node 0's evaluation: nothing to train

    if "train" not in rd.summary_model().stages:
        if a.world_size == 1:
            run_stage("train", cfg, rd, report=_report)
        else:
            from tuneline.training.distributed import launch

            # The agents' shared TCP store lives on whichever node was rank 0 in the first round (the
            # first to join, maybe not node 0): losing that node would strand the others. Without the
            # sharing, every round takes its addresses from the rendezvous store that node 0 hosts.
            os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")

            worker = ["-m", "tuneline.cli", "train", str(a.config), "--run-dir", str(rd.path)]
            for item in overrides:
                worker += ["--set", item]
            code = launch(torchrun_argv(a, worker))
            if code != 0:
                # torchrun gave up after --max-restarts: a lost node or worker (node 0's store gone, NCCL
                # or gloo errors). Data and config problems fail earlier, in prepare on node 0. Exit
                # 75 so the engine retries the node; it resumes from the newest valid checkpoint.
                print(
                    f"torchrun exited with {code}: exiting {RETRYABLE_EXIT} (retryable) so the job's engine "
                    "restarts this node",
                    file=sys.stderr,
                )
                return RETRYABLE_EXIT
    if a.node_rank != 0:
        return 0
    if a.command == "run":
        done = set(rd.summary_model().stages)
        if "evaluate" not in done:
            run_stage("evaluate", cfg, rd, report=_report)
        if cfg.registry.enabled and "register" not in done:
            run_stage("register", cfg, rd, report=_report)
        if not cfg.registry.enabled:
            rd.update_summary(complete=True)
    print(f"run directory: {rd.path}", file=sys.stderr)
    return 0


def _wait_prepared(path: Path, timeout: float):
    from tuneline.runs import RunDir

    deadline = time.time() + timeout
    while time.time() < deadline:
        summary = path / "summary.json"
        if summary.is_file():
            try:
                rd = RunDir.open(path)
                if "prepare" in rd.summary_model().stages:
                    return rd
            except (OSError, ValueError):
                pass  # mid-write on a shared filesystem
        time.sleep(1.0)
    raise RunDirError(
        f"node 0 did not prepare {path} within {timeout:.0f} s",
        hint="check node 0's log; it prepares the data before the other nodes train",
    )


def _report(stage: str, event: str, seconds: float) -> None:
    if event == "start":
        print(f"▶ {stage}", file=sys.stderr, flush=True)
    elif event == "done":
        print(f"✓ {stage} ({seconds:.1f} s)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- secrets by reference (Vertex AI)
SECRET_REFS_ENV = "TUNELINE_SECRET_REFS"
SECRET_MANAGER = "https://secretmanager.googleapis.com"


def resolve_secret_refs(env) -> list[str]:
    """Vertex AI has no secret environment variables: the job carries only references
    (TUNELINE_SECRET_REFS = {"NAME": "projects/P/secrets/S/versions/V"}), resolved here at start
    through the Secret Manager API with the job's own service account. Returns the names set."""
    raw = env.get(SECRET_REFS_ENV)
    if not raw:
        return []
    import base64

    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    endpoint = env.get("TUNELINE_SECRET_MANAGER_ENDPOINT", SECRET_MANAGER).rstrip("/")
    if endpoint.startswith("http://"):  # the loopback stand-in of the tests
        from google.auth.credentials import AnonymousCredentials

        credentials: google.auth.credentials.Credentials = AnonymousCredentials()
    else:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    session = AuthorizedSession(credentials)
    names = []
    for name, ref in json.loads(raw).items():
        reply = session.get(f"{endpoint}/v1/{ref}:access", timeout=30)
        if reply.status_code != 200:
            raise TunelineError(
                f"secret {name}: Secret Manager refused {ref} ({reply.status_code})",
                hint="grant the job's service account roles/secretmanager.secretAccessor on the secret",
            )
        env[name] = base64.b64decode(reply.json()["payload"]["data"]).decode()
        names.append(name)
    return names
