"""torchrun: one ``tuneline node`` per node; each runs torch.distributed.run with c10d rendezvous.

    tuneline launch CONFIG --target torchrun

With ``launch.torchrun.node_rank`` unset every node starts on this machine (a local multi-node job);
set it to start one node here and run the same command with each rank on the other machines (the
bucket must then be a folder they share). Node 0 hosts the rendezvous at master_addr:master_port.
A lost node or worker makes torchrun restart the worker group (``--max-restarts``); a node that comes
back (restarted by you or your scheduler with the same command) rejoins, and training resumes from
the newest valid checkpoint in the shared run directory.
"""

from __future__ import annotations

from pathlib import Path

from tuneline.launch import procs
from tuneline.launch.node import NodeArgs, torchrun_argv
from tuneline.launch.spec import LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "torchrun"


def node_ranks(spec: LaunchSpec) -> list[int]:
    rank = spec.launch.torchrun.node_rank
    return list(range(spec.nodes)) if rank is None else [rank]


def render(spec: LaunchSpec) -> Rendered:
    opts = spec.launch.torchrun
    nodes = []
    for rank in range(spec.nodes):
        command = spec.node_args(node_rank=rank, master_addr=opts.master_addr)
        args = NodeArgs(
            config=Path(spec.config_in_container),
            job_id=spec.job_id,
            workdir=Path(spec.mount),
            nnodes=spec.nodes,
            nproc_per_node=spec.procs_per_node,
            node_rank=rank,
            master_addr=opts.master_addr,
            master_port=opts.master_port,
            max_restarts=opts.max_restarts,
        )
        worker = [
            "-m",
            "tuneline.cli",
            "train",
            spec.config_in_container,
            "--run-dir",
            spec.run_dir_in_container,
            "--set",
            f"run.output_dir={spec.mount}/runs",
        ]
        launcher = ["torchrun", *torchrun_argv(args, worker)[3:]]
        nodes.append(
            {
                "node_rank": rank,
                "starts_here": rank in node_ranks(spec),
                "command": command,
                "torchrun": launcher if spec.world_size > 1 else None,
            }
        )
    doc = {
        "target": spec.target,
        "job_id": spec.job_id,
        "bucket": spec.bucket.url,
        "run_dir": spec.run_dir_in_container,
        "nodes": nodes,
        "env": spec.env(),
        "secrets_from_shell": sorted(spec.launch.secrets),
    }
    return Rendered(kind="torchrun", documents=[doc], objects=[doc])


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    folder = procs.start(spec, [n for n in rendered.documents[0]["nodes"] if n["starts_here"]])
    return Submitted(f"{PREFIX}:{folder}", None)


status, logs, cancel = procs.status, procs.logs, procs.cancel
