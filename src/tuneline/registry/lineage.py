"""Lineage tags: what a registered version was made from, read off the run directory.

Every registered version carries, as ``tuneline.*`` tags: the run it came from, the data snapshot
(fingerprint and folder), the config (hash), the base model (id, kind, family, hub revision, content
hash), how it was trained (method, dtype), the code and environment (tuneline version, git commit,
package-set hash), the gate result and the headline metrics of the tuned model. ``models list`` and
``models show`` read them back; ``resolve``/``load`` use the base-model tags to rebuild the model.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tuneline.runs import RunDir
from tuneline.sections import BaseModelInfo, DataProvenance, Environment, EvalSection, GitState

PREFIX = "tuneline."
METRIC_PREFIX = "tuneline.metric."
# Headline metrics copied onto the version (when the evaluation produced them).
HEADLINE = ("accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss", "exact_match", "token_f1", "loss")

# Shown by `models show`, in this order, with a label.
LINEAGE_FIELDS = (
    ("run_id", "run"),
    ("run_dir", "run directory"),
    ("data_fingerprint", "data snapshot fingerprint"),
    ("data_snapshot", "data snapshot folder"),
    ("data_counts", "data counts"),
    ("config_hash", "config hash"),
    ("config_file", "config file"),
    ("base_model", "base model"),
    ("base_model_kind", "base model kind"),
    ("base_model_family", "base model family"),
    ("base_model_revision", "base model revision"),
    ("base_model_content_hash", "base model content hash"),
    ("method", "method"),
    ("model_dtype", "dtype"),
    ("task", "task"),
    ("version", "tuneline version"),
    ("git_commit", "git commit"),
    ("git_dirty", "git dirty"),
    ("environment_hash", "environment hash"),
    ("dp_epsilon", "differential privacy epsilon"),
    ("dp_delta", "differential privacy delta"),
    ("gate_passed", "gate passed"),
    ("gate_primary", "gate primary metric"),
    ("gate_summary", "gate rules"),
)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def lineage_tags(run: RunDir) -> dict[str, str]:
    prov = run.provenance_model()
    summary = run.summary_model()
    base = prov.base_model or BaseModelInfo()
    data = prov.data or DataProvenance()
    git = prov.git or GitState()
    env = prov.environment or Environment()
    ev = summary.eval or EvalSection()
    # The resolved config as written, validated; its ${ENV} templates stay templates (not resolved here).
    cfg = run.config()
    train, model = cfg.train, cfg.model
    tags: dict[str, Any] = {
        "tuneline.run_id": run.run_id,
        "tuneline.run_dir": str(run.path),
        "tuneline.version": prov.tuneline_version,
        "tuneline.config_hash": prov.config_hash,
        "tuneline.config_file": prov.config_file,
        "tuneline.data_fingerprint": data.fingerprint,
        "tuneline.data_snapshot": data.snapshot,
        "tuneline.data_counts": json.dumps(data.counts, sort_keys=True) if data.counts else None,
        "tuneline.base_model": base.id,
        "tuneline.base_model_kind": base.kind,
        "tuneline.base_model_family": base.family,
        # The hub commit when there is one, else the checkpoint's content hash: either pins the base.
        "tuneline.base_model_revision": base.revision or base.content_hash,
        "tuneline.base_model_hub_revision": base.revision,
        "tuneline.base_model_content_hash": base.content_hash,
        "tuneline.method": train.method,
        "tuneline.model_dtype": model.dtype,
        "tuneline.task": ev.task,
        "tuneline.eval_split": ev.split,
        "tuneline.git_commit": git.commit,
        "tuneline.git_dirty": git.dirty,
        "tuneline.environment_hash": env.packages_hash,
    }
    privacy = summary.train.privacy if summary.train else None
    dp = privacy.dp if privacy else None
    if dp:  # differentially private training: what it spent
        tags["tuneline.dp_epsilon"] = f"{dp.epsilon:.6g}"
        tags["tuneline.dp_delta"] = f"{dp.delta:.6g}"
        tags["tuneline.dp_noise_multiplier"] = f"{dp.noise_multiplier:.6g}"
    tuned = ev.scores("tuned")  # metric name -> value
    for name in HEADLINE:
        if _finite(tuned.get(name)):
            tags[f"{METRIC_PREFIX}{name}"] = f"{tuned[name]:.6g}"
    primary = ev.primary
    if primary and _finite(tuned.get(primary)):
        tags[f"{METRIC_PREFIX}{primary}"] = f"{tuned[primary]:.6g}"
    gate = ev.gate
    if gate is not None:  # the registry promotes only versions whose gate passed
        tags["tuneline.gate_passed"] = str(bool(gate.passed)).lower()
        tags["tuneline.gate_primary"] = gate.primary
        tags["tuneline.gate_summary"] = "; ".join(
            f"{'pass' if r.passed else 'FAIL'}: {r.rule}" for r in gate.rules
        )[:4000]
    return {k: str(v) for k, v in tags.items() if v is not None}


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    """The headline metrics recorded on a version."""
    out = {}
    for k, v in tags.items():
        if k.startswith(METRIC_PREFIX):
            try:
                out[k[len(METRIC_PREFIX) :]] = float(v)
            except ValueError:
                continue
    return out


def lineage_rows(tags: dict[str, str]) -> list[tuple[str, str]]:
    """(label, value) pairs of the lineage recorded on a version, for display."""
    return [(label, tags[PREFIX + key]) for key, label in LINEAGE_FIELDS if PREFIX + key in tags]
