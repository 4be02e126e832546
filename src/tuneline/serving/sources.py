"""Where served models come from: ``NAME@alias`` in the MLflow registry, downloaded into a local cache.

A registered version's source is the MLflow artifact folder of its adapter (``.../adapter``, written by
the register stage): a PEFT adapter with the processor, or a full checkpoint. Downloads land in
``<state_dir>/models/<name>/<version>/`` through a temporary folder renamed when complete, so a failed
or interrupted download never looks like a finished one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.errors import ModelError, RegistryError

log = logging.getLogger("tuneline.serve")


@dataclass(frozen=True)
class ModelVersionRef:
    """One registered version, as an alias pointed at it when it was resolved."""

    name: str
    alias: str
    version: str
    source: str  # artifact URI of the adapter (or full checkpoint) folder
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        return self.tags.get("tuneline.base_model")

    @property
    def key(self) -> str:
        """A name for this version, usable as a PEFT adapter name."""
        return f"{self.alias}_v{self.version}"


class RegistrySource:
    """Resolves aliases and downloads versions; one MlflowClient, safe to use from one thread at a time."""

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path) -> None:
        from tuneline.registry import store

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.cache_dir = cache_dir
        self.client = store.client(tracking_uri)

    def resolve(self, alias: str) -> ModelVersionRef:
        try:
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except Exception as exc:  # noqa: BLE001 - MlflowException for a missing alias or model
            raise RegistryError(
                f"registered model {self.model_name!r} has no alias {alias!r} ({exc})",
                hint=f"set it, e.g. MlflowClient().set_registered_model_alias({self.model_name!r}, "
                f"{alias!r}, VERSION), or remove {alias!r} from serve.traffic",
            ) from exc
        return ModelVersionRef(
            name=self.model_name,
            alias=alias,
            version=str(mv.version),
            source=mv.source,
            run_id=mv.run_id,
            tags=dict(mv.tags or {}),
        )

    def download(self, ref: ModelVersionRef) -> Path:
        """The version's files in the local cache (downloaded once)."""
        import os

        import mlflow.artifacts

        from tuneline.registry.resolve import refuse_pickles

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        target = self.cache_dir / "models" / ref.name / ref.version
        if (target / ".complete").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=target.parent))
        try:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=ref.source, dst_path=str(tmp), tracking_uri=self.tracking_uri
                )
            )
            files = got if got.is_dir() else got.parent
            if not any(files.iterdir()):
                raise RegistryError(f"{ref.name} version {ref.version}: {ref.source} holds no files")
            # Never unpickle: a version with pickled weights is refused (the old version keeps serving).
            refuse_pickles(files, allow_pickle=False, what=f"{ref.name} version {ref.version}")
            (files / ".complete").write_text(ref.source + "\n")
            if target.exists():
                shutil.rmtree(target)
            files.rename(target)
        except (RegistryError, ModelError):
            raise
        except Exception as exc:  # noqa: BLE001 - artifact stores raise many kinds
            raise RegistryError(
                f"could not download {ref.name} version {ref.version} from {ref.source}: {exc}",
                hint="check that the artifact store is reachable and the version's run still has its files",
            ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("downloaded %s version %s to %s", ref.name, ref.version, target)
        return target
