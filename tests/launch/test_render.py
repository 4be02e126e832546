"""--dry-run for every target: the rendered spec is what the official client types accept, and what
the golden files hold (regenerate them with TUNELINE_REGOLD=1 after an intended change)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneline.config import load_config
from tuneline.launch.spec import build_spec
from tuneline.launch.targets import get_target

GOLDEN = Path(__file__).parent / "golden"


def render(config: Path, target: str, *overrides: str):
    cfg = load_config(config, list(overrides))
    spec = build_spec(cfg, target, job_id="demo")
    return spec, get_target(target).render(spec)


def check_golden(name: str, text: str, tmp: Path | None = None) -> None:
    if tmp is not None:
        text = text.replace(str(tmp), "<TMP>")
    path = GOLDEN / name
    if os.environ.get("TUNELINE_REGOLD"):
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}; run with TUNELINE_REGOLD=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file (TUNELINE_REGOLD=1 to accept)"


def test_gcp_batch_job_parses_into_batch_v1(cloud_config):
    from google.cloud import batch_v1 as b

    spec, rendered = render(cloud_config, "gcp-batch")
    text = rendered.text()
    check_golden("gcp_batch.json", text)
    job = b.Job.from_json(text)  # raises ParseError on a misspelled field or a bad enum
    assert job == rendered.objects[0]  # the JSON round-trips to the very object built
    (group,) = job.task_groups
    assert group.task_count == 2 and group.task_count_per_node == 1 and group.require_hosts_file
    task = group.task_spec
    assert task.max_retry_count == 4 and task.max_run_duration.total_seconds() == 86400
    retry, fail = task.lifecycle_policies
    assert retry.action == b.LifecyclePolicy.Action.RETRY_TASK
    assert list(retry.action_condition.exit_codes) == [50001, 75]
    assert fail.action == b.LifecyclePolicy.Action.FAIL_TASK and 0 not in fail.action_condition.exit_codes
    (instances,) = job.allocation_policy.instances
    assert instances.install_gpu_drivers
    assert instances.policy.provisioning_model == b.AllocationPolicy.ProvisioningModel.SPOT
    assert instances.policy.machine_type == "a2-highgpu-1g"
    assert [(a.type_, a.count) for a in instances.policy.accelerators] == [("nvidia-tesla-a100", 1)]
    assert task.volumes[0].gcs.remote_path == "acme-tuneline/runs"
    # secrets by reference: the Secret Manager name, never a value
    assert dict(task.environment.secret_variables) == {
        "HF_TOKEN": "projects/acme-ml/secrets/hf-token/versions/latest"
    }
    assert "HF_TOKEN" not in task.environment.variables
    # a misspelled field does not parse
    broken = text.replace('"taskCount"', '"taskCont"')
    with pytest.raises(Exception, match="taskCont"):
        b.Job.from_json(broken)


@pytest.mark.integration
def test_batch_command_takes_rank_and_master_from_batch(cloud_config, tmp_path):
    """The container's sh -c script, run by a real shell with Batch's variables, calls tuneline node."""
    spec, rendered = render(cloud_config, "gcp-batch")
    container = rendered.objects[0].task_groups[0].task_spec.runnables[0].container
    assert container.entrypoint == "/bin/sh" and container.commands[0] == "-c"
    hosts = tmp_path / "hosts"
    hosts.write_text("10.128.0.7\n10.128.0.8\n")
    args = _run_with_fake_tuneline(
        tmp_path, container.commands[1], {"BATCH_TASK_INDEX": "1", "BATCH_HOSTS_FILE": str(hosts)}
    )
    assert args[:3] == ["node", "/mnt/disks/tuneline/jobs/demo/config.yaml", "--job-id"]
    assert _opt(args, "--node-rank") == "1" and _opt(args, "--master-addr") == "10.128.0.7"
    assert _opt(args, "--nnodes") == "2" and _opt(args, "--workdir") == "/mnt/disks/tuneline"


def _run_with_fake_tuneline(tmp: Path, script: str, env: dict[str, str]) -> list[str]:
    """Run a rendered shell script with a `tuneline` on PATH that prints its arguments as JSON."""
    fake = tmp / "bin" / "tuneline"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\nexec python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    fake.chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{fake.parent}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _opt(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vertex_custom_job_parses_into_aiplatform_v1(cloud_config):
    from google.cloud import aiplatform_v1 as a

    spec, rendered = render(cloud_config, "vertex")
    text = rendered.text()
    check_golden("vertex.json", text)
    job = a.CustomJob.from_json(text)
    chief, workers = job.job_spec.worker_pool_specs
    assert chief.replica_count == 1 and workers.replica_count == 1  # node 0, then the other node
    for pool in (chief, workers):
        assert pool.machine_spec.accelerator_type == a.AcceleratorType.NVIDIA_TESLA_A100
        assert pool.machine_spec.accelerator_count == 1
        assert pool.container_spec.image_uri == "us-docker.pkg.dev/acme/ml/tuneline:0.1.0"
        assert pool.container_spec.command == ["tuneline"]
        assert "--node-rank" not in pool.container_spec.args  # from CLUSTER_SPEC at run time
    assert job.job_spec.scheduling.restart_job_on_worker_restart
    assert job.job_spec.scheduling.strategy == a.Scheduling.Strategy.SPOT
    env = {e.name: e.value for e in chief.container_spec.env}
    assert json.loads(env["TUNELINE_SECRET_REFS"]) == {
        "HF_TOKEN": "projects/acme-ml/secrets/hf-token/versions/latest"
    }
    assert "HF_TOKEN" not in env
    assert "/gcs/acme-tuneline/runs/jobs/demo/config.yaml" in chief.container_spec.args
    with pytest.raises(Exception, match="restartJobOnWorkerRestrat"):
        a.CustomJob.from_json(text.replace("restartJobOnWorkerRestart", "restartJobOnWorkerRestrat"))


def test_vertex_node_reads_rank_and_master_from_cluster_spec():
    from tuneline.launch.node import vertex_cluster

    cluster = {
        "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
        "workerpool1": ["w1-0:2222", "w1-1:2222"],
    }
    chief = {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": "workerpool0", "index": 0}})}
    second = {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": "workerpool1", "index": 1}})}
    assert vertex_cluster(chief) == (0, "cmle-training-workerpool0-ab-0")
    assert vertex_cluster(second) == (2, "cmle-training-workerpool0-ab-0")
    assert vertex_cluster({}) is None


def test_gke_jobset_passes_the_schema_check_and_kubernetes_models(cloud_config):
    from kubernetes.client import V1JobTemplateSpec

    from tuneline.launch.targets.gke import JobSet

    spec, rendered = render(cloud_config, "gke")
    text = rendered.text()
    check_golden("gke_jobset.yaml", text)
    (doc,) = list(yaml.safe_load_all(text))
    jobset = JobSet.model_validate(doc)
    assert jobset.spec.failurePolicy.maxRestarts == 4 and jobset.spec.network.enableDNSHostnames
    (rjob,) = doc["spec"]["replicatedJobs"]
    template = V1JobTemplateSpec.model_validate(rjob["template"])
    job = template.spec
    assert job.completion_mode == "Indexed" and job.completions == job.parallelism == 2
    pod = job.template.spec
    assert pod.node_selector == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-a100",
        "cloud.google.com/gke-spot": "true",
    }
    (container,) = pod.containers
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert _opt(container.args, "--master-addr") == "demo-node-0-0.demo"  # JobSet's stable hostname
    assert _opt(container.args, "--node-rank") == "$(JOB_COMPLETION_INDEX)"
    env = {e.name: e for e in container.env}
    assert env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path.endswith("job-completion-index']")
    assert env["HF_TOKEN"].value is None
    assert env["HF_TOKEN"].value_from.secret_key_ref.name == "hf-token"
    assert pod.volumes[0].csi.driver == "gcsfuse.csi.storage.gke.io"
    assert pod.service_account_name == "trainer"
    # the check refuses what the controller would refuse
    bad = json.loads(json.dumps(doc))
    bad["spec"]["failurePolicy"]["maxRestart"] = 1
    with pytest.raises(ValueError, match="maxRestart"):
        JobSet.model_validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containerz"] = []
    with pytest.raises(ValueError):
        JobSet.model_validate(bad)


def test_gke_indexed_job_and_headless_service_fallback(cloud_config):
    from kubernetes.client import V1Job, V1Service

    spec, rendered = render(cloud_config, "gke", "launch.gke.kind=indexed-job")
    text = rendered.text()
    check_golden("gke_indexed_job.yaml", text)
    service_doc, job_doc = list(yaml.safe_load_all(text))
    service, job = V1Service.model_validate(service_doc), V1Job.model_validate(job_doc)
    assert service.spec.cluster_ip == "None" and service.spec.selector == {"job-name": "demo"}
    assert job.spec.template.spec.subdomain == "demo"
    assert _opt(job.spec.template.spec.containers[0].args, "--master-addr") == "demo-0.demo"
    assert job.spec.backoff_limit == 8  # max_retries per node
    rules = job.spec.pod_failure_policy.rules
    assert rules[0].action == "Ignore" and rules[0].on_pod_conditions[0].type == "DisruptionTarget"


@pytest.mark.integration
def test_skypilot_yaml_builds_torchrun_from_skypilot_variables(cloud_config, tmp_path):
    spec, rendered = render(cloud_config, "skypilot")
    text = rendered.text()
    check_golden("skypilot.yaml", text)
    task = yaml.safe_load(text)
    assert task["num_nodes"] == 2
    assert task["resources"]["accelerators"] == "A100:1" and task["resources"]["use_spot"] is True
    assert task["resources"]["job_recovery"]["max_restarts_on_errors"] == 4
    assert task["file_mounts"] == {"/mnt/tuneline": {"source": "gs://acme-tuneline/runs", "mode": "MOUNT"}}
    assert task["secrets"] == {"HF_TOKEN": None}  # by name: the value comes from `--secret HF_TOKEN`
    args = _run_with_fake_tuneline(
        tmp_path, task["run"], {"SKYPILOT_NODE_RANK": "1", "SKYPILOT_NODE_IPS": "10.0.0.5\n10.0.0.6"}
    )
    assert _opt(args, "--node-rank") == "1" and _opt(args, "--master-addr") == "10.0.0.5"
    assert _opt(args, "--nnodes") == "2" and _opt(args, "--workdir") == "/mnt/tuneline"


def test_skypilot_yaml_loads_in_skypilot_when_available(cloud_config, tmp_path, monkeypatch):
    """Only in an environment with SkyPilot (it conflicts with tuneline's pins; see the README)."""
    sky = pytest.importorskip("sky")
    monkeypatch.setenv("HOME", str(tmp_path))  # import sky writes into ~/.sky
    spec, rendered = render(cloud_config, "skypilot")
    path = tmp_path / "task.yaml"
    path.write_text(rendered.text())
    task = sky.Task.from_yaml(str(path))
    assert task.num_nodes == 2


def test_torchrun_and_local_specs(cloud_config, tmp_path):
    bucket = f"launch.bucket={tmp_path}/bucket"
    spec, rendered = render(cloud_config, "torchrun", bucket, "launch.torchrun.master_addr=10.1.2.3")
    check_golden("torchrun.json", rendered.text(), tmp_path)
    doc = rendered.documents[0]
    assert [n["node_rank"] for n in doc["nodes"]] == [0, 1]
    launcher = doc["nodes"][1]["torchrun"]
    assert "--rdzv-backend=c10d" in launcher and "--rdzv-endpoint=10.1.2.3:29500" in launcher
    assert "--max-restarts=3" in launcher and "--rdzv-id=demo" in launcher
    assert "--rdzv-conf=is_host=false,join_timeout=3600" in launcher  # node 0 hosts the store
    spec, rendered = render(cloud_config, "local", bucket, "launch.nodes=1")
    check_golden("local.json", rendered.text(), tmp_path)
    assert rendered.documents[0]["nodes"][0]["command"][:2] == ["tuneline", "node"]


def test_launch_problems_are_reported_together(cloud_config):
    from tuneline.errors import ConfigError

    cfg = load_config(cloud_config, ["launch.image=null", "launch.project=null", "launch.bucket=s3://b/x"])
    with pytest.raises(ConfigError) as err:
        build_spec(cfg, "gcp-batch")
    text = str(err.value)
    assert "launch.image" in text and "launch.project" in text and "cannot mount s3://" in text
    with pytest.raises(ConfigError, match="did you mean 'vertex'"):
        build_spec(cfg, "vertx")
    with pytest.raises(ConfigError, match="HF TOKEN"):
        load_config(cloud_config, ["launch.secrets={'HF TOKEN': x}"])


def test_cli_dry_run_writes_and_prints_the_spec_and_the_cost(cloud_config, workdir):
    from typer.testing import CliRunner

    from tuneline.cli import app

    result = CliRunner().invoke(
        app,
        ["launch", str(cloud_config), "--target", "vertex", "--dry-run", "--out", "spec", "--job-id", "demo"],
    )
    assert result.exit_code == 0, result.output
    written = (workdir / "spec" / "vertex.json").read_text()
    assert json.loads(written)["displayName"] == "demo"
    assert written in result.stdout
    cost = json.loads((workdir / "spec" / "cost.json").read_text())
    assert cost["accelerators"] == 2 and cost["spot"] and cost["price_per_hour"] == 1.0
    assert cost["steps"] == 1000 and cost["accelerator_hours"] > 0
    assert cost["cost"] == pytest.approx(cost["accelerator_hours"] * 1.0)
    assert "cost preview: 2 x A100-40GB (spot)" in result.stderr
    assert "is not under the bucket's mount /gcs/acme-tuneline/runs" in result.stderr  # local data
    assert not any(workdir.glob("**/jobs/demo/config.yaml"))  # a dry run stages nothing
