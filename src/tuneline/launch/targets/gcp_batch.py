"""gcp-batch: a Google Cloud Batch job built with google-cloud-batch's own types, submitted with its client.

    tuneline launch CONFIG --target gcp-batch

One task per node (a task group with a hosts file for torchrun), the training image as a container
runnable, GPU VMs with drivers installed by Batch, SPOT provisioning when launch.spot is set, and the
bucket mounted with Cloud Storage FUSE. Lifecycle policies retry a task on exit 50001 (its VM was
preempted) and 75 (tuneline saved a checkpoint on SIGTERM), up to launch.max_retries; tuneline's own
failures (exit 1-7: bad config, bad data, model, registry, run directory, gate) fail the task at once.
A retried task runs the same command and resumes from the newest valid checkpoint in the bucket.
"""

from __future__ import annotations

import shlex

from tuneline.launch.gcp import client_kwargs, parent_note, secret_versions, wire_document
from tuneline.launch.spec import RETRYABLE_EXIT, SPOT_PREEMPTED_EXIT, LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "gcp-batch"
NOT_RETRYABLE = [1, 2, 3, 4, 5, 6, 7]  # tuneline's exit codes for problems a retry cannot fix


def _runnable(spec: LaunchSpec):
    from google.cloud import batch_v1 as b

    if spec.nodes == 1:
        args = spec.node_args()
        container = b.Runnable.Container(image_uri=spec.launch.image, entrypoint=args[0], commands=args[1:])
    else:
        # node rank from the task index; node 0's address is the first line of the hosts file
        args = spec.node_args(node_rank="__RANK__", master_addr="__MASTER__")
        script = shlex.join(args).replace("__RANK__", '"${BATCH_TASK_INDEX}"')
        script = script.replace("__MASTER__", '"$(head -n1 "${BATCH_HOSTS_FILE}")"')
        container = b.Runnable.Container(
            image_uri=spec.launch.image, entrypoint="/bin/sh", commands=["-c", "exec " + script]
        )
    return b.Runnable(container=container)


def build_job(spec: LaunchSpec):
    from google.cloud import batch_v1 as b
    from google.protobuf import duration_pb2

    lc = spec.launch
    task = b.TaskSpec(
        runnables=[_runnable(spec)],
        volumes=[
            b.Volume(
                gcs=b.GCS(remote_path="/".join(p for p in (spec.bucket.name, spec.bucket.path) if p)),
                mount_path=spec.mount,
                # the adapter is written to a temporary folder and renamed: gcsfuse renames folders
                # only up to this many objects in a flat bucket
                mount_options=["--implicit-dirs", "--rename-dir-limit=10000"],
            )
        ],
        environment=b.Environment(variables=spec.env(), secret_variables=secret_versions(spec)),
        max_retry_count=lc.max_retries,
        max_run_duration=duration_pb2.Duration(seconds=lc.max_run_time),
        lifecycle_policies=[
            b.LifecyclePolicy(
                action=b.LifecyclePolicy.Action.RETRY_TASK,
                action_condition=b.LifecyclePolicy.ActionCondition(
                    exit_codes=[SPOT_PREEMPTED_EXIT, RETRYABLE_EXIT]
                ),
            ),
            b.LifecyclePolicy(
                action=b.LifecyclePolicy.Action.FAIL_TASK,
                action_condition=b.LifecyclePolicy.ActionCondition(exit_codes=NOT_RETRYABLE),
            ),
        ],
    )
    group = b.TaskGroup(
        task_spec=task,
        task_count=spec.nodes,
        parallelism=spec.nodes,
        task_count_per_node=1,
        require_hosts_file=spec.nodes > 1,
        permissive_ssh=spec.nodes > 1,
    )
    policy = b.AllocationPolicy.InstancePolicy(
        machine_type=spec.machine_type(),
        provisioning_model=(
            b.AllocationPolicy.ProvisioningModel.SPOT
            if lc.spot
            else b.AllocationPolicy.ProvisioningModel.STANDARD
        ),
        boot_disk=b.AllocationPolicy.Disk(size_gb=lc.gcp_batch.boot_disk_gb),
    )
    if spec.gpu is not None:
        policy.accelerators = [b.AllocationPolicy.Accelerator(type_=spec.gpu.gce, count=spec.gpus_per_node)]
    allocation = b.AllocationPolicy(
        location=b.AllocationPolicy.LocationPolicy(
            allowed_locations=[f"zones/{lc.zone}" if lc.zone else f"regions/{lc.region}"]
        ),
        instances=[
            b.AllocationPolicy.InstancePolicyOrTemplate(
                policy=policy, install_gpu_drivers=spec.gpu is not None
            )
        ],
        labels={"tuneline-job": spec.job_id},
    )
    if lc.service_account:
        allocation.service_account = b.ServiceAccount(email=lc.service_account)
    if lc.gcp_batch.network or lc.gcp_batch.subnetwork or lc.gcp_batch.no_external_ip:
        allocation.network = b.AllocationPolicy.NetworkPolicy(
            network_interfaces=[
                b.AllocationPolicy.NetworkInterface(
                    network=lc.gcp_batch.network or "",
                    subnetwork=lc.gcp_batch.subnetwork or "",
                    no_external_ip_address=lc.gcp_batch.no_external_ip,
                )
            ]
        )
    return b.Job(
        task_groups=[group],
        allocation_policy=allocation,
        logs_policy=b.LogsPolicy(destination=b.LogsPolicy.Destination.CLOUD_LOGGING),
        labels=spec.labels,
    )


def render(spec: LaunchSpec) -> Rendered:
    from google.cloud import batch_v1 as b

    job = build_job(spec)
    notes = [f"{parent_note(spec)}, job id {spec.job_id}"]
    return Rendered(kind="batch_v1.Job", documents=[wire_document(b.Job, job)], objects=[job], notes=notes)


def client():
    from google.cloud import batch_v1

    return batch_v1.BatchServiceClient(**client_kwargs())


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    lc = spec.launch
    created = client().create_job(
        parent=f"projects/{lc.project}/locations/{lc.region}", job_id=spec.job_id, job=rendered.objects[0]
    )
    name = created.name or f"projects/{lc.project}/locations/{lc.region}/jobs/{spec.job_id}"
    return Submitted(f"{PREFIX}:{name}", console_link(name))


def console_link(name: str) -> str:
    _, project, _, region, _, job = name.split("/")
    return f"https://console.cloud.google.com/batch/jobsDetail/regions/{region}/jobs/{job}/details?project={project}"


def _name(ref: str) -> str:
    return ref.split(":", 1)[1]


def status(ref: str) -> dict:
    job = client().get_job(name=_name(ref))
    return {
        "job": ref,
        "state": job.status.state.name,
        "events": [
            f"{e.event_time.isoformat() if e.event_time else ''} {e.description}"
            for e in job.status.status_events
        ],
        "console": console_link(_name(ref)),
    }


def logs(ref: str) -> str:
    job = client().get_job(name=_name(ref))
    events = "\n".join(e.description for e in job.status.status_events)
    return (
        f"{events}\nBatch writes task logs to Cloud Logging:\n"
        f"  gcloud logging read 'labels.job_uid=\"{job.uid}\"' --project {_name(ref).split('/')[1]}"
    )


def cancel(ref: str) -> str:
    client().cancel_job(name=_name(ref))
    return f"cancellation requested for {_name(ref)}"
