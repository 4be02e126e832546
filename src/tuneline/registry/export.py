"""Export a registered version to a folder that ``from_pretrained`` (and vLLM) load without tuneline.

    tuneline export NAME@ALIAS --format merged|adapter [--dtype bf16|fp16|fp32] OUT

- merged: the base with the adapter folded in (PEFT ``merge_and_unload``; a QLoRA adapter is merged into
  the full-precision base), saved as safetensors with the processor or tokenizer: load it with plain
  ``AutoModel...from_pretrained(OUT)``.
- adapter: the adapter files (safetensors) with ``adapter_config.json`` pointing at the base
  (``base_model_name_or_path``, and ``revision`` for a hub model), plus the processor files.

Both hold ``README.md`` (the version's model card) and ``tuneline_export.json`` (the version, its
aliases, base model and lineage). The folder is written under a temporary name and renamed when
complete. Pickled weights (``.bin``) are refused unless ``allow_pickle``; the export itself is always
safetensors.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from tuneline.errors import ModelError
from tuneline.registry.card import CARD_ARTIFACT
from tuneline.registry.resolve import (
    PICKLE_SUFFIXES,
    RegisteredModel,
    load_registered,
    resolve,
    resolve_base_of,
)

log = logging.getLogger("tuneline.export")

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
EXPORT_FILE = "tuneline_export.json"
# Adapter-folder files that describe weights or processing; the rest (PEFT's README) is replaced.
SKIP_IN_ADAPTER = {"README.md"}


class ExportError(ModelError):
    """An export that cannot be written as asked."""


def _redacted(uri: str | None) -> str | None:
    """A tracking URI without credentials (user:password@host)."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def card_text(c, run_id: str | None) -> str | None:
    """The model card logged with a version's run (None for versions registered without one)."""
    import tempfile

    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(c.download_artifacts(run_id, CARD_ARTIFACT, dst_path=tmp)).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - versions registered before model cards existed
            return None


def export(
    ref: str,
    out: Path,
    *,
    fmt: Literal["merged", "adapter"] = "merged",
    dtype: Literal["bf16", "fp16", "fp32"] | None = None,
    tracking_uri: str | None = None,
    allow_pickle: bool = False,
    overwrite: bool = False,
    client=None,
) -> Path:
    from tuneline.registry import store
    from tuneline.runs import atomic_dir

    out = Path(out).resolve()
    if fmt not in ("merged", "adapter"):
        raise ExportError(f"unknown export format {fmt!r}", hint="use --format merged or --format adapter")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}", hint=f"use one of {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out} exists and is not empty", hint="choose a new folder, or pass --overwrite")
    c = client or store.client(tracking_uri, must_exist=True)
    rm = resolve(ref, tracking_uri, client=c)
    if fmt == "adapter" and rm.method == "full":
        raise ExportError(
            f"{rm.ref} is a full fine-tune: it has no adapter", hint="export it with --format merged"
        )
    base = resolve_base_of(rm)
    card = card_text(c, rm.run_id)
    with atomic_dir(out) as tmp:
        if fmt == "merged":
            _merged(rm, base, tmp, dtype, allow_pickle)
        else:
            _adapter(rm, base, tmp, dtype, allow_pickle)
        if card:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        record = {
            "format": fmt,
            "dtype": DTYPES[dtype] if dtype else ("float32" if fmt == "merged" else "as trained"),
            "name": rm.name,
            "version": rm.version,
            "aliases": rm.aliases,
            "reference": ref,
            "tracking_uri": _redacted(getattr(c, "tracking_uri", None) or tracking_uri),
            "source": rm.source,
            "mlflow_run_id": rm.run_id,
            "method": rm.method,
            "base_model": {
                "id": rm.base_model,
                "kind": base.kind,
                "family": base.family.name,
                "revision": base.revision,
                "content_hash": base.content_hash,
                "folder": str(base.folder),
            },
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "lineage": {k: v for k, v in rm.tags.items() if k.startswith("tuneline.")},
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        pickles = [p.name for p in tmp.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:  # never write a pickle out either
            raise ExportError(f"the export would contain pickled files: {pickles}")
    log.info("exported %s (%s) to %s", rm.ref, fmt, out)
    return out


def _merged(rm: RegisteredModel, base, tmp: Path, dtype: str | None, allow_pickle: bool) -> None:
    import torch

    from tuneline.models.load import load_processor

    # Merge in float32 (exact), then cast once.
    model = load_registered(rm, dtype="float32", allow_pickle=allow_pickle, merged=True, base=base)
    if dtype:
        model = model.to(getattr(torch, DTYPES[dtype]))
    model.save_pretrained(tmp)
    load_processor(base).inner.save_pretrained(tmp)


def _adapter(rm: RegisteredModel, base, tmp: Path, dtype: str | None, allow_pickle: bool) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from tuneline.registry.resolve import refuse_pickles

    pickles = refuse_pickles(rm.source_dir, allow_pickle=allow_pickle, what=f"the adapter of {rm.ref}")
    for f in sorted(rm.source_dir.iterdir()):
        if f.is_file() and f.name not in SKIP_IN_ADAPTER and f not in pickles:
            shutil.copy2(f, tmp / f.name)
    for p in pickles:  # allowed by the user: converted, so the export itself is safetensors
        if p.name == "adapter_model.bin":
            state = torch.load(p, map_location="cpu", weights_only=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors"))
    weights = tmp / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{rm.source_dir} has no adapter_model.safetensors", hint="is this a PEFT adapter?")
    if dtype:
        state = load_file(str(weights))
        cast = getattr(torch, DTYPES[dtype])
        save_file({k: v.to(cast) if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    cfg_file = tmp / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    # The pointer to the base: a hub id (with its commit) where there is one, else the local folder.
    cfg["base_model_name_or_path"] = rm.base_model if base.kind == "hub" else str(base.folder)
    cfg["revision"] = base.revision
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
