"""gke: a JobSet (or an indexed Job + headless Service) on Kubernetes, built and applied with its client.

    tuneline launch CONFIG --target gke

One pod per node in an indexed Job: the node rank is the pod's completion index and MASTER_ADDR is
node 0's stable hostname (``<jobset>-node-0-0.<jobset>`` under JobSet's DNS hostnames, or
``<job>-0.<service>`` with the headless Service). Pods ask for ``nvidia.com/gpu`` and land on the
accelerator's node pool (``cloud.google.com/gke-accelerator``), on Spot VMs when launch.spot is set
(``cloud.google.com/gke-spot``). The bucket is mounted with the Cloud Storage FUSE CSI driver (or a
PersistentVolumeClaim). A pod that fails (a lost spot node, exit 75) fails its Job; JobSet then
recreates the whole set, up to ``failurePolicy.maxRestarts`` times, and it resumes from the newest
valid checkpoint; tuneline's own failures (exit 1-7) fail the set at once (pod failure policy).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneline.errors import ConfigError
from tuneline.launch.spec import LaunchSpec
from tuneline.launch.targets import Rendered, Submitted

PREFIX = "gke"
GROUP, VERSION, PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
CONTAINER = "tuneline"
RJOB = "node"
NOT_RETRYABLE = [1, 2, 3, 4, 5, 6, 7]
JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------- a JobSet schema check
# JobSet has no model in the kubernetes client: these mirror the fields of jobset.x-k8s.io/v1alpha2
# that we write (unknown keys refused), and the Job template inside is checked by V1JobTemplateSpec.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FailurePolicyRule(_Strict):
    name: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    action: Literal["FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts"]
    onJobFailureReasons: list[str] = []
    targetReplicatedJobs: list[str] = []


class FailurePolicy(_Strict):
    maxRestarts: int = Field(ge=0)
    restartStrategy: Literal["Recreate", "BlockingRecreate"] = "Recreate"
    rules: list[FailurePolicyRule] = []


class Network(_Strict):
    enableDNSHostnames: bool
    subdomain: str | None = None
    publishNotReadyAddresses: bool | None = None


class ReplicatedJob(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(1, ge=1)
    template: dict[str, Any]

    def model_post_init(self, _context) -> None:
        from kubernetes.client import V1JobTemplateSpec

        V1JobTemplateSpec.model_validate(self.template)  # raises on unknown or mistyped fields


class JobSetSpec(_Strict):
    replicatedJobs: list[ReplicatedJob] = Field(min_length=1)
    network: Network | None = None
    failurePolicy: FailurePolicy | None = None
    suspend: bool | None = None
    ttlSecondsAfterFinished: int | None = None


class JobSetMeta(_Strict):
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class JobSet(_Strict):
    apiVersion: Literal["jobset.x-k8s.io/v1alpha2"]
    kind: Literal["JobSet"]
    metadata: JobSetMeta
    spec: JobSetSpec


# ---------------------------------------------------------------- building
def _pod_template(spec: LaunchSpec, master: str):
    from kubernetes import client as k

    lc, gke = spec.launch, spec.launch.gke
    args = spec.node_args(node_rank="$(JOB_COMPLETION_INDEX)", master_addr=master)
    env = [
        k.V1EnvVar(
            name="JOB_COMPLETION_INDEX",
            value_from=k.V1EnvVarSource(
                field_ref=k.V1ObjectFieldSelector(
                    field_path="metadata.annotations['batch.kubernetes.io/job-completion-index']"
                )
            ),
        ),
        *(k.V1EnvVar(name=n, value=v) for n, v in spec.env().items()),
    ]
    for name, ref in lc.secrets.items():
        secret, _, key = ref.partition("/")
        env.append(
            k.V1EnvVar(
                name=name,
                value_from=k.V1EnvVarSource(
                    secret_key_ref=k.V1SecretKeySelector(name=secret, key=key or name)
                ),
            )
        )
    limits = {"nvidia.com/gpu": str(spec.gpus_per_node)} if spec.gpu else None
    container = k.V1Container(
        name=CONTAINER,
        image=lc.image,
        command=args[:1],
        args=args[1:],
        env=env,
        ports=[k.V1ContainerPort(container_port=lc.torchrun.master_port, name="rendezvous")],
        resources=k.V1ResourceRequirements(limits=limits, requests=limits),
        volume_mounts=[
            k.V1VolumeMount(name="bucket", mount_path=spec.mount),
            k.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
    )
    if gke.volume_claim:
        bucket = k.V1Volume(
            name="bucket",
            persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(claim_name=gke.volume_claim),
        )
    else:
        # rename-dir-limit: the adapter is written to a temporary folder and renamed (flat buckets)
        options = "implicit-dirs,rename-dir-limit=10000"
        options += f",only-dir={spec.bucket.path}" if spec.bucket.path else ""
        bucket = k.V1Volume(
            name="bucket",
            csi=k.V1CSIVolumeSource(
                driver="gcsfuse.csi.storage.gke.io",
                volume_attributes={"bucketName": spec.bucket.name, "mountOptions": options},
            ),
        )
    selector: dict[str, str] = {}
    tolerations = []
    if spec.gpu is not None:
        selector["cloud.google.com/gke-accelerator"] = spec.gpu.gke
        tolerations.append(k.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"))
    if lc.spot:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append(
            k.V1Toleration(
                key="cloud.google.com/gke-spot", operator="Equal", value="true", effect="NoSchedule"
            )
        )
    annotations = {"gke-gcsfuse/volumes": "true"} if not gke.volume_claim else None
    return k.V1PodTemplateSpec(
        metadata=k.V1ObjectMeta(labels={"tuneline-job": spec.job_id}, annotations=annotations),
        spec=k.V1PodSpec(
            restart_policy="Never",
            service_account_name=gke.service_account,
            node_selector=selector or None,
            tolerations=tolerations or None,
            containers=[container],
            volumes=[bucket, k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory"))],
            termination_grace_period_seconds=120,  # time to save a checkpoint after SIGTERM
        ),
    )


def _job_spec(
    spec: LaunchSpec,
    master: str,
    *,
    backoff: int,
    subdomain: str | None = None,
    replace_preempted: bool = False,
):
    from kubernetes import client as k

    from tuneline.launch.spec import RETRYABLE_EXIT

    template = _pod_template(spec, master)
    if subdomain:
        template.spec.subdomain = subdomain
    rules = [
        k.V1PodFailurePolicyRule(
            action="FailJob",
            on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=CONTAINER, operator="In", values=NOT_RETRYABLE
            ),
        ),
        k.V1PodFailurePolicyRule(
            action="Count",
            on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=CONTAINER, operator="In", values=[RETRYABLE_EXIT]
            ),
        ),
    ]
    if replace_preempted:  # a pod evicted with its (spot) node is replaced without using up a retry
        rules.insert(
            0,
            k.V1PodFailurePolicyRule(
                action="Ignore",
                on_pod_conditions=[k.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget")],
            ),
        )
    return k.V1JobSpec(
        completion_mode="Indexed",
        completions=spec.nodes,
        parallelism=spec.nodes,
        backoff_limit=backoff,
        active_deadline_seconds=spec.launch.max_run_time,
        pod_failure_policy=k.V1PodFailurePolicy(rules=rules),
        template=template,
    )


def build_jobset(spec: LaunchSpec) -> dict:
    from kubernetes import client as k

    name = spec.job_id
    master = f"{name}-{RJOB}-0-0.{name}"
    template = k.V1JobTemplateSpec(
        metadata=k.V1ObjectMeta(labels={"tuneline-job": name}),
        spec=_job_spec(spec, master, backoff=0),  # a failed pod fails the Job: JobSet restarts the set
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": spec.launch.gke.namespace,
            "labels": spec.labels,
        },
        "spec": {
            "network": {"enableDNSHostnames": True, "subdomain": name},
            "failurePolicy": {
                "maxRestarts": spec.launch.max_retries,
                "rules": [
                    # exit 1-7: the pod failure policy failed the Job; a retry cannot help
                    {
                        "name": "notRetryable",
                        "action": "FailJobSet",
                        "onJobFailureReasons": ["PodFailurePolicy"],
                    },
                ],
            },
            "replicatedJobs": [
                {"name": RJOB, "replicas": 1, "template": k.ApiClient().sanitize_for_serialization(template)}
            ],
        },
    }
    JobSet.model_validate(body)
    return body


def build_indexed_job(spec: LaunchSpec):
    """Where JobSet is not installed: an indexed Job (retries per pod) plus a headless Service for DNS."""
    from kubernetes import client as k

    name = spec.job_id
    master = f"{name}-0.{name}"
    labels = {"tuneline-job": name}
    job = k.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k.V1ObjectMeta(name=name, namespace=spec.launch.gke.namespace, labels=labels),
        spec=_job_spec(
            spec, master, backoff=spec.launch.max_retries * spec.nodes, subdomain=name, replace_preempted=True
        ),
    )
    service = k.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k.V1ObjectMeta(name=name, namespace=spec.launch.gke.namespace, labels=labels),
        spec=k.V1ServiceSpec(
            cluster_ip="None",
            selector={"job-name": name},
            publish_not_ready_addresses=True,
            ports=[k.V1ServicePort(name="rendezvous", port=spec.launch.torchrun.master_port)],
        ),
    )
    return job, service


def render(spec: LaunchSpec) -> Rendered:
    from kubernetes import client as k

    if spec.bucket.protocol != "gs" and not spec.launch.gke.volume_claim:
        raise ConfigError(
            ["launch.gke.volume_claim: only gs:// buckets mount without a PersistentVolumeClaim; set one"]
        )
    if spec.launch.gke.kind == "jobset":
        body = build_jobset(spec)
        return Rendered(kind="JobSet", documents=[body], objects=[body], fmt="yaml")
    job, service = build_indexed_job(spec)
    api = k.ApiClient()
    docs = [api.sanitize_for_serialization(service), api.sanitize_for_serialization(job)]
    return Rendered(kind="Job+Service", documents=docs, objects=[service, job], fmt="yaml")


# ---------------------------------------------------------------- the cluster
def api_client(context: str | None = None):
    """From the kubeconfig (KUBECONFIG or ~/.kube/config), or in-cluster when running inside a pod."""
    from kubernetes import config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        from kubernetes import client

        return client.ApiClient()
    # KUBECONFIG is read now, not when the kubernetes package was imported
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"), context=context)


def submit(spec: LaunchSpec, rendered: Rendered) -> Submitted:
    from kubernetes import client as k

    api = api_client(spec.launch.gke.context)
    ns = spec.launch.gke.namespace
    if rendered.kind == "JobSet":
        k.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, rendered.objects[0], _headers=JSON
        )
        ref = f"{PREFIX}:jobset/{ns}/{spec.job_id}"
    else:
        service, job = rendered.objects
        k.CoreV1Api(api).create_namespaced_service(ns, service, _headers=JSON)
        k.BatchV1Api(api).create_namespaced_job(ns, job, _headers=JSON)
        ref = f"{PREFIX}:job/{ns}/{spec.job_id}"
    console = (
        f"https://console.cloud.google.com/kubernetes/workload/overview?pageState=(savedViews:(n:!('{ns}')))"
    )
    return Submitted(ref, console)


def _parse(ref: str) -> tuple[str, str, str]:
    kind, ns, name = ref.split(":", 1)[1].split("/")
    return kind, ns, name


def status(ref: str) -> dict:
    from kubernetes import client as k

    kind, ns, name = _parse(ref)
    api = api_client()
    if kind == "jobset":
        obj = k.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        # a custom object comes back as its JSON dict (typed ``object`` by the client)
        st = (obj.get("status") if isinstance(obj, dict) else None) or {}
        conditions = {c["type"]: c["status"] for c in st.get("conditions", [])}
        state = st.get("terminalState") or _state(conditions, "Completed")
        return {"job": ref, "state": state, "restarts": st.get("restarts", 0), "conditions": conditions}
    job = k.BatchV1Api(api).read_namespaced_job_status(name, ns)
    st = job.status or k.V1JobStatus()  # a job the controller has not seen yet has no status
    conditions = {c.type: c.status for c in (st.conditions or [])}
    state = _state(conditions, "Complete")
    return {
        "job": ref,
        "state": state,
        "active": st.active or 0,
        "succeeded": st.succeeded or 0,
        "failed": st.failed or 0,
    }


def _state(conditions: dict[str, str], done: str) -> str:
    if conditions.get(done) == "True":
        return "Completed"
    return "Failed" if conditions.get("Failed") == "True" else "Running"


def logs(ref: str) -> str:
    from kubernetes import client as k

    kind, ns, name = _parse(ref)
    core = k.CoreV1Api(api_client())
    selector = f"jobset.sigs.k8s.io/jobset-name={name}" if kind == "jobset" else f"job-name={name}"
    parts = []
    for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
        pod_name = pod.metadata.name if pod.metadata is not None else None
        if pod_name is None:  # a listed pod always has a name; the client types it optional
            continue
        text = core.read_namespaced_pod_log(pod_name, ns, container=CONTAINER, tail_lines=200)
        parts.append(f"==> {pod_name} <==\n{text}")
    return "\n".join(parts) or f"no pods of {name} yet"


def cancel(ref: str) -> str:
    from kubernetes import client as k

    kind, ns, name = _parse(ref)
    api = api_client()
    body = k.V1DeleteOptions(propagation_policy="Foreground")
    if kind == "jobset":
        k.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body=body)
    else:
        k.BatchV1Api(api).delete_namespaced_job(name, ns, body=body)
        k.CoreV1Api(api).delete_namespaced_service(name, ns)
    return f"deleted {kind} {ns}/{name} (pods get SIGTERM and checkpoint within the grace period)"
