"""The common job spec every target renders from, and the command each node runs in the container.

A launched job is the same on every engine: N nodes, each running

    tuneline node <bucket>/jobs/<job-id>/config.yaml --job-id <job-id> --workdir <bucket> ...

with the bucket mounted at a fixed path. The run directory is ``<bucket>/runs/<run.name>/<job-id>``,
the same on every retry, so a retried (preempted) node resumes from the newest checkpoint in the bucket
that verifies: at most ``train.save_steps`` of work is lost.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.config import Config
from tuneline.config.schema import LaunchConfig
from tuneline.errors import ConfigError

TARGETS = ("local", "torchrun", "gcp-batch", "vertex", "gke", "skypilot")
RETRYABLE_EXIT = 75  # TrainingInterrupted: SIGTERM (preemption notice) -> checkpoint -> exit 75
SPOT_PREEMPTED_EXIT = 50001  # Google Cloud Batch: the VM was preempted


@dataclass(frozen=True)
class Gpu:
    """One accelerator model as each engine names it."""

    name: str  # tuneline's name (training/plan.py)
    gce: str  # Compute Engine / Batch accelerator type
    vertex: str  # aiplatform_v1.AcceleratorType
    gke: str  # cloud.google.com/gke-accelerator node label
    sky: str  # SkyPilot accelerator name
    tflops: float  # dense bf16 (fp16 where no bf16) peak, TFLOP/s
    machine: dict[int, str] = field(default_factory=dict)  # accelerators per node -> GCE machine type


GPUS: tuple[Gpu, ...] = (
    Gpu(
        "H100-80GB",
        "nvidia-h100-80gb",
        "NVIDIA_H100_80GB",
        "nvidia-h100-80gb",
        "H100",
        989,
        {n: f"a3-highgpu-{n}g" for n in (1, 2, 4, 8)},
    ),
    Gpu(
        "H200-141GB",
        "nvidia-h200-141gb",
        "NVIDIA_H200_141GB",
        "nvidia-h200-141gb",
        "H200",
        989,
        {8: "a3-ultragpu-8g"},
    ),
    Gpu(
        "A100-40GB",
        "nvidia-tesla-a100",
        "NVIDIA_TESLA_A100",
        "nvidia-tesla-a100",
        "A100",
        312,
        {n: f"a2-highgpu-{n}g" for n in (1, 2, 4, 8)},
    ),
    Gpu(
        "A100-80GB",
        "nvidia-a100-80gb",
        "NVIDIA_A100_80GB",
        "nvidia-a100-80gb",
        "A100-80GB",
        312,
        {n: f"a2-ultragpu-{n}g" for n in (1, 2, 4, 8)},
    ),
    Gpu(
        "L4-24GB",
        "nvidia-l4",
        "NVIDIA_L4",
        "nvidia-l4",
        "L4",
        121,
        {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
    ),
    Gpu(
        "T4-16GB",
        "nvidia-tesla-t4",
        "NVIDIA_TESLA_T4",
        "nvidia-tesla-t4",
        "T4",
        65,
        {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32"},
    ),
    Gpu(
        "V100-16GB",
        "nvidia-tesla-v100",
        "NVIDIA_TESLA_V100",
        "nvidia-tesla-v100",
        "V100",
        125,
        {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"},
    ),
    Gpu("A10G-24GB", "", "", "", "A10G", 125),  # AWS only (skypilot)
)
CPU_MACHINE = "n2-standard-8"


@dataclass(frozen=True)
class Bucket:
    """A parsed fsspec URL: gs://name/path, s3://name/path, or a local (shared) folder."""

    url: str
    protocol: str  # gs, s3, file
    name: str  # bucket name; "" for a folder
    path: str  # inside the bucket, no leading or trailing slash; for a folder its absolute path

    @classmethod
    def parse(cls, url: str) -> Bucket:
        from fsspec.utils import infer_storage_options

        opts = infer_storage_options(url)
        protocol = {"gcs": "gs", "s3a": "s3", "local": "file"}.get(opts["protocol"], opts["protocol"])
        if protocol == "file":
            folder = str(Path(opts["path"]).expanduser().resolve())
            return cls(folder, "file", "", folder)
        name = opts.get("host") or ""
        path = opts["path"].strip("/")
        if path.startswith(name + "/") or path == name:  # fsspec keeps the bucket in the path for gs/s3
            path = path[len(name) :].strip("/")
        if not name:
            raise ValueError(f"bucket URL {url!r} has no bucket name")
        url = f"{protocol}://{name}" + (f"/{path}" if path else "")
        return cls(url, protocol, name, path)

    def join(self, *parts: str) -> str:
        return "/".join([self.url.rstrip("/"), *parts])

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a target needs, resolved once: names, sizes, the bucket and the node command."""

    target: str
    job_id: str
    cfg: Config
    accelerator: str  # tuneline name, or cpu
    gpu: Gpu | None
    gpus_per_node: int  # 0 on cpu
    nodes: int
    bucket: Bucket
    mount: str  # where the bucket is seen inside the container / on the node
    config_url: str  # where the launcher stages the resolved config (in the bucket)
    notes: tuple[str, ...] = ()  # things to check before submitting

    @property
    def launch(self) -> LaunchConfig:
        return self.cfg.launch

    @property
    def procs_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def labels(self) -> dict[str, str]:
        """Labels every engine's job carries (lowercase, at most 63 characters: GCP and Kubernetes rules)."""
        return {"tuneline-job": self.job_id, "tuneline-run": self.cfg.run.name.lower()[:63]}

    @property
    def config_in_container(self) -> str:
        return f"{self.mount}/jobs/{self.job_id}/config.yaml"

    @property
    def run_dir_in_container(self) -> str:
        return f"{self.mount}/runs/{self.cfg.run.name}/{self.job_id}"

    def machine_type(self) -> str:
        if self.launch.machine_type:
            return self.launch.machine_type
        if self.gpu is None:
            return CPU_MACHINE
        try:
            return self.gpu.machine[self.gpus_per_node]
        except KeyError:
            raise ConfigError(
                [
                    f"launch.machine_type: no default machine type for {self.gpus_per_node} x "
                    f"{self.gpu.name} (known: {sorted(self.gpu.machine)} per node); set launch.machine_type"
                ]
            ) from None

    def node_args(
        self, *, node_rank: str | int | None = None, master_addr: str | None = None, extra: tuple = ()
    ) -> list[str]:
        """The container command of one node (``tuneline node ...``); rank and master may be shell text."""
        args = [
            "tuneline",
            "node",
            self.config_in_container,
            "--job-id",
            self.job_id,
            "--workdir",
            self.mount,
            "--command",
            self.launch.command,
            "--nnodes",
            str(self.nodes),
            "--nproc-per-node",
            str(self.procs_per_node),
            "--max-restarts",
            str(self.launch.torchrun.max_restarts),
        ]
        if self.nodes > 1:
            args += ["--master-port", str(self.launch.torchrun.master_port)]
            if node_rank is not None:
                args += ["--node-rank", str(node_rank)]
            if master_addr is not None:
                args += ["--master-addr", master_addr]
        return [*args, *extra]

    def env(self) -> dict[str, str]:
        """Plain environment of every node (secrets are passed by reference by each target)."""
        return {
            "TUNELINE_JOB_ID": self.job_id,
            "TUNELINE_BUCKET": self.bucket.url,
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            **self.launch.env,
        }


def default_job_id(cfg: Config) -> str:
    return job_name(f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def job_name(text: str) -> str:
    """A name every engine accepts: lowercase letters, digits and dashes, a letter first, <= 40 chars."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "tl-" + name
    return name[:40].rstrip("-")


def resolve_gpu(cfg: Config) -> tuple[str, Gpu | None]:
    name = cfg.launch.accelerator or cfg.train.cost.accelerator
    if name.lower() == "cpu":
        return "cpu", None
    from tuneline.training.plan import get_accelerator

    acc = get_accelerator(name)
    gpu = next((g for g in GPUS if g.name == acc.name), None)
    if gpu is None:  # in the planner's table but not launchable (e.g. V100-32GB)
        raise ConfigError([f"launch.accelerator: {name!r} cannot be launched; use one of {gpu_names()}"])
    return gpu.name, gpu


def gpu_names() -> list[str]:
    return [g.name for g in GPUS] + ["cpu"]


MOUNTS = {
    "gcp-batch": "/mnt/disks/tuneline",
    "gke": "/mnt/tuneline",
    "skypilot": "/mnt/tuneline",
}


def build_spec(cfg: Config, target: str, *, job_id: str | None = None) -> LaunchSpec:
    """Resolve and check the launch section for a target; every problem reported at once."""
    if target not in TARGETS:
        import difflib

        close = difflib.get_close_matches(target, TARGETS, n=1)
        raise ConfigError(
            [
                f"--target {target!r} is not a launch target; choose one of {', '.join(TARGETS)}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            ]
        )
    lc = cfg.launch
    problems: list[str] = []
    accelerator, gpu = resolve_gpu(cfg)
    cloud = target in ("gcp-batch", "vertex", "gke")
    if cloud and not lc.image:
        problems.append(
            f"launch.image: {target} runs a container image; build the Dockerfile and set its URI"
        )
    if target in ("gcp-batch", "vertex"):
        if not lc.project:
            problems.append(f"launch.project: {target} needs a Google Cloud project id")
        if not lc.region:
            problems.append(f"launch.region: {target} needs a region, e.g. us-central1")
    if gpu is not None and target in ("gcp-batch", "vertex", "gke") and not gpu.gce:
        problems.append(f"launch.accelerator: {gpu.name} is not offered on Google Cloud")
    if target == "local" and lc.nodes > 1:
        problems.append("launch.nodes: the local target runs one node; use --target torchrun for several")
    url = lc.bucket or ("." if target in ("local", "torchrun") else None)
    bucket = None
    if url is None:
        problems.append(
            f"launch.bucket: {target} keeps checkpoints in a bucket so retries resume; set e.g. gs://BUCKET/tuneline"
        )
    else:
        try:
            bucket = Bucket.parse(url)
        except ValueError as exc:
            problems.append(f"launch.bucket: {exc}")
    if bucket is not None:
        allowed = {
            "local": {"file"},
            "torchrun": {"file"},
            "gcp-batch": {"gs"},
            "vertex": {"gs"},
            "gke": {"gs"} if lc.gke.volume_claim is None else {"gs", "s3", "file"},
            "skypilot": {"gs", "s3", "r2", "file"},
        }[target]
        if bucket.protocol not in allowed:
            problems.append(
                f"launch.bucket: {target} cannot mount {bucket.protocol}:// buckets; use "
                + " or ".join(f"{p}://" if p != "file" else "a shared folder" for p in sorted(allowed))
            )
    if lc.nodes > 1 and lc.torchrun.node_rank is not None and lc.torchrun.node_rank >= lc.nodes:
        problems.append(f"launch.torchrun.node_rank: {lc.torchrun.node_rank} >= launch.nodes ({lc.nodes})")
    if problems:
        raise ConfigError(problems)
    assert bucket is not None
    if target == "vertex":
        mount = f"/gcs/{bucket.name}" + (f"/{bucket.path}" if bucket.path else "")
    elif bucket.is_local:
        mount = bucket.path if target in ("local", "torchrun") else MOUNTS[target]
    else:
        mount = MOUNTS[target]
    job = job_name(job_id) if job_id else default_job_id(cfg)
    notes = []
    if target not in ("local", "torchrun"):
        for src in cfg.data.sources:
            for path in (src.path, getattr(src, "image_dir", None)):
                if path is not None and not str(path).startswith(mount.rstrip("/") + "/"):
                    notes.append(
                        f"data source {path} is not under the bucket's mount {mount}: the container must "
                        "see it at that path (keep data in the bucket, or build it into the image)"
                    )
    return LaunchSpec(
        notes=tuple(notes),
        target=target,
        job_id=job,
        cfg=cfg,
        accelerator=accelerator,
        gpu=gpu,
        gpus_per_node=0 if gpu is None else lc.accelerators_per_node,
        nodes=lc.nodes,
        bucket=bucket,
        mount=mount,
        config_url=bucket.join("jobs", job, "config.yaml"),
    )


def stage_config(spec: LaunchSpec) -> str:
    """Write the resolved config (secrets as ${ENV} templates) into the bucket, where every node reads it."""
    import fsspec

    from tuneline.config import to_yaml

    try:
        fs, path = fsspec.core.url_to_fs(spec.config_url)
    except (ImportError, ValueError) as exc:
        from tuneline.errors import TunelineError

        raise TunelineError(
            f"cannot write to {spec.bucket.url}: {exc}",
            hint="install the fsspec driver of the bucket (gcsfs for gs://, s3fs for s3://)",
        ) from exc
    import secrets

    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with fs.open(tmp, "w") as fh:  # then one rename: a node (re)starting meanwhile never reads half a file
        fh.write(to_yaml(spec.cfg))
    fs.mv(tmp, path)
    return spec.config_url
