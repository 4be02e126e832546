"""register: log the run to MLflow and create a registered model version of the adapter.

    tuneline register CONFIG [--run-dir RUN_DIR]

Parameters (the resolved config, secrets redacted), training curves, eval metrics and the run's
artifacts go to an MLflow run; the adapter becomes a new version of registry.model_name, tagged
with its lineage (registry/lineage.py) and a model card (registry/card.py), and gets the alias
``challenger``: ``tuneline models promote`` moves ``champion`` to it only if its gate passed.
Registering the same run directory again returns the existing version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tuneline.config import Config, to_dict
from tuneline.registry import store
from tuneline.registry.aliases import set_challenger
from tuneline.registry.card import CARD_ARTIFACT, card_body, card_heading
from tuneline.registry.lineage import lineage_tags
from tuneline.runs import RunDir, atomic_write_text
from tuneline.sections import EvalSection

log = logging.getLogger("tuneline.register")


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    mlflow_run_id: str
    tracking_uri: str


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def run(cfg: Config, run: RunDir) -> Registration:
    from mlflow.entities import Metric, Param, RunTag

    run.require("evaluate")
    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    shown_uri = to_dict(cfg)["registry"]["tracking_uri"] or uri  # never a secret in clear
    client = store.client(uri)
    name = cfg.model_name
    tags = lineage_tags(run)

    # 1. Same run directory registered before? Return that version instead of a duplicate.
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("tuneline.run_id") == run.run_id and mv.tags.get("tuneline.run_dir") == str(run.path):
            log.info("run already registered as %s version %s", name, mv.version)
            if mv.run_id and CARD_ARTIFACT not in {a.path for a in client.list_artifacts(mv.run_id)}:
                # an earlier register stopped between creating the version and logging its card
                card = card_heading(name, str(mv.version)) + card_body(run, dict(mv.tags))
                client.log_text(mv.run_id, card, CARD_ARTIFACT)
            return _finish(run, Registration(name, str(mv.version), mv.run_id, shown_uri))

    # 2. An MLflow run with params, the training curve, eval metrics and the artifacts.
    rid = store.open_run(client, cfg.experiment_name, run, cfg.registry.tracking_uri)
    summary = run.summary_model()
    ev = summary.eval or EvalSection()
    try:
        client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        params = [Param(k, v[:6000]) for k, v in _flatten(to_dict(cfg)).items()]
        already_live = summary.mlflow.live_metrics_complete if summary.mlflow else False
        metrics = [
            Metric(f"train_{k}", float(v), 0, int(m["step"]))
            for m in ([] if already_live else run.metrics())
            if "step" in m
            for k, v in m.items()
            if k not in ("step", "epoch") and isinstance(v, int | float)
        ]
        for who in ev.models or ("base", "tuned", "few_shot", "embedding_logreg"):
            for k, v in ev.scores(who).items():
                if isinstance(v, int | float):  # undefined metrics (null) are not logged
                    metrics.append(Metric(f"eval_{who}_{k}", float(v), 0, 0))
        privacy = summary.train.privacy if summary.train else None
        if privacy and privacy.dp:  # the epsilon the whole run spent (the curve is train_dp_epsilon)
            metrics.append(Metric("dp_epsilon", float(privacy.dp.epsilon), 0, int(privacy.dp.steps)))
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[i : i + 1000])
        counts = summary.data.counts if summary.data else {}
        client.log_batch(rid, tags=[RunTag("tuneline.data_counts", str(counts))])
        client.log_artifacts(rid, str(run.adapter_dir), "adapter")
        if run.eval_dir.is_dir():  # report.json, predictions.parquet, report.html
            client.log_artifacts(rid, str(run.eval_dir), "eval")
        if ev.gate is not None:
            client.log_batch(rid, tags=[RunTag("tuneline.gate_passed", str(ev.gate.passed).lower())])
        for f in (
            run.eval_file,
            run.config_file,
            run.provenance_file,
            run.data_manifest,
            run.predictions_file,
        ):
            if f.is_file():  # generated answers: absent from a run copied without them
                client.log_artifact(rid, str(f))
    except BaseException:
        client.set_terminated(rid, status="FAILED")
        raise
    client.set_terminated(rid, status="FINISHED")

    # 3. A registered model version whose source is the adapter artifact.
    # (MLflow 3's register_model("runs:/...") rejects a plain artifact folder: create the version directly.)
    if client.search_registered_models(f"name = '{name}'") == []:
        client.create_registered_model(name, description="Adapters fine-tuned with tuneline.")
    source = f"{client.get_run(rid).info.artifact_uri}/adapter"
    body = card_body(run, tags)  # before the version exists: a card that cannot be written stops here
    gate = tags.get("tuneline.gate_passed")
    mv = client.create_model_version(
        name,
        source=source,
        run_id=rid,
        tags=tags,
        description=f"Run {run.run_id}; base {tags.get('tuneline.base_model')}; gate "
        + {"true": "passed", "false": "FAILED"}.get(gate or "", "not configured")
        + ".",
    )
    version = str(mv.version)
    log.info("registered %s version %s from %s", name, version, source)

    # 4. The model card, with the run's artifacts and beside the run; the version becomes the challenger.
    card = card_heading(name, version) + body
    atomic_write_text(run.path / CARD_ARTIFACT, card)
    client.log_text(rid, card, CARD_ARTIFACT)
    set_challenger(client, name, version)
    return _finish(run, Registration(name, version, rid, shown_uri))


def _finish(run: RunDir, reg: Registration) -> Registration:
    run.update_summary(
        registry={
            "model_name": reg.model_name,
            "version": reg.version,
            "mlflow_run_id": reg.mlflow_run_id,
            "tracking_uri": reg.tracking_uri,
        }
    )
    return reg
