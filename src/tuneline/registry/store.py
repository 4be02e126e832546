"""The MLflow store: SQLite under .tuneline/ by default, any tracking server by URI.

MLflow is imported lazily (it costs a second or two) and its telemetry is switched off: this
tool must work on machines with no way out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tuneline.errors import RegistryError
from tuneline.runs import workspace  # noqa: F401 - re-exported: the registry's store lives there too


def default_tracking_uri(cwd: Path | None = None, *, create: bool = True) -> str:
    ws = workspace(cwd)
    if create:
        ws.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{ws / 'mlflow.db'}"


def default_artifact_root(cwd: Path | None = None) -> Path:
    return workspace(cwd) / "mlartifacts"


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _probe_http(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds when nothing answers at an http(s) tracking URI (MLflow itself retries for minutes).
    Any HTTP answer, even an error status, means a server is there: MLflow reports the rest."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()  # noqa: S310
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"cannot reach the MLflow tracking server at {uri}: {getattr(exc, 'reason', exc)}",
            hint="start the server (mlflow server ...) or fix --tracking-uri / registry.tracking_uri; "
            "nothing was changed",
        ) from exc


def client(tracking_uri: str | None, *, must_exist: bool = False):
    """An MlflowClient for the URI (default store when None); fails clearly when unreachable.

    ``must_exist``: a SQLite store whose file is missing is an error (commands that only read or
    move aliases must not create an empty store at a mistyped path)."""
    uri = tracking_uri or default_tracking_uri(create=not must_exist)
    db = _sqlite_file(uri)
    if must_exist and db is not None and not db.is_file():
        raise RegistryError(
            f"no MLflow store at {db}",
            hint="run this in the folder where `tuneline run` registered the model, or pass "
            "--tracking-uri (e.g. sqlite:///path/to/.tuneline/mlflow.db or http://host:5000)",
        )
    if uri.startswith(("http://", "https://")):
        _probe_http(uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import logging

    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter on first use

    mlflow.set_tracking_uri(uri)
    try:
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        c.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds here
        raise RegistryError(
            f"cannot reach the MLflow store: {exc}",
            hint="check registry.tracking_uri (and that the server is running)",
        ) from exc
    return c


def experiment_id(c, name: str, tracking_uri: str | None) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # An explicit artifact location: MLflow's default is ./mlruns relative to whatever the cwd is.
    location = None
    if tracking_uri is None or tracking_uri.startswith("sqlite:"):
        location = (default_artifact_root() / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def open_run(c, experiment: str, run, tracking_uri: str | None, *, tags: dict[str, str] | None = None) -> str:
    """The MLflow run of a tuneline run directory: the one opened before (by training, which logs its
    curve live, or by an earlier register), else a new one (with ``tags``: a sweep trial's parent run).
    Recorded in the summary under ``mlflow`` so that a resumed training and the register stage keep writing
    to the same MLflow run."""
    mlflow = run.summary_model().mlflow
    recorded = mlflow.run_id if mlflow else None
    if recorded:
        try:
            c.get_run(recorded)
            return recorded
        except Exception:  # noqa: BLE001 - deleted or from another store: open a new one
            pass
    exp_id = experiment_id(c, experiment, tracking_uri)
    tags = {"tuneline.run_id": run.run_id, **(tags or {})}
    rid = c.create_run(exp_id, run_name=run.run_id, tags=tags).info.run_id
    run.update_summary(mlflow={"run_id": rid, "live_metrics_complete": False})
    return rid


def download_dir(
    source: str,
    target: Path,
    *,
    tracking_uri: str | None = None,
    what: str | None = None,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """The artifact folder at ``source``, downloaded once into ``target``.

    It lands in a temporary folder beside ``target``, must hold files and pass ``check`` (which raises to
    refuse it), and only then is renamed into place: a failed, refused or interrupted download never looks
    like a finished one. When another process finishes first, its copy is kept."""
    from mlflow.artifacts import download_artifacts

    if target.is_dir():
        return target
    what = what or source
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            got = Path(download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=tracking_uri))
        except Exception as exc:  # noqa: BLE001 - artifact stores raise many kinds
            raise RegistryError(
                f"could not download {what} from {source}: {exc}",
                hint="check that the artifact store is reachable and the version's run still has its files",
            ) from exc
        files = got if got.is_dir() else got.parent
        if not any(files.iterdir()):
            raise RegistryError(f"{what}: {source} holds no files")
        if check is not None:
            check(files)
        try:
            files.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
