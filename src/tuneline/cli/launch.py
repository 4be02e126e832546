"""``tuneline launch``, ``tuneline jobs`` and the in-container ``tuneline node`` (registered by app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneline.cli._common import ConfigArg, SetOpt, cli_errors, err, fail, load, out
from tuneline.launch.spec import TARGETS

jobs_app = typer.Typer(help="Follow launched jobs: status, logs, cancel.", no_args_is_help=True)

JobArg = Annotated[
    str,
    typer.Argument(
        help="Job id as `tuneline launch` printed it: TARGET:ID, "
        "e.g. gcp-batch:projects/P/locations/R/jobs/J.",
        show_default=False,
    ),
]


@cli_errors
def launch(
    config: ConfigArg,
    target: Annotated[str, typer.Option("--target", help=f"Where to run: {', '.join(TARGETS)}.")],
    set_: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and print the rendered job and the cost; submit nothing.")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the rendered spec (default: launch/<job-id>).")
    ] = None,
    job_id: Annotated[
        str | None, typer.Option("--job-id", help="Job name (default: <run.name>-<timestamp>).")
    ] = None,
) -> None:
    """Run the config as a job on a launch target; spot preemptions resume from the bucket's checkpoints."""
    from tuneline.launch import cost
    from tuneline.launch.spec import build_spec, stage_config
    from tuneline.launch.targets import get_target

    cfg = load(config, set_)
    spec = build_spec(cfg, target, job_id=job_id)
    module = get_target(target)
    rendered = module.render(spec)
    folder = out_dir or Path("launch") / spec.job_id
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / f"{module.__name__.rsplit('.', 1)[1]}.{rendered.fmt}"
    spec_file.write_text(rendered.text())
    preview = cost.preview(spec)
    (folder / "cost.json").write_text(json.dumps(preview.as_dict(), indent=2) + "\n")
    if dry_run:
        sys.stdout.write(rendered.text())
    for note in (*spec.notes, *rendered.notes):
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    err.print(cost.render(preview), highlight=False, soft_wrap=True)
    err.print(f"spec: {spec_file}")
    if dry_run:
        return
    staged = stage_config(spec)
    err.print(f"config staged at {staged}")
    submitted = module.submit(spec, rendered)
    out.print(submitted.ref, highlight=False, soft_wrap=True)
    if submitted.console:
        err.print(f"console: {submitted.console}", highlight=False, soft_wrap=True)
    err.print(f"follow it: tuneline jobs status {escape(submitted.ref)}", highlight=False, soft_wrap=True)


def node(
    config: ConfigArg,
    job_id: Annotated[str, typer.Option("--job-id", help="The job's id: names its run directory.")],
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the bucket is mounted.")],
    set_: SetOpt = None,
    command: Annotated[str, typer.Option("--command", help="run or train.")] = "run",
    nnodes: Annotated[int, typer.Option("--nnodes")] = 1,
    nproc_per_node: Annotated[int, typer.Option("--nproc-per-node")] = 1,
    node_rank: Annotated[
        str | None,
        typer.Option("--node-rank", help="This node's rank (default: Vertex AI's CLUSTER_SPEC, else 0)."),
    ] = None,
    master_addr: Annotated[str | None, typer.Option("--master-addr")] = None,
    master_port: Annotated[int, typer.Option("--master-port")] = 29500,
    max_restarts: Annotated[int, typer.Option("--max-restarts")] = 3,
    status_file: Annotated[
        Path | None, typer.Option("--status-file", help="Write the exit code here.")
    ] = None,
) -> None:
    """One node of a launched job (the container command): prepare, train (resuming), evaluate, register."""
    import os

    from tuneline.launch.node import NodeArgs, run_node, vertex_cluster

    code = 1
    try:  # not cli_errors: the exit code of a failure is also written to --status-file
        rank, master = 0, master_addr or "127.0.0.1"
        cluster = vertex_cluster(dict(os.environ)) if nnodes > 1 and node_rank is None else None
        if cluster is not None:
            rank, master = cluster
        elif node_rank not in (None, ""):
            rank = int(node_rank)
        if command not in ("run", "train"):
            raise typer.BadParameter("--command must be run or train")
        args = NodeArgs(
            config=config,
            job_id=job_id,
            workdir=workdir,
            command=command,
            nnodes=nnodes,
            nproc_per_node=nproc_per_node,
            node_rank=rank,
            master_addr=master,
            master_port=master_port,
            max_restarts=max_restarts,
            overrides=tuple(set_ or ()),
        )
        code = run_node(args)
    except Exception as exc:  # noqa: BLE001
        failure = fail(exc)
        code = failure.exit_code
        raise failure from exc
    finally:
        if status_file is not None:
            status_file.write_text(f"{code}\n")
    if code:
        raise typer.Exit(code)


def _job_call(action: str, job: str):
    """Run tuneline.launch.jobs.<action>(job) (each engine's client raises its own kinds: the commands'
    cli_errors maps them to the CLI's error and exit code)."""
    from tuneline.launch import jobs

    return getattr(jobs, action)(job)


@jobs_app.command("status")
@cli_errors
def jobs_status(job: JobArg) -> None:
    """The job's state as the engine reports it (JSON)."""
    sys.stdout.write(json.dumps(_job_call("status", job), indent=2, default=str) + "\n")


@jobs_app.command("logs")
@cli_errors
def jobs_logs(job: JobArg) -> None:
    """The job's logs (or where to read them)."""
    text = _job_call("logs", job)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@jobs_app.command("cancel")
@cli_errors
def jobs_cancel(job: JobArg) -> None:
    """Cancel the job (nodes get SIGTERM: they checkpoint and stop)."""
    out.print(_job_call("cancel", job), highlight=False, soft_wrap=True)
