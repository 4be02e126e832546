"""Launch targets, one module each, registered by name. Modules import their cloud client lazily.

Each module provides:
    render(spec) -> Rendered                      the engine's job object(s), as official client types
    submit(spec, rendered) -> Submitted           submit with the engine's client; id + console link
    status(ref) -> dict, logs(ref) -> str, cancel(ref) -> str      for ``tuneline jobs``
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

REGISTRY: dict[str, str] = {
    "local": "tuneline.launch.targets.local",
    "torchrun": "tuneline.launch.targets.torchrun",
    "gcp-batch": "tuneline.launch.targets.gcp_batch",
    "vertex": "tuneline.launch.targets.vertex",
    "gke": "tuneline.launch.targets.gke",
    "skypilot": "tuneline.launch.targets.skypilot",
}


# Targets whose engine client must be importable (the `launch` extra).
CLIENTS = {"gcp-batch": "google.cloud.batch_v1", "vertex": "google.cloud.aiplatform_v1", "gke": "kubernetes"}


def get_target(name: str) -> ModuleType:
    if name in CLIENTS:
        try:
            importlib.import_module(CLIENTS[name])
        except ImportError as exc:
            from tuneline.errors import TunelineError

            raise TunelineError(
                f"--target {name} needs the {CLIENTS[name]} client, which is not installed ({exc})",
                hint="pip install -c constraints.txt 'tuneline[launch]' (or '.[launch]' in a checkout)",
            ) from exc
    return importlib.import_module(REGISTRY[name])


@dataclass
class Rendered:
    """A rendered job: ``documents`` are wire dicts (JSON-ready), ``objects`` the client's own types."""

    kind: str
    documents: list[dict[str, Any]]
    objects: list[Any] = field(default_factory=list)
    fmt: str = "json"  # json or yaml
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        if self.fmt == "yaml":
            return "---\n".join(to_yaml(d) for d in self.documents)
        body = self.documents[0] if len(self.documents) == 1 else self.documents
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Submitted:
    ref: str  # "<target>:<engine id>", what `tuneline jobs` takes
    console: str | None = None


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML with multi-line strings (scripts) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)
