"""The run directory: where every artifact of a run lives, written atomically, with provenance.

    runs/<name>/<run-id>/
      config.resolved.yaml  provenance.json  summary.json  metrics.jsonl  run.log
      data/{train,val,test}.jsonl data/manifest.json
      checkpoints/  adapter/  eval.json  eval_predictions.jsonl
      FAILED            only when a stage failed: which stage, the error, the traceback

Stages find their inputs and outputs through this class, never by building paths themselves.
A stage writes its artifacts to temporary names and renames them when complete, so a failure
never leaves an artifact that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from tuneline.config import Config, config_hash, read_resolved, to_yaml
from tuneline.errors import RunDirError
from tuneline.sections import (
    BaseModelInfo,
    DataProvenance,
    DataSection,
    Environment,
    EvalSection,
    GitState,
    MlflowSection,
    RegistrySection,
    TrainSection,
)

log = logging.getLogger("tuneline")

STAGES = ("prepare", "train", "evaluate", "register")
WORKSPACE = ".tuneline"  # in the working directory: dataset snapshots, caches, the default MLflow store


def workspace(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()) / WORKSPACE


# ---------------------------------------------------------------- atomic file helpers
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    _atomic_write(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write_text` for bytes (a parquet table, an .npz archive serialised in memory)."""
    _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():
            old = target.with_name(f".{target.name}.old-{secrets.token_hex(3)}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_main_process() -> bool:
    """True except in a distributed worker of rank > 0 (torchrun sets RANK): rank 0 keeps the books."""
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------- provenance
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path) -> dict[str, Any]:
    """Commit and dirty flag of the git repository holding ``where`` (nulls outside a repository)."""
    folder = where if where.is_dir() else where.parent
    commit = _git(["rev-parse", "HEAD"], folder)
    if commit is None:
        return {"commit": None, "dirty": None, "repository": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], folder)
    return {
        "commit": commit,
        "dirty": bool(status),
        "repository": _git(["rev-parse", "--show-toplevel"], folder),
    }


def environment() -> dict[str, Any]:
    packages = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]
    )
    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "accelerate", "mlflow-skinny", "tokenizers", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "packages": versions,
        "packages_hash": hashlib.sha256("\n".join(packages).encode()).hexdigest(),
        "packages_count": len(packages),
    }


def tuneline_version() -> str:
    from tuneline._version import __version__

    return __version__


# ---------------------------------------------------------------- the run directory
class _Artifact(BaseModel):
    """A JSON artifact of a run directory. Lenient on purpose (``extra="allow"``, optional fields): a run
    directory written by an older tuneline still loads; the fields named here are the ones readers use."""

    model_config = ConfigDict(extra="allow")
    filename: ClassVar[str]

    @classmethod
    def path_in(cls, run: RunDir) -> Path:
        return run.path / cls.filename

    @classmethod
    def read(cls, run: RunDir) -> Self:
        return cls.model_validate_json(cls.path_in(run).read_text())

    @classmethod
    def read_or_none(cls, run: RunDir) -> Self | None:
        path = cls.path_in(run)
        return cls.model_validate_json(path.read_text()) if path.is_file() else None

    def write(self, run: RunDir) -> Path:
        path = self.path_in(run)
        # Fields neither read nor set stay out: a read-then-written artifact keeps the keys it had.
        atomic_write_json(path, self.model_dump(mode="json", exclude_unset=True))
        return path


class Summary(_Artifact):
    """summary.json: which stages completed, and each stage's section (``data``, ``train``, ``eval``, ...)."""

    filename: ClassVar[str] = "summary.json"
    run_dir: str | None = None
    run_id: str | None = None
    name: str | None = None
    stages: list[str] = []
    complete: bool = False
    data: DataSection | None = None
    train: TrainSection | None = None
    eval: EvalSection | None = None
    registry: RegistrySection | None = None
    mlflow: MlflowSection | None = None  # the tracking run this run logged to (run_id)
    failed_stage: str | None = None


class Provenance(_Artifact):
    """provenance.json: versions, config hash, git state, environment, data snapshot and base model."""

    filename: ClassVar[str] = "provenance.json"
    tuneline_version: str | None = None
    created: str | None = None
    config_file: str | None = None
    config_hash: str | None = None
    git: GitState | None = None
    environment: Environment | None = None
    data: DataProvenance | None = None
    base_model: BaseModelInfo | None = None
    offline: dict[str, bool] = {}


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()

    # catalog -----------------------------------------------------------------------------
    config_file = property(lambda self: self.path / "config.resolved.yaml")
    provenance_file = property(lambda self: self.path / "provenance.json")
    summary_file = property(lambda self: self.path / "summary.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    log_file = property(lambda self: self.path / "run.log")
    failed_file = property(lambda self: self.path / "FAILED")
    data_dir = property(lambda self: self.path / "data")
    data_manifest = property(lambda self: self.path / "data" / "manifest.json")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    eval_file = property(lambda self: self.path / "eval.json")
    eval_dir = property(lambda self: self.path / "eval")  # report.json, predictions.parquet, report.html
    predictions_file = property(lambda self: self.path / "eval_predictions.jsonl")

    def split_file(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    @property
    def run_id(self) -> str:
        return self.path.name

    # creation and lookup -----------------------------------------------------------------
    @classmethod
    def create(
        cls, cfg: Config, config_path: Path | None, *, run_id: str | None = None, parent: Path | None = None
    ) -> RunDir:
        """A new run directory; ``run_id`` names it (a launched job's id, the same on every retry). It goes
        under ``parent`` when given (a sweep's trials), else under <run.output_dir>/<run.name>/."""
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        path = (parent or cfg.run.output_dir / cfg.run.name) / run_id
        path.mkdir(parents=True, exist_ok=False)
        run = cls(path)
        atomic_write_text(run.config_file, to_yaml(cfg))
        atomic_write_json(
            run.provenance_file,
            {
                "tuneline_version": tuneline_version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config_file": str(config_path.resolve()) if config_path else None,
                "config_hash": config_hash(cfg),
                "git": git_state(config_path.resolve() if config_path else Path.cwd()),
                "environment": environment(),
                "data": None,
                "base_model": None,
                "offline": {},
            },
        )
        atomic_write_json(
            run.summary_file,
            {
                "run_dir": str(run.path),
                "run_id": run_id,
                "name": cfg.run.name,
                "stages": [],
                "complete": False,
            },
        )
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(path)
        if not run.summary_file.is_file():
            raise RunDirError(
                f"{path} is not a tuneline run directory (no summary.json)",
                hint="pass a folder created by `tuneline prepare` or `tuneline run`",
            )
        return run

    @classmethod
    def latest(cls, cfg: Config, *, with_stage: str) -> RunDir:
        """The newest run of this config's name in which ``with_stage`` completed."""
        root = cfg.run.output_dir / cfg.run.name
        candidates = sorted((p for p in root.glob("*") if (p / "summary.json").is_file()), reverse=True)
        for path in candidates:
            run = cls(path)
            if with_stage in run.summary_model().stages:
                return run
        raise RunDirError(
            f"no run under {root} has completed the {with_stage} stage",
            hint=f"run `tuneline {with_stage}` first, or pass --run-dir",
        )

    @classmethod
    def resumable(cls, cfg: Config) -> RunDir | None:
        """The newest unfinished run of this exact config (same config hash), if any."""
        root = cfg.run.output_dir / cfg.run.name
        wanted = config_hash(cfg)
        for path in sorted((p for p in root.glob("*") if (p / "summary.json").is_file()), reverse=True):
            run = cls(path)
            if run.summary_model().complete:
                return None  # the newest run of this name finished: start a new one
            if run.provenance_model().config_hash == wanted:
                return run
        return None

    # state -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_file.read_text())

    def update_summary(self, **sections: Any) -> dict[str, Any]:
        summary = self.summary()
        if not is_main_process():
            return summary
        summary.update(sections)
        atomic_write_json(self.summary_file, summary)
        return summary

    def update_provenance(self, **fields: Any) -> None:
        if not is_main_process():
            return
        prov = json.loads(self.provenance_file.read_text())
        prov.update(fields)
        atomic_write_json(self.provenance_file, prov)

    def record_offline(self, stage: str, offline: bool) -> None:
        """provenance.json's ``offline``: for each stage run, whether the offline guard was on."""
        self.update_provenance(offline={**self.provenance_model().offline, stage: offline})

    def provenance(self) -> dict[str, Any]:
        return json.loads(self.provenance_file.read_text())

    # typed views -------------------------------------------------------------------------
    def config(self) -> Config:
        """The run's validated config, read from config.resolved.yaml (``${ENV}`` values left unresolved)."""
        return read_resolved(self.config_file)

    def summary_model(self) -> Summary:
        return Summary.read(self)

    def provenance_model(self) -> Provenance:
        return Provenance.read(self)

    def require(self, stage: str) -> None:
        if stage not in self.summary_model().stages:
            raise RunDirError(
                f"the {stage} stage has not completed in {self.path}",
                hint=f"run `tuneline {stage} CONFIG --run-dir {self.path}` first",
            )

    def append_metric(self, record: dict[str, Any]) -> None:
        if not is_main_process():
            return
        with self.metrics_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage: log to run.log; on failure write FAILED (stage, error, traceback) and re-raise.

        In a distributed worker other than rank 0 the stage just runs: rank 0 keeps the books.
        """
        if not is_main_process():
            yield
            return
        self.failed_file.unlink(missing_ok=True)
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        previous_level = log.level
        log.setLevel(logging.INFO)
        started = time.time()
        log.info("stage %s started", name)
        try:
            yield
        except BaseException as exc:
            log.error("stage %s failed: %s", name, exc)
            atomic_write_text(
                self.failed_file,
                (
                    f"stage: {name}\nerror: {type(exc).__name__}: {exc}\n\n"
                    + "".join(traceback.format_exception(exc))
                ),
            )
            stages = [s for s in self.summary_model().stages if STAGES.index(s) < STAGES.index(name)]
            self.update_summary(stages=stages, complete=False, failed_stage=name)
            raise
        else:
            stages = [s for s in self.summary_model().stages if STAGES.index(s) < STAGES.index(name)]
            stages.append(name)
            summary = self.summary()
            summary.pop("failed_stage", None)
            summary.update(stages=stages, complete=stages == list(STAGES))
            atomic_write_json(self.summary_file, summary)
            log.info("stage %s done in %.1f s", name, time.time() - started)
        finally:
            log.removeHandler(handler)
            handler.close()
            log.setLevel(previous_level)
