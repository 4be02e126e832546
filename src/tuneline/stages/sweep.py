"""sweep: candidate bases, methods and precisions as trials of one Optuna study, ending in a frontier.

    tuneline sweep CONFIG [--worker]
    tuneline sweep promote CONFIG

1. Every candidate's config is built and validated first (all problems reported at once).
2. The data is prepared once into <output_dir>/<run.name>/sweep/<study>/prepared; every trial's run
   directory (…/trials/<key>/) starts from a copy of it: the same snapshot, the same test records.
3. The study (sweep/study.py) hands out trials; each is a full run: train (the val loss curve reported to
   Optuna's pruner when sweep.pruner is set), then the usual evaluation, in a nested MLflow run under the
   sweep's parent run. Interrupted and rerun, a sweep continues: completed trials are kept, an interrupted
   trial resumes from its newest valid checkpoint (the train stage's own resume).
4. When no trial is left: frontier.json and report.html (sweep/frontier.py): every trial's metric with CI
   against its costs, the Pareto front, and the recommendation, the cheapest trial non-inferior to the best.
   ``--worker`` only runs trials; the plain command also waits for other workers and writes the frontier.
``tuneline sweep promote CONFIG`` registers the recommended trial and promotes it if its gate passed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneline.artifacts import EvalReport
from tuneline.config import Config, config_hash, with_overrides
from tuneline.errors import RunDirError, SweepError, TrainingInterrupted
from tuneline.runs import RunDir, atomic_dir, atomic_write_json, atomic_write_text
from tuneline.sections import BaseModelInfo, TrainSection
from tuneline.stages import evaluate, train
from tuneline.stages.pipeline import Reporter, preflight, run_stage
from tuneline.sweep import plan
from tuneline.sweep import study as S
from tuneline.sweep.frontier import Predictions, TrialOutcome, build

log = logging.getLogger("tuneline.sweep")

PREPARE_WAIT_S = 1800  # how long a second worker waits for the first to prepare the data


@dataclass(frozen=True)
class SweepResult:
    root: Path
    frontier: dict | None  # None for a worker, which only runs trials
    ran: list[str]  # keys of the trials this process ran (or finished)


def sweep_dir(cfg: Config) -> Path:
    return cfg.run.output_dir / cfg.run.name / "sweep" / S.study_name(cfg)


def metric_of(cfg: Config) -> str:
    return plan.sweep_of(cfg).metric or cfg.eval.gate.primary or "roc_auc"


def run(
    cfg: Config, config_path: Path | None = None, *, worker: bool = False, report: Reporter | None = None
) -> SweepResult:
    if cfg.sweep is None:
        raise SweepError(
            "the config has no sweep section", hint="add sweep: {candidates: [...]} (see README)"
        )
    # 1. Every trial config, validated up front; costs that need a price must have one.
    specs = plan.check_all(cfg)
    for spec in specs or []:
        preflight(plan.trial_config(cfg, spec.key, spec.overrides))
    metric = metric_of(cfg)
    if cfg.sweep.cost_metric in ("cost_per_1k", "train_cost") and cfg.train.cost.price_per_hour <= 0:
        raise SweepError(
            f"sweep.cost_metric {cfg.sweep.cost_metric} needs a price, but train.cost.price_per_hour is 0",
            hint="set train.cost.price_per_hour (what an hour of this machine costs), or another cost_metric",
        )
    if cfg.sweep.pruner != "none" and cfg.train.eval_steps is None:
        raise SweepError(
            f"sweep.pruner {cfg.sweep.pruner} prunes on the val loss curve, but train.eval_steps is unset",
            hint="set train.eval_steps (and give data.split.val a share)",
        )
    _quiet_optuna()
    root = sweep_dir(cfg)
    # 2. The data, prepared once for every trial.
    prepared = ensure_prepared(cfg, config_path, root, report)
    # 3. Trials, until the study has none left for this worker.
    handle = S.open_study(cfg, metric, on_create=lambda study: _parent_run(cfg, study))
    ran: list[str] = []
    while True:
        study, trial = S.next_trial(handle)
        if study == "wait":
            time.sleep(cfg.sweep.heartbeat_s)
            continue
        if study is None:
            break
        ran.append(_run_trial(cfg, config_path, handle, study, trial, prepared, root, metric, report))
    if worker:
        return SweepResult(root, None, ran)
    # 4. The frontier, the report and the recommendation.
    frontier = write_frontier(cfg, handle, root, metric)
    return SweepResult(root, frontier, ran)


def _quiet_optuna() -> None:
    """Optuna marks heartbeats and retries experimental and logs every trial; our reporter says enough."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------ data, shared
def ensure_prepared(cfg: Config, config_path: Path | None, root: Path, report: Reporter | None) -> RunDir:
    """The sweep's prepared data (a run directory with only the prepare stage), made by the first worker."""
    path = root / "prepared"
    base = with_overrides(cfg, {}, source="sweep")  # the config without its sweep section
    try:
        rd = RunDir.create(base, config_path, run_id="prepared", parent=root)
    except FileExistsError:
        rd = RunDir(path)
        deadline = time.monotonic() + PREPARE_WAIT_S
        while time.monotonic() < deadline and not rd.failed_file.exists():
            if rd.summary_file.is_file() and "prepare" in rd.summary_model().stages:
                return rd
            time.sleep(1.0)
        if not rd.summary_file.is_file():
            raise SweepError(
                f"{path} is half created", hint=f"remove {path} and run the sweep again"
            ) from None
    run_stage("prepare", base, rd, report)
    return rd


def share_prepared(src: RunDir, dst: RunDir) -> None:
    """Start a trial's run directory from the sweep's prepared data: same records, same snapshot."""
    with atomic_dir(dst.data_dir) as tmp:
        shutil.copytree(src.data_dir, tmp, dirs_exist_ok=True)
    for name in ("data_report.json", "data_report.html"):
        if (src.path / name).is_file():
            shutil.copy2(src.path / name, dst.path / name)
    dst.update_provenance(data=src.provenance()["data"])  # copied whole, as written
    dst.update_summary(data=src.summary().get("data"), stages=["prepare"], prepared_from=str(src.path))


def trial_run(tcfg: Config, config_path: Path | None, root: Path, key: str, prepared: RunDir) -> RunDir:
    path = root / "trials" / key
    if (path / "summary.json").is_file():  # an interrupted trial: continue it, if it is still the same
        rd = RunDir(path)
        if rd.provenance_model().config_hash != config_hash(tcfg):
            raise SweepError(
                f"trial {key} was started with another config ({rd.config_file} differs from this sweep's)",
                hint="the config changed since the sweep began: give it a new sweep.study_name",
            )
        return rd
    shutil.rmtree(path, ignore_errors=True)  # created but never initialised
    rd = RunDir.create(tcfg, config_path, run_id=key, parent=root / "trials")
    share_prepared(prepared, rd)
    return rd


# ------------------------------------------------------------------------------ one trial
def _run_trial(cfg, config_path, handle, study, trial, prepared, root, metric, report) -> str:
    from optuna.trial import TrialState

    params = plan.suggest(cfg.sweep, trial)
    key = trial.user_attrs[S.KEY_ATTR]
    overrides = plan.overrides_of(cfg.sweep, params)
    tcfg = plan.trial_config(cfg, key, overrides)
    rd = trial_run(tcfg, config_path, root, key, prepared)
    trial.set_user_attr("tuneline.run_dir", str(rd.path))
    trial.set_user_attr("tuneline.overrides", json.dumps(overrides, sort_keys=True))
    if report:
        report(f"trial {key} ({trial.number}): {overrides}", "note", 0.0)
    mlflow_run = _trial_mlflow_run(tcfg, study, rd, key)
    started = time.time()
    try:
        with S.heartbeat(handle, trial):
            done = set(rd.summary_model().stages)
            if "train" not in done:
                callbacks = [S.pruning_callback(trial, metric)] if cfg.sweep.pruner != "none" else []
                with rd.stage("train"):
                    train.run(tcfg, rd, callbacks=callbacks)
                if callbacks and callbacks[0].pruned_at is not None:
                    rd.update_summary(sweep={"pruned_at_step": callbacks[0].pruned_at})
                    study.tell(trial, state=TrialState.PRUNED)
                    _close_mlflow(tcfg, mlflow_run, "KILLED")
                    log.info("trial %s pruned at step %d", key, callbacks[0].pruned_at)
                    return key
            if "evaluate" not in done:
                with rd.stage("evaluate"):
                    evaluate.run(tcfg, rd)
    except TrainingInterrupted:
        S.retry_later(study, trial, cfg.sweep.max_retries)
        raise
    except Exception as exc:  # noqa: BLE001 - one failing candidate must not stop the others
        log.error("trial %s failed: %s", key, exc)
        trial.set_user_attr("tuneline.error", f"{type(exc).__name__}: {exc}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        _close_mlflow(tcfg, mlflow_run, "FAILED")
        if report:
            report(f"trial {key} failed: {exc}", "note", 0.0)
        return key
    try:
        outcome = read_outcome(rd, key, trial.number, "complete", overrides, metric)
    except SweepError:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, outcome.metric)
    _log_trial(tcfg, mlflow_run, overrides, metric, outcome)
    if report:
        report(f"trial {key}", "done", time.time() - started)
    return key


def read_outcome(rd: RunDir, key: str, number: int, state: str, overrides: dict, metric: str) -> TrialOutcome:
    """A trial's metric, CI, costs and per-record predictions, read back from its run directory."""
    summary = rd.summary_model()
    report = EvalReport.read_or_none(rd)
    if state != "complete" or report is None:
        return TrialOutcome(key, number, state, overrides, run_dir=str(rd.path))
    if report.task != "classification":
        raise SweepError(
            f"trial {key} evaluated a {report.task} task; the sweep's paired comparison is for "
            "classification (label probabilities on the same records)",
            hint="sweep a classification task (eval.task: classification)",
        )
    tuned = report.models["tuned"]
    if metric not in tuned.metrics:
        raise SweepError(
            f"trial {key} has no {metric}", hint=f"set sweep.metric to one of {list(tuned.metrics)}"
        )
    training = summary.train or TrainSection()
    costs = {
        "cost_per_1k": tuned.cost_per_1k,
        "latency_p95_s": tuned.latency.p95_s if tuned.latency else None,
        "train_cost": training.cost.cost if training.cost else None,
        "train_seconds": training.seconds,
        "peak_memory_gb": training.peak_memory_gb,
        "parameters": _parameters(rd),
    }
    ci = tuned.ci.get(metric) or [None, None]  # metric name -> CI: a map by nature
    gate = summary.eval.gate if summary.eval else None
    return TrialOutcome(
        key, number, state, overrides, metric=tuned.metrics[metric], ci=(ci[0], ci[1]), costs=costs,
        run_dir=str(rd.path), gate_passed=None if gate is None else bool(gate.passed),
        predictions=_predictions(rd, report),
    )  # fmt: skip


def _predictions(rd: RunDir, report: EvalReport) -> Predictions:
    import numpy as np
    import pyarrow.parquet as pq

    rows = [
        r for r in pq.read_table(rd.eval_dir / "predictions.parquet").to_pylist() if r["model"] == "tuned"
    ]
    labels = report.labels
    groups = None
    if any(r["group"] is not None for r in rows):
        groups = np.array([r["group"] or f"record:{r['record_id']}" for r in rows], dtype=object)
    return Predictions(
        tuple(r["record_id"] for r in rows),
        np.array([r["label"] for r in rows], dtype=object),
        np.array([[r[f"p_{label}"] for label in labels] for r in rows], dtype=float),
        groups,
        report.models["tuned"].threshold,
    )


def _parameters(rd: RunDir) -> int | None:
    """Parameters of the served model: the base checkpoint's tensors (read from safetensors headers)."""
    from safetensors import safe_open

    base = rd.provenance_model().base_model or BaseModelInfo()
    from tuneline.config import load_config
    from tuneline.models.load import resolve_base

    try:
        folder = resolve_base(load_config(rd.config_file).model).folder
    except Exception:  # noqa: BLE001 - a missing base makes the count unknown, not the sweep fail
        log.warning("parameters of %s unknown", base.id)
        return None
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                n = 1
                for d in fh.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


# ------------------------------------------------------------------------------ the frontier
def outcomes(handle: S.Study, metric: str) -> list[TrialOutcome]:
    """One outcome per trial key: its latest attempt (retries share the key and the run directory)."""
    from optuna.trial import TrialState

    study = handle.load()
    states = {
        TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
        TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
    }  # fmt: skip
    latest: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(S.STRAY_ATTR) or S.KEY_ATTR not in t.user_attrs:
            continue
        key = t.user_attrs[S.KEY_ATTR]
        if key not in latest or t.number > latest[key].number:
            latest[key] = t
    out = []
    for key, t in latest.items():
        overrides = json.loads(t.user_attrs.get("tuneline.overrides", "{}"))
        run_dir = t.user_attrs.get("tuneline.run_dir")
        state = states.get(t.state, "failed")
        if run_dir is None:
            out.append(TrialOutcome(key, t.number, state, overrides))
            continue
        out.append(read_outcome(RunDir(Path(run_dir)), key, t.number, state, overrides, metric))
    return out


def write_frontier(cfg: Config, handle: S.Study, root: Path, metric: str) -> dict:
    from tuneline.sweep.report import render

    trials = outcomes(handle, metric)
    # a trial with predictions read them from its run directory (read_outcome)
    first = next((t.run_dir for t in trials if t.predictions is not None and t.run_dir is not None), None)
    if first is None:
        raise SweepError(
            "no trial of the sweep completed", hint=f"see the trials' run.log under {root / 'trials'}"
        )
    report = EvalReport.read(RunDir(Path(first)))
    frontier = build(
        trials,
        metric=metric,
        cost_metric=plan.sweep_of(cfg).cost_metric,
        tolerance=plan.sweep_of(cfg).tolerance,
        classes=report.labels,
        positive=report.positive,
        n_resamples=cfg.eval.bootstrap_resamples,
        seed=S.seed_of(cfg),
    )
    frontier["study"] = handle.name
    frontier["split"] = report.split
    frontier["n"] = report.n
    atomic_write_json(root / "frontier.json", frontier)
    atomic_write_text(root / "report.html", render(frontier))
    _close_parent(cfg, handle, root, frontier)
    return frontier


# ------------------------------------------------------------------------------ promote
def promote(cfg: Config, report: Reporter | None = None):
    """Register the recommended trial (a new version, the challenger) and move champion to it if its gate
    passed (registry/aliases.py: the same refusal as `tuneline models promote`)."""
    from tuneline.registry import aliases, store

    if cfg.sweep is None:
        raise SweepError("the config has no sweep section", hint="promote the config the sweep ran with")
    path = sweep_dir(cfg) / "frontier.json"
    if not path.is_file():
        raise RunDirError(f"no frontier at {path}", hint="run `tuneline sweep CONFIG` to the end first")
    frontier = json.loads(path.read_text())
    key = frontier["recommended"]
    row = next(r for r in frontier["trials"] if r["key"] == key)
    tcfg = plan.trial_config(cfg, key, row["overrides"])
    rd = RunDir.open(Path(row["run_dir"]))
    reg = run_stage("register", tcfg, rd, report)
    client = store.client(tcfg.registry.tracking_uri)
    change = aliases.promote(client, reg.model_name, reg.version, reason=f"sweep {frontier['study']}: {key}")
    return reg, change


# ------------------------------------------------------------------------------ MLflow
def _client(cfg: Config):
    from tuneline.registry import store

    return store.client(cfg.registry.tracking_uri)


def _parent_run(cfg: Config, study) -> None:
    if not cfg.registry.enabled:
        return
    from tuneline.registry import store

    client = _client(cfg)
    exp = store.experiment_id(client, cfg.experiment_name, cfg.registry.tracking_uri)
    tags = {"tuneline.sweep": study.study_name, "tuneline.metric": metric_of(cfg)}
    rid = client.create_run(exp, run_name=f"sweep {study.study_name}", tags=tags).info.run_id
    study.set_user_attr(S.PARENT_RUN_ATTR, rid)


def _trial_mlflow_run(tcfg: Config, study, rd: RunDir, key: str) -> str | None:
    parent = study.user_attrs.get(S.PARENT_RUN_ATTR)
    if not (tcfg.registry.enabled and parent):
        return None
    from tuneline.registry import store

    tags = {"mlflow.parentRunId": parent, "tuneline.sweep": study.study_name, "tuneline.trial": key}
    return store.open_run(_client(tcfg), tcfg.experiment_name, rd, tcfg.registry.tracking_uri, tags=tags)


def _close_mlflow(tcfg: Config, rid: str | None, status: str) -> None:
    if rid:
        _client(tcfg).set_terminated(rid, status=status)


def _log_trial(tcfg: Config, rid: str | None, overrides: dict, metric: str, outcome: TrialOutcome) -> None:
    if not rid:
        return
    from mlflow.entities import Metric, Param

    client = _client(tcfg)
    values = {metric: outcome.metric, **outcome.costs}
    metrics = [Metric(f"sweep_{k}", float(v), 0, 0) for k, v in values.items() if isinstance(v, int | float)]
    params = [Param(f"sweep.{k}", str(v)[:6000]) for k, v in overrides.items()]
    client.log_batch(rid, metrics=metrics, params=params)
    client.set_terminated(rid, status="FINISHED")


def _close_parent(cfg: Config, handle: S.Study, root: Path, frontier: dict) -> None:
    parent = handle.load().user_attrs.get(S.PARENT_RUN_ATTR)
    if not (cfg.registry.enabled and parent):
        return
    from mlflow.entities import RunTag

    client = _client(cfg)
    tags = [
        RunTag("tuneline.recommended", str(frontier["recommended"])),
        RunTag("tuneline.best", str(frontier["best"])),
    ]
    client.log_batch(parent, tags=tags)
    client.log_artifact(parent, str(root / "frontier.json"))
    client.log_artifact(parent, str(root / "report.html"))
    client.set_terminated(parent, status="FINISHED")
