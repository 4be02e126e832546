"""The launch section: torchrun, Cloud Batch, Vertex AI, GKE and SkyPilot targets."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.schema.base import Section


# ---------------------------------------------------------------------------------- launch
class TorchrunTarget(Section):
    master_addr: str = Field(
        "127.0.0.1", description="Rendezvous host: node 0's address, reachable from every node."
    )
    master_port: int = Field(
        29500, gt=0, lt=65536, description="Rendezvous (c10d store) port on master_addr."
    )
    node_rank: int | None = Field(
        None,
        ge=0,
        description="Start only this node here (run the same command with each rank on each machine). "
        "Unset: start every node on this machine (a local multi-node job).",
    )
    max_restarts: int = Field(
        3, ge=0, description="torchrun --max-restarts: worker-group restarts after a failure or a lost node."
    )


class GcpBatchTarget(Section):
    boot_disk_gb: int = Field(100, gt=0, description="Boot disk of each VM (holds the image and the cache).")
    network: str | None = Field(None, description="VPC network (projects/P/global/networks/N).")
    subnetwork: str | None = Field(None, description="Subnetwork (projects/P/regions/R/subnetworks/S).")
    no_external_ip: bool = Field(False, description="VMs without external IP (needs Cloud NAT or PGA).")


class VertexTarget(Section):
    boot_disk_gb: int = Field(100, gt=0, description="Boot disk of each replica.")
    network: str | None = Field(None, description="Peered VPC network (projects/NUMBER/global/networks/N).")


class GkeTarget(Section):
    namespace: str = Field("default", description="Kubernetes namespace of the job.")
    kind: Literal["jobset", "indexed-job"] = Field(
        "jobset",
        description="jobset (needs the JobSet controller in the cluster) or indexed-job (a plain indexed "
        "Job plus a headless Service, where JobSet is not installed).",
    )
    service_account: str | None = Field(
        None, description="Kubernetes service account of the pods (Workload Identity for the bucket)."
    )
    gcsfuse: bool = Field(
        True,
        description="Mount a gs:// bucket with the GKE Cloud Storage FUSE CSI driver "
        "(enable it on the cluster).",
    )
    volume_claim: str | None = Field(
        None, description="Mount this PersistentVolumeClaim as the bucket instead (any storage, e.g. s3 CSI)."
    )
    context: str | None = Field(None, description="kubeconfig context to submit with (default: current).")


class SkypilotTarget(Section):
    cloud: str | None = Field(None, description="Pin a cloud (gcp, aws, azure, kubernetes, ...). Unset: any.")
    disk_size: int = Field(100, gt=0, description="Disk of each node in GB.")


class LaunchConfig(Section):
    image: str | None = Field(
        None,
        description="Container image URI with tuneline installed (see the Dockerfile), e.g. "
        "us-docker.pkg.dev/PROJECT/REPO/tuneline:0.1.0. Needed by gcp-batch, vertex and gke.",
    )
    accelerator: str | None = Field(
        None,
        description="Accelerator per node, e.g. A100-40GB, H100-80GB, L4, T4 "
        "(default: train.cost.accelerator); cpu for none.",
    )
    accelerators_per_node: int = Field(
        1, gt=0, le=16, description="Accelerators per node (one process each)."
    )
    nodes: int = Field(1, gt=0, le=512, description="Number of nodes (machines).")
    machine_type: str | None = Field(
        None,
        description="Cloud machine type (default: the usual one for the accelerator, e.g. a2-highgpu-1g).",
    )
    spot: bool = Field(
        False,
        description="Spot / preemptible capacity: a preempted node is retried and resumes from the newest "
        "valid checkpoint (at most train.save_steps lost).",
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries after preemption or a retryable failure (exit 75)."
    )
    max_run_time: int = Field(
        86400, gt=0, description="Seconds the job may run before the engine stops it (each attempt)."
    )
    project: str | None = Field(None, description="Google Cloud project id (gcp-batch, vertex).")
    region: str | None = Field(
        None, description="Cloud region, e.g. us-central1 (gcp-batch, vertex, skypilot)."
    )
    zone: str | None = Field(None, description="Cloud zone, e.g. us-central1-a (optional).")
    service_account: str | None = Field(
        None, description="Google service account email the job runs as (gcp-batch, vertex)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the job (plain values, not secrets)."
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Secret environment variables BY REFERENCE, never by value: NAME -> a Secret Manager "
        "secret (S or projects/P/secrets/S[/versions/V]) for gcp-batch and vertex, a Kubernetes Secret "
        "(name or name/key) for gke; local, torchrun and skypilot pass NAME from the launching shell.",
    )
    bucket: str | None = Field(
        None,
        description="Where the job keeps data snapshots, checkpoints and MLflow artifacts, as an fsspec URL "
        "(gs://bucket/path, s3://bucket/path) or a local/shared folder; retries resume from it.",
    )
    command: Literal["run", "train"] = Field(
        "run", description="run: prepare, train, evaluate and register; train: prepare and train only."
    )
    mfu: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Model FLOPs utilisation assumed by the cost preview (fraction of peak bf16 FLOP/s).",
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="Price per accelerator-hour, on demand, overriding the built-in table, "
        "e.g. {A100-40GB: 3.2}.",
    )
    spot_prices: dict[str, float] = Field(
        default_factory=dict, description="Price per accelerator-hour on spot capacity, overriding the table."
    )
    torchrun: TorchrunTarget = Field(
        default_factory=TorchrunTarget, description="Options of --target torchrun."
    )
    gcp_batch: GcpBatchTarget = Field(
        default_factory=GcpBatchTarget, description="Options of --target gcp-batch."
    )
    vertex: VertexTarget = Field(default_factory=VertexTarget, description="Options of --target vertex.")
    gke: GkeTarget = Field(default_factory=GkeTarget, description="Options of --target gke.")
    skypilot: SkypilotTarget = Field(
        default_factory=SkypilotTarget, description="Options of --target skypilot."
    )

    @model_validator(mode="after")
    def _secrets_are_names(self) -> LaunchConfig:
        for name in (*self.env, *self.secrets):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"environment variable name {name!r} is not valid ([A-Za-z_][A-Za-z0-9_]*)")
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} in both launch.env and launch.secrets; keep one")
        return self
