"""vertex: a Vertex AI CustomJob built with google-cloud-aiplatform's own types, submitted with its client.

    tuneline launch CONFIG --target vertex

Worker pool 0 is node 0 (the torchrun master); worker pool 1 holds the other nodes. Each runs the
training image with ``tuneline node``, which finds its rank and the master in Vertex AI's CLUSTER_SPEC.
The bucket is read and written through Vertex AI's Cloud Storage FUSE mount (/gcs/BUCKET).
``restart_job_on_worker_restart`` restarts every worker when one restarts (a lost spot VM), and they
resume from the newest valid checkpoint; ``Scheduling.Strategy.SPOT`` when launch.spot is set.
Vertex AI has no secret environment variables: secrets travel as references (TUNELINE_SECRET_REFS)
that ``tuneline node`` resolves through Secret Manager with the job's service account.
"""

from __future__ import annotations

import json

from tuneline.errors import ConfigError
from tuneline.launch.gcp import client_kwargs, parent_note, secret_versions, wire_document
from tuneline.launch.node import SECRET_REFS_ENV
from tuneline.launch.spec import LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "vertex"


def build_job(spec: LaunchSpec):
    from google.cloud import aiplatform_v1 as a
    from google.protobuf import duration_pb2

    lc = spec.launch
    env = spec.env()
    if lc.secrets:
        env[SECRET_REFS_ENV] = json.dumps(secret_versions(spec), sort_keys=True)
    machine = a.MachineSpec(machine_type=spec.machine_type())
    if spec.gpu is not None:
        # proto-plus enums are standard Enums at runtime; their metaclass hides __getitem__ from mypy
        machine.accelerator_type = a.AcceleratorType[spec.gpu.vertex]  # type: ignore[misc]
        machine.accelerator_count = spec.gpus_per_node
    args = spec.node_args()  # rank and master come from CLUSTER_SPEC on each replica

    def pool(replicas: int):
        return a.WorkerPoolSpec(
            machine_spec=machine,
            replica_count=replicas,
            disk_spec=a.DiskSpec(boot_disk_type="pd-ssd", boot_disk_size_gb=lc.vertex.boot_disk_gb),
            container_spec=a.ContainerSpec(
                image_uri=lc.image,
                command=args[:1],
                args=args[1:],
                env=[a.EnvVar(name=k, value=v) for k, v in env.items()],
            ),
        )

    pools = [pool(1)] + ([pool(spec.nodes - 1)] if spec.nodes > 1 else [])
    job_spec = a.CustomJobSpec(
        worker_pool_specs=pools,
        scheduling=a.Scheduling(
            timeout=duration_pb2.Duration(seconds=lc.max_run_time),
            restart_job_on_worker_restart=True,
            strategy=a.Scheduling.Strategy.SPOT if lc.spot else a.Scheduling.Strategy.ON_DEMAND,
        ),
    )
    if lc.service_account:
        job_spec.service_account = lc.service_account
    if lc.vertex.network:
        job_spec.network = lc.vertex.network
    return a.CustomJob(
        display_name=spec.job_id,
        job_spec=job_spec,
        labels=spec.labels,
    )


def render(spec: LaunchSpec) -> Rendered:
    from google.cloud import aiplatform_v1 as a

    job = build_job(spec)
    notes = [parent_note(spec)]
    if spec.launch.max_retries:
        notes.append(
            "vertex: retries are Vertex AI's own (restart_job_on_worker_restart); "
            "launch.max_retries is not used"
        )
    return Rendered(
        kind="aiplatform_v1.CustomJob",
        documents=[wire_document(a.CustomJob, job)],
        objects=[job],
        notes=notes,
    )


def client(region: str):
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(**client_kwargs(f"{region}-aiplatform.googleapis.com"))


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    lc = spec.launch
    if not lc.region:  # LaunchSpec checks it; kept here so the client is never built for no region
        raise ConfigError(["launch.region: vertex needs a region, e.g. us-central1"])
    created = client(lc.region).create_custom_job(
        parent=f"projects/{lc.project}/locations/{lc.region}", custom_job=rendered.objects[0]
    )
    return Submitted(f"{PREFIX}:{created.name}", console_link(created.name))


def console_link(name: str) -> str:
    _, project, _, region, _, job = name.split("/")
    return (
        f"https://console.cloud.google.com/vertex-ai/locations/{region}/training/{job}/cpu?project={project}"
    )


def _name(ref: str) -> str:
    return ref.split(":", 1)[1]


def _region(name: str) -> str:
    return name.split("/")[3]


def status(ref: str) -> dict:
    name = _name(ref)
    job = client(_region(name)).get_custom_job(name=name)
    return {
        "job": ref,
        "state": job.state.name,
        "error": job.error.message or None,
        "console": console_link(name),
    }


def logs(ref: str) -> str:
    name = _name(ref)
    job_id = name.rsplit("/", 1)[1]
    return (
        "Vertex AI writes worker logs to Cloud Logging:\n"
        f'  gcloud logging read \'resource.type="ml_job" AND resource.labels.job_id="{job_id}"\' '
        f"--project {name.split('/')[1]}\n  console: {console_link(name)}"
    )


def cancel(ref: str) -> str:
    name = _name(ref)
    client(_region(name)).cancel_custom_job(name=name)
    return f"cancellation requested for {name}"
