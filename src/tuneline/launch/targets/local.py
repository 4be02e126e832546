"""local: the job on this machine, one node, in the background (``tuneline jobs`` follows it).

    tuneline launch CONFIG --target local

The bucket is a local folder (default: the working directory). With several accelerators per node
the node runs torchrun --standalone with one process each.
"""

from __future__ import annotations

from tuneline.launch import procs
from tuneline.launch.spec import LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "local"


def render(spec: LaunchSpec) -> Rendered:
    doc = {
        "target": spec.target,
        "job_id": spec.job_id,
        "bucket": spec.bucket.url,
        "run_dir": spec.run_dir_in_container,
        "nodes": [{"node_rank": 0, "starts_here": True, "command": spec.node_args()}],
        "env": spec.env(),
        "secrets_from_shell": sorted(spec.launch.secrets),
    }
    return Rendered(kind="local", documents=[doc], objects=[doc])


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    folder = procs.start(spec, rendered.documents[0]["nodes"])
    return Submitted(f"{PREFIX}:{folder}", None)


status, logs, cancel = procs.status, procs.logs, procs.cancel
