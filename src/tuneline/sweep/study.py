"""The Optuna study behind a sweep: storage, the queue of trials, heartbeats and pruning.

Storage: an RDB storage (SQLite next to the MLflow store by default, any SQLAlchemy URL) or Optuna's
journal file. Several processes (``tuneline sweep CONFIG --worker`` on several machines) share a study
through it; no trial runs twice:

- candidates and grid points are queued once, when the study is created (``enqueue_trial``), and a worker
  takes a queued trial with ``study.ask()``, which claims it atomically in the storage (WAITING -> RUNNING:
  one worker wins). Optuna's GridSampler is not used for this: its docs say workers running concurrently
  re-evaluate the same grid point, and a sweep trial costs a whole training run.
- a search space is sampled by TPE, reseeded from ``sweep.seed`` and the number of trials so far, so one
  worker draws the same sequence every time.
- a running trial records a heartbeat (RDB storages); one silent for 3x ``heartbeat_s`` (its worker was
  killed) is failed by the next worker that looks and queued again with the same parameters and run
  directory (Optuna's RetryHeartbeatStaleTrialCallback), so it resumes from its last checkpoint. A trial
  stopped by SIGTERM/SIGINT (its checkpoint saved) is queued again the same way before the process exits.
  The journal storage has no heartbeat: a trial killed with kill -9 there stays running; see the README.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tuneline.config import Config
from tuneline.config.schema import LOWER_IS_BETTER, SweepConfig
from tuneline.errors import SweepError
from tuneline.sweep.plan import fixed_trials, sweep_of

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

KEY_ATTR = "tuneline.key"  # user attribute: the trial's run directory name (copied onto retries)
STRAY_ATTR = "tuneline.stray"  # a trial created when the queue ran dry under a concurrent worker
INIT_ATTR = "tuneline.initialised"
PARENT_RUN_ATTR = "tuneline.mlflow_parent_run_id"


def default_storage(cfg: Config) -> str:
    """SQLite next to the MLflow store: beside its database file when that is SQLite, else .tuneline/."""
    from tuneline.registry.store import _sqlite_file, default_tracking_uri

    db = _sqlite_file(cfg.registry.tracking_uri or default_tracking_uri())
    folder = db.parent if db is not None else Path(default_tracking_uri()[len("sqlite:///") :]).parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def storage_for(cfg: Config) -> BaseStorage:
    import optuna
    import optuna.storages.journal

    sweep = sweep_of(cfg)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retries)
    if sweep.journal_file is not None:
        sweep.journal_file.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(sweep.journal_file))
        return optuna.storages.JournalStorage(backend)
    url = sweep.storage or default_storage(cfg)
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=sweep.heartbeat_s,
            grace_period=3 * sweep.heartbeat_s,
            heartbeat_stale_trial_callback=retry,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds
        raise SweepError(
            f"cannot open the sweep's study storage {url}: {exc}", hint="check sweep.storage"
        ) from exc


def study_name(cfg: Config) -> str:
    return sweep_of(cfg).study_name or f"{cfg.run.name}-sweep"


def direction(metric: str) -> Literal["minimize", "maximize"]:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def pruner_for(sweep: SweepConfig):
    import optuna

    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def seed_of(cfg: Config) -> int:
    seed = sweep_of(cfg).seed
    return cfg.run.seed if seed is None else seed


@dataclass
class Study:
    """The sweep's study, reloaded with a fresh seeded sampler before each trial is drawn."""

    cfg: Config
    storage: BaseStorage
    name: str
    metric: str
    created: bool = False

    def load(self, trials_so_far: int = 0):
        import optuna

        sampler = optuna.samplers.TPESampler(seed=seed_of(self.cfg) + trials_so_far)
        return optuna.load_study(
            study_name=self.name, storage=self.storage, sampler=sampler, pruner=pruner_for(sweep_of(self.cfg))
        )


def open_study(cfg: Config, metric: str, on_create) -> Study:
    """Create the study (the process that creates it queues the fixed trials and calls ``on_create``) or
    load it; a loader waits for the creator to finish queueing."""
    import time

    import optuna

    storage = storage_for(cfg)
    name = study_name(cfg)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=direction(metric), load_if_exists=False
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        if study.direction.name.lower() != direction(metric):
            raise SweepError(
                f"study {name!r} was created to {study.direction.name.lower()} a metric, this config would "
                f"{direction(metric)} {metric}",
                hint="give the sweep its own sweep.study_name",
            ) from None
        deadline = time.monotonic() + 120
        while not study.user_attrs.get(INIT_ATTR):
            if time.monotonic() > deadline:
                raise SweepError(
                    f"study {name!r} exists but the process that created it never queued its trials",
                    hint="it stopped while starting: delete the study (optuna delete-study) and run again",
                ) from None
            time.sleep(0.5)
        return Study(cfg, storage, name, metric)
    study.set_user_attr("tuneline.metric", metric)
    for spec in fixed_trials(sweep_of(cfg)) or []:
        study.enqueue_trial(spec.params, user_attrs={KEY_ATTR: spec.key})
    on_create(study)
    study.set_user_attr(INIT_ATTR, True)
    return Study(cfg, storage, name, metric, created=True)


def next_trial(handle: Study):
    """(study, trial) for the next trial this worker runs, ('wait', None) while others still run trials
    that may come back to the queue, or (None, None) when the sweep has nothing left to run."""
    import optuna
    from optuna.trial import TrialState

    study = handle.load()
    if isinstance(handle.storage, optuna.storages.RDBStorage):  # the storages with heartbeats
        optuna.storages.fail_stale_trials(study)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(STRAY_ATTR)]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    sweep = sweep_of(handle.cfg)
    fixed = fixed_trials(sweep) is not None
    if not waiting:
        if not fixed:
            counted = [
                t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            ]
            assert sweep.trials is not None  # SweepConfig: a search space needs sweep.trials
            if len(counted) < sweep.trials:
                study = handle.load(len(trials))
                trial = study.ask()
                trial.set_user_attr(KEY_ATTR, trial.user_attrs.get(KEY_ATTR) or f"trial-{trial.number:03d}")
                return study, trial
        return ("wait", None) if running else (None, None)
    trial = study.ask()  # claims a queued trial atomically (or, when another worker took the last one, none)
    if KEY_ATTR not in trial.user_attrs:
        trial.set_user_attr(STRAY_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        return ("wait", None) if running or len(waiting) > 1 else (None, None)
    return study, trial


def retry_later(study, trial, max_retries: int) -> None:
    """Fail an interrupted trial and queue it again with the same parameters and run directory."""
    import optuna
    from optuna.trial import TrialState

    study.tell(trial, state=TrialState.FAIL)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)(study, frozen)


@contextmanager
def heartbeat(handle: Study, trial) -> Iterator[None]:
    """Record the trial's heartbeat every heartbeat_s while it runs (RDB storages)."""
    import optuna

    storage = handle.storage
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield
        return
    study_id = storage.get_study_id_from_name(handle.name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(sweep_of(handle.cfg).heartbeat_s):
                return

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pruning_callback(trial, metric: str):
    """A TrainerCallback that reports the val loss curve to the trial and stops training when Optuna's
    pruner says the trial will not be competitive (its ``pruned_at`` then holds the step). The loss is
    reported with the study's direction (negated when the study maximises its metric)."""
    from transformers import TrainerCallback

    sign = 1.0 if direction(metric) == "minimize" else -1.0

    class Pruning(TrainerCallback):
        pruned_at: int | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            trial.report(sign * float(loss), step=state.global_step)
            if trial.should_prune():
                self.pruned_at = state.global_step
                control.should_training_stop = True

    return Pruning()
