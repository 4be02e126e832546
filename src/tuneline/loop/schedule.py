"""Triggers for ``tuneline loop run``: the schedule for the engines users already run, and the drift alert.

    tuneline loop schedule CONFIG [--cron "0 3 * * *"] [--out DIR]

- a Kubernetes ``CronJob`` (kubernetes client models; validated with ``V1CronJob.model_validate``, which
  rejects unknown or mistyped fields, as the launch specs are), ``concurrencyPolicy: Forbid`` so two runs
  never overlap (the loop's state file is the second line of defence);
- a Cloud Scheduler job whose HTTP target creates the Cloud Batch job of
  ``tuneline launch --target gcp-batch`` (launch/targets/gcp_batch.py) with the container command replaced
  by ``tuneline loop run``; built as ``google.cloud.scheduler_v1.Job`` when that client is installed, else
  as its REST JSON, checked field by field;
- a crontab line;
- a Prometheus alerting rule on ``tuneline:drift_alert`` (serving/metrics.py): an Alertmanager receiver
  (webhook) can start the same job when the served inputs drift. Checked with ``promtool check rules`` when
  promtool is on PATH, else parsed and checked for the fields Prometheus requires.
"""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tuneline.config import Config
from tuneline.errors import ConfigError

DEFAULT_CRON = "0 3 * * *"


def _command(config_path: str) -> list[str]:
    return ["tuneline", "loop", "run", config_path]


def _name(cfg: Config) -> str:
    from tuneline.launch.spec import job_name

    return job_name(f"{cfg.run.name}-loop")


def cronjob(cfg: Config, config_path: str, cron: str = DEFAULT_CRON) -> dict[str, Any]:
    """The CronJob as a wire dict, after validation through the kubernetes client's models."""
    from kubernetes.client import (
        ApiClient,
        V1Container,
        V1CronJob,
        V1CronJobSpec,
        V1EnvVar,
        V1JobSpec,
        V1JobTemplateSpec,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
    )

    image = cfg.launch.image or "ghcr.io/OWNER/tuneline:latest"
    name = _name(cfg)
    labels = {"app.kubernetes.io/name": "tuneline", "tuneline-loop": name}
    container = V1Container(
        name="loop",
        image=image,
        command=_command(config_path),
        env=[V1EnvVar(name="HF_HUB_OFFLINE", value="1")],
    )
    pod = V1PodSpec(
        containers=[container], restart_policy="Never", service_account_name=cfg.launch.gke.service_account
    )
    job = V1JobSpec(
        backoff_limit=1, template=V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels), spec=pod)
    )
    obj = V1CronJob(
        api_version="batch/v1",
        kind="CronJob",
        metadata=V1ObjectMeta(name=name, namespace=cfg.launch.gke.namespace, labels=labels),
        spec=V1CronJobSpec(
            schedule=cron,
            concurrency_policy="Forbid",
            starting_deadline_seconds=3600,
            successful_jobs_history_limit=3,
            failed_jobs_history_limit=3,
            job_template=V1JobTemplateSpec(spec=job),
        ),
    )
    doc = ApiClient().sanitize_for_serialization(obj)
    V1CronJob.model_validate(doc)  # raises on unknown or mistyped fields
    return doc


def batch_job(cfg: Config, config_path: str) -> dict[str, Any]:
    """The Cloud Batch job of `tuneline launch --target gcp-batch`, running `tuneline loop run`."""
    from google.cloud import batch_v1 as b

    from tuneline.launch.spec import build_spec
    from tuneline.launch.targets.gcp_batch import build_job

    spec = build_spec(cfg, "gcp-batch", job_id=_name(cfg))
    job = build_job(spec)
    for group in job.task_groups:
        for runnable in group.task_spec.runnables:
            runnable.container.entrypoint = "tuneline"
            runnable.container.commands[:] = _command(config_path)[1:]
    return json.loads(
        b.Job.to_json(job, use_integers_for_enums=False, always_print_fields_with_no_presence=False)
    )


SCHEDULER_FIELDS = {
    "name",
    "description",
    "schedule",
    "timeZone",
    "httpTarget",
    "retryConfig",
    "attemptDeadline",
}
HTTP_FIELDS = {"uri", "httpMethod", "headers", "body", "oauthToken"}


def scheduler_job(cfg: Config, config_path: str, cron: str = DEFAULT_CRON) -> dict[str, Any]:
    """A Cloud Scheduler job (REST JSON) that creates the Batch job on schedule."""
    project, region = cfg.launch.project, cfg.launch.region
    if not project or not region:
        raise ConfigError(
            ["launch.project and launch.region are needed for the Cloud Scheduler job"],
            hint="set them as for `tuneline launch --target gcp-batch`",
        )
    name = _name(cfg)
    body = json.dumps(batch_job(cfg, config_path)).encode()
    sa = cfg.launch.service_account or f"tuneline@{project}.iam.gserviceaccount.com"
    doc: dict[str, Any] = {
        "name": f"projects/{project}/locations/{region}/jobs/{name}",
        "description": "tuneline loop run: collect, select, retrain, canary (idempotent)",
        "schedule": cron,
        "timeZone": "Etc/UTC",
        "httpTarget": {
            "uri": f"https://batch.googleapis.com/v1/projects/{project}/locations/{region}/jobs",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(body).decode(),
            "oauthToken": {
                "serviceAccountEmail": sa,
                "scope": "https://www.googleapis.com/auth/cloud-platform",
            },
        },
    }
    validate_scheduler(doc)
    return doc


def validate_scheduler(doc: dict[str, Any]) -> None:
    """Through google.cloud.scheduler_v1.Job when installed (unknown fields and bad enums raise), else a check
    of the REST shape."""
    try:
        from google.cloud import scheduler_v1
    except ImportError:
        pass
    else:
        scheduler_v1.Job.from_json(json.dumps(doc))
        return
    unknown = set(doc) - SCHEDULER_FIELDS
    unknown |= {f"httpTarget.{k}" for k in set(doc["httpTarget"]) - HTTP_FIELDS}
    if unknown:
        raise ValueError(f"unknown Cloud Scheduler job fields: {sorted(unknown)}")
    if doc["httpTarget"]["httpMethod"] not in ("POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        raise ValueError("httpTarget.httpMethod is not an HTTP method")
    base64.b64decode(doc["httpTarget"]["body"], validate=True)
    if len(doc["schedule"].split()) != 5:
        raise ValueError(f"schedule {doc['schedule']!r} is not a five-field cron expression")


def crontab_line(config_path: str, cron: str = DEFAULT_CRON, workdir: str | None = None) -> str:
    cd = f"cd {shlex.quote(workdir)} && " if workdir else ""
    return f"{cron} {cd}OMP_NUM_THREADS=1 {shlex.join(_command(config_path))} >> loop.log 2>&1"


def alert_rules(cfg: Config, for_: str = "15m") -> dict[str, Any]:
    name = cfg.serve.model_name or cfg.model_name
    return {
        "groups": [
            {
                "name": "tuneline-loop",
                "rules": [
                    {
                        "alert": "TunelineInputDrift",
                        "expr": "max by (job) (tuneline:drift_alert) > 0",
                        "for": for_,
                        "labels": {
                            "severity": "warning",
                            "tuneline_model": name,
                            "action": "tuneline-loop-run",
                        },
                        "annotations": {
                            "summary": "Served inputs drifted from the training profile",
                            "description": "tuneline:drift_alert has been 1 for "
                            + for_
                            + " on {{ $labels.job }}: "
                            "route this alert (label action=tuneline-loop-run) to a webhook that starts the "
                            "tuneline loop job (kubectl create job --from=cronjob/" + _name(cfg) + ").",
                        },
                    }
                ],
            }
        ]
    }


RULE_FIELDS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def validate_rules(text: str) -> str:
    """``promtool check rules`` when promtool is installed; else parse and check the required fields.
    Returns how it was checked."""
    promtool = shutil.which("promtool")
    if promtool:
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(text)
        proc = subprocess.run(
            [promtool, "check", "rules", f.name], capture_output=True, text=True, check=False
        )
        Path(f.name).unlink(missing_ok=True)
        if proc.returncode != 0:
            raise ValueError(f"promtool check rules failed: {proc.stdout}{proc.stderr}")
        return "promtool"
    doc = yaml.safe_load(text)
    for g in doc["groups"]:
        if not g.get("name") or not isinstance(g.get("rules"), list):
            raise ValueError("each rule group needs a name and a rules list")
        for r in g["rules"]:
            if set(r) - RULE_FIELDS or "alert" not in r or not str(r.get("expr", "")).strip():
                raise ValueError(f"bad alerting rule {r}")
            if "tuneline:drift_alert" not in r["expr"]:
                raise ValueError("the rule does not watch tuneline:drift_alert")
            unit = str(r.get("for", "0s"))[-1]
            if unit not in "smhdwy":
                raise ValueError(f"for: {r['for']!r} is not a Prometheus duration")
    return "parsed"


def render_all(cfg: Config, config_path: str, out: Path, cron: str = DEFAULT_CRON) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    (out / "cronjob.yaml").write_text(yaml.safe_dump(cronjob(cfg, config_path, cron), sort_keys=False))
    written["cronjob"] = str(out / "cronjob.yaml")
    try:
        (out / "cloud-scheduler-job.json").write_text(
            json.dumps(scheduler_job(cfg, config_path, cron), indent=1)
        )
        written["cloud_scheduler"] = str(out / "cloud-scheduler-job.json")
    except ConfigError as exc:
        written["cloud_scheduler"] = f"skipped: {exc}"
    (out / "crontab.txt").write_text(crontab_line(config_path, cron) + "\n")
    written["crontab"] = crontab_line(config_path, cron)
    rules = yaml.safe_dump(alert_rules(cfg), sort_keys=False)
    written["alert_rules_checked_by"] = validate_rules(rules)
    (out / "drift-alert.rules.yml").write_text(rules)
    written["alert_rules"] = str(out / "drift-alert.rules.yml")
    return written
