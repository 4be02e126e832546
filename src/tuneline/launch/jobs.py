"""jobs: follow a launched job by its id, through the same client that submitted it.

    tuneline jobs status|logs|cancel TARGET:ID

Ids encode their target: ``gcp-batch:projects/P/locations/R/jobs/J``,
``vertex:projects/P/locations/R/customJobs/N``, ``gke:jobset/NAMESPACE/NAME`` (or ``gke:job/...``),
``skypilot:NAME``, and ``local:`` / ``torchrun:`` followed by the job's folder in the bucket, where
the node processes keep their pid, log and exit files.
"""

from __future__ import annotations

from types import ModuleType

from tuneline.errors import TunelineError
from tuneline.launch.targets import REGISTRY, get_target


def target_of(ref: str) -> ModuleType:
    target, sep, rest = ref.partition(":")
    if not sep or not rest or target not in REGISTRY:
        raise TunelineError(
            f"job id {ref!r} does not start with a target",
            hint=f"job ids look like TARGET:ID with TARGET one of {', '.join(REGISTRY)} "
            "(as `tuneline launch` printed them)",
        )
    return get_target(target)


def status(ref: str) -> dict:
    return target_of(ref).status(ref)


def logs(ref: str) -> str:
    return target_of(ref).logs(ref)


def cancel(ref: str) -> str:
    return target_of(ref).cancel(ref)
