"""Submission, status, logs and cancel through each engine's official client, against a loopback
stand-in HTTP server that records the requests (Google Cloud and a cluster are not reachable here)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.launch.standin import Request
from tuneline.cli import app

BATCH = "/v1/projects/acme-ml/locations/us-central1/jobs"
VERTEX = "/v1/projects/acme-ml/locations/us-central1/customJobs"
JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/default/jobsets"


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


@pytest.fixture
def google(standin, monkeypatch, memory_gs):
    monkeypatch.setenv("TUNELINE_GCP_ENDPOINT", standin.url)
    return standin


def test_gcp_batch_submit_status_logs_cancel(cloud_config, google, memory_gs):
    jobs: dict[str, dict] = {}

    def handler(req: Request):
        if req.method == "POST" and req.path == BATCH:
            name = f"{BATCH[4:]}/{req.query['jobId'][0]}"
            jobs[name] = {**req.body, "name": name, "uid": "demo-1a2b", "status": {"state": "QUEUED"}}
            return 200, jobs[name]
        if req.method == "GET" and req.path.startswith(BATCH + "/"):
            job = jobs[req.path[4:]]
            event = {"description": "Job state is set from QUEUED to RUNNING", "type": "STATUS_CHANGED"}
            return 200, {**job, "status": {"state": "RUNNING", "statusEvents": [event]}}
        if req.method == "POST" and req.path.endswith(":cancel"):
            return 200, {"name": "projects/acme-ml/locations/us-central1/operations/op-1", "done": False}
        return 404, {"error": {"code": 404, "message": req.target}}

    google.handler = handler
    result = cli("launch", str(cloud_config), "--target", "gcp-batch", "--job-id", "demo", "--out", "spec")
    assert result.exit_code == 0, result.output
    ref = "gcp-batch:projects/acme-ml/locations/us-central1/jobs/demo"
    assert result.stdout.strip() == ref
    assert "console.cloud.google.com/batch/jobsDetail/regions/us-central1/jobs/demo" in result.stderr

    (create,) = google.only("POST")
    assert create.path == BATCH and create.query["jobId"] == ["demo"]
    # camelCase JSON with enums as integers, as the REST API takes it: the same Job as the written spec
    from google.cloud import batch_v1 as b

    sent = b.Job.from_json(json.dumps(create.body))
    assert sent == b.Job.from_json((Path("spec") / "gcp_batch.json").read_text())
    task = create.body["taskGroups"][0]["taskSpec"]
    assert task["lifecyclePolicies"][0] == {"action": 1, "actionCondition": {"exitCodes": [50001, 75]}}
    assert sent.allocation_policy.instances[0].policy.provisioning_model.name == "SPOT"
    # the resolved config is staged in the bucket, where every node reads it
    staged = memory_gs.cat("gs://acme-tuneline/runs/jobs/demo/config.yaml").decode()
    assert yaml.safe_load(staged)["launch"]["secrets"] == {"HF_TOKEN": "hf-token"}  # a name, not a value

    status = cli("jobs", "status", ref)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["state"] == "RUNNING"
    assert google.requests[-1].target == f"GET {BATCH}/demo"
    logs = cli("jobs", "logs", ref)
    assert "QUEUED to RUNNING" in logs.stdout and 'labels.job_uid=\\"demo-1a2b\\"' not in logs.stdout
    assert 'labels.job_uid="demo-1a2b"' in logs.stdout
    cancel = cli("jobs", "cancel", ref)
    assert cancel.exit_code == 0, cancel.output
    assert google.requests[-1].target == f"POST {BATCH}/demo:cancel"


def test_vertex_submit_status_cancel(cloud_config, google):
    name = f"{VERTEX[4:]}/4471"

    def handler(req: Request):
        if req.method == "POST" and req.path == VERTEX:
            return 200, {**req.body, "name": name, "state": "JOB_STATE_PENDING"}
        if req.method == "GET" and req.path == f"/v1/{name}":
            return 200, {"name": name, "displayName": "demo", "state": "JOB_STATE_RUNNING"}
        if req.method == "POST" and req.path == f"/v1/{name}:cancel":
            return 200, {}
        return 404, {"error": {"code": 404, "message": req.target}}

    google.handler = handler
    result = cli("launch", str(cloud_config), "--target", "vertex", "--job-id", "demo", "--out", "spec")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"vertex:{name}"
    (create,) = google.only("POST")
    assert create.path == VERTEX
    from google.cloud import aiplatform_v1 as a

    sent = a.CustomJob.from_json(json.dumps(create.body))
    assert sent == a.CustomJob.from_json((Path("spec") / "vertex.json").read_text())
    assert sent.job_spec.scheduling.strategy == a.Scheduling.Strategy.SPOT
    assert [p["replicaCount"] for p in create.body["jobSpec"]["workerPoolSpecs"]] in (["1", "1"], [1, 1])

    status = cli("jobs", "status", f"vertex:{name}")
    assert json.loads(status.stdout)["state"] == "JOB_STATE_RUNNING", status.output
    assert cli("jobs", "cancel", f"vertex:{name}").exit_code == 0
    assert google.requests[-1].target == f"POST /v1/{name}:cancel"


def test_vertex_node_resolves_secret_references_through_secret_manager(standin):
    from tuneline.launch.node import resolve_secret_refs

    version = "projects/acme-ml/secrets/hf-token/versions/latest"
    standin.handler = lambda req: (
        (200, {"name": version, "payload": {"data": base64.b64encode(b"hf_secret_value").decode()}})
        if req.target == f"GET /v1/{version}:access"
        else (404, {"error": {"code": 404}})
    )
    env = {
        "TUNELINE_SECRET_REFS": json.dumps({"HF_TOKEN": version}),
        "TUNELINE_SECRET_MANAGER_ENDPOINT": standin.url,
    }
    assert resolve_secret_refs(env) == ["HF_TOKEN"]
    assert env["HF_TOKEN"] == "hf_secret_value"
    assert [r.target for r in standin.requests] == [f"GET /v1/{version}:access"]


@pytest.fixture
def cluster(standin, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": standin.url}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return standin


def test_gke_jobset_apply_status_logs_cancel(cloud_config, cluster, memory_gs):
    stored: dict = {}

    def handler(req: Request):
        if req.target == f"POST {JOBSETS}":
            stored.update(req.body)
            return 201, req.body
        if req.target == f"GET {JOBSETS}/demo":
            return 200, {
                **stored,
                "status": {"restarts": 1, "conditions": [{"type": "Completed", "status": "False"}]},
            }
        if req.target == "GET /api/v1/namespaces/default/pods":
            pod = {"metadata": {"name": "demo-node-0-0-x7k2p", "namespace": "default"}}
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]}
        if req.target == "GET /api/v1/namespaces/default/pods/demo-node-0-0-x7k2p/log":
            return 200, "step 300: loss 0.41\n"
        if req.target == f"DELETE {JOBSETS}/demo":
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 404, {"kind": "Status", "code": 404, "message": req.target}

    cluster.handler = handler
    result = cli("launch", str(cloud_config), "--target", "gke", "--job-id", "demo", "--out", "spec")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "gke:jobset/default/demo"
    (create,) = cluster.only("POST")
    assert create.headers["authorization"] == "Bearer t0ken", create.headers
    assert create.headers["Content-Type"] == "application/json"
    assert create.body == yaml.safe_load((Path("spec") / "gke.yaml").read_text())
    assert create.body["spec"]["failurePolicy"]["maxRestarts"] == 4

    status = json.loads(cli("jobs", "status", "gke:jobset/default/demo").stdout)
    assert status == {
        "job": "gke:jobset/default/demo",
        "state": "Running",
        "restarts": 1,
        "conditions": {"Completed": "False"},
    }
    logs = cli("jobs", "logs", "gke:jobset/default/demo")
    assert "step 300: loss 0.41" in logs.stdout
    pods = [r for r in cluster.requests if r.path == "/api/v1/namespaces/default/pods"]
    assert pods[0].query["labelSelector"] == ["jobset.sigs.k8s.io/jobset-name=demo"]
    assert cli("jobs", "cancel", "gke:jobset/default/demo").exit_code == 0
    delete = cluster.requests[-1]
    assert delete.target == f"DELETE {JOBSETS}/demo" and delete.body["propagationPolicy"] == "Foreground"


def test_gke_indexed_job_and_service_where_jobset_is_absent(cloud_config, cluster, memory_gs):
    def handler(req: Request):
        if req.method == "POST":
            return 201, req.body
        if req.target == "GET /apis/batch/v1/namespaces/default/jobs/demo/status":
            return 200, {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "demo"},
                "status": {"active": 2, "failed": 1},
            }
        if req.target == "DELETE /apis/batch/v1/namespaces/default/jobs/demo":
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if req.target == "DELETE /api/v1/namespaces/default/services/demo":  # answers with the Service
            return 200, {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "demo"}}
        return 404, {"kind": "Status", "code": 404}

    cluster.handler = handler
    result = cli(
        "launch",
        str(cloud_config),
        "--target",
        "gke",
        "--job-id",
        "demo",
        "--set",
        "launch.gke.kind=indexed-job",
    )
    assert result.exit_code == 0, result.output
    service, job = cluster.only("POST")
    assert (
        service.path == "/api/v1/namespaces/default/services" and service.body["spec"]["clusterIP"] == "None"
    )
    assert (
        job.path == "/apis/batch/v1/namespaces/default/jobs"
        and job.body["spec"]["completionMode"] == "Indexed"
    )
    status = json.loads(cli("jobs", "status", "gke:job/default/demo").stdout)
    assert status["state"] == "Running" and status["active"] == 2 and status["failed"] == 1
    assert cli("jobs", "cancel", "gke:job/default/demo").exit_code == 0
    assert [r.target for r in cluster.only("DELETE")] == [
        "DELETE /apis/batch/v1/namespaces/default/jobs/demo",
        "DELETE /api/v1/namespaces/default/services/demo",
    ]


def test_skypilot_submits_through_the_sky_command(cloud_config, tmp_path, monkeypatch, memory_gs):
    """SkyPilot is not installed (it conflicts with our pins): a stand-in `sky` records its call."""
    record = tmp_path / "sky-call.json"
    fake = tmp_path / "bin" / "sky"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        "call = {'argv': sys.argv[1:], 'yaml': open(sys.argv[-1]).read()}\n"
        f"json.dump(call, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    result = cli("launch", str(cloud_config), "--target", "skypilot", "--job-id", "demo", "--out", "spec")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "skypilot:demo"
    call = json.loads(record.read_text())
    assert call["argv"][:-1] == ["jobs", "launch", "-y", "-d", "-n", "demo", "--secret", "HF_TOKEN"]
    assert call["yaml"] == (Path("spec") / "skypilot.yaml").read_text()
