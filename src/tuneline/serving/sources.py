"""Where served models come from: ``NAME@alias`` in the MLflow registry, downloaded into a local cache.

A registered version's source is the MLflow artifact folder of its adapter (``.../adapter``, written by
the register stage): a PEFT adapter with the processor, or a full checkpoint. Downloads land in
``<state_dir>/models/<name>/<version>/`` through a temporary folder renamed when complete, so a failed
or interrupted download never looks like a finished one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.errors import RegistryError

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
        """The version's files in the local cache (downloaded once). Never unpickle: a version with
        pickled weights is refused before it lands (the old version keeps serving)."""
        from tuneline.registry import store
        from tuneline.registry.resolve import refuse_pickles

        what = f"{ref.name} version {ref.version}"
        target = self.cache_dir / "models" / ref.name / ref.version
        if target.is_dir():
            return target
        store.download_dir(
            ref.source,
            target,
            tracking_uri=self.tracking_uri,
            what=what,
            check=lambda files: refuse_pickles(files, allow_pickle=False, what=what),
        )
        log.info("downloaded %s to %s", what, target)
        return target
