"""Lineage tags: what a registered version was made from, read off the run directory."""

from __future__ import annotations

from typing import Any

from tuneline.runs import RunDir


def lineage_tags(run: RunDir) -> dict[str, str]:
    prov = run.provenance()
    base = prov.get("base_model") or {}
    data = prov.get("data") or {}
    git = prov.get("git") or {}
    env = prov.get("environment") or {}
    tags: dict[str, Any] = {
        "tuneline.run_id": run.run_id,
        "tuneline.run_dir": str(run.path),
        "tuneline.version": prov.get("tuneline_version"),
        "tuneline.config_hash": prov.get("config_hash"),
        "tuneline.data_fingerprint": data.get("fingerprint"),
        "tuneline.base_model": base.get("id"),
        "tuneline.base_model_revision": base.get("revision") or base.get("content_hash"),
        "tuneline.base_model_content_hash": base.get("content_hash"),
        "tuneline.git_commit": git.get("commit"),
        "tuneline.git_dirty": git.get("dirty"),
        "tuneline.environment_hash": env.get("packages_hash"),
    }
    gate = (run.summary().get("eval") or {}).get("gate")
    if gate is not None:  # the registry promotes only versions whose gate passed
        tags["tuneline.gate_passed"] = str(bool(gate["passed"])).lower()
        tags["tuneline.gate_primary"] = gate.get("primary")
    return {k: str(v) for k, v in tags.items() if v is not None}
