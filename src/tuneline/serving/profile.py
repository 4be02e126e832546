"""The drift reference profile of a training run: computed from the training split of the data snapshot.

The train stage writes it beside the adapter (so it is registered with it); ``tuneline monitor profile``
computes it for a run trained before. Embeddings come from the base model's vision encoder when the
family has one that works on plain pixel batches, else from the fixed histogram embedding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tuneline.serving.drift import REFERENCE_FILE, build_reference, vision_embeddings

log = logging.getLogger("tuneline.profile")


def compute(records: list[Any], model=None, processor=None, *, max_records: int = 500) -> dict:
    embed = None
    if model is not None and processor is not None and processor.multimodal:
        import numpy as np

        def embed(images):
            was_training = model.training
            model.eval()
            try:
                rows = []
                for i in range(0, len(images), 16):
                    got = vision_embeddings(model, processor, images[i : i + 16])
                    if got is None:
                        return None
                    rows.append(got)
                return np.concatenate(rows)
            finally:
                model.train(was_training)

    return build_reference(records, embed=embed, max_records=max_records)


def write_into(folder: Path, records: list[Any], model=None, processor=None) -> Path | None:
    """Write the profile into ``folder`` (an adapter folder being saved); never fails the caller."""
    from tuneline.runs import atomic_write_json

    try:
        profile = compute(records, model, processor)
    except Exception:  # noqa: BLE001 - a missing profile only disables drift monitoring
        log.warning("could not compute the drift reference profile", exc_info=True)
        return None
    path = folder / REFERENCE_FILE
    atomic_write_json(path, profile)
    return path


def write_profile(cfg, run) -> Path:
    """Compute a run's profile with its base model and write it into the run's adapter folder."""
    from tuneline.data.records import read_records
    from tuneline.errors import RunDirError
    from tuneline.models.load import load_model, load_processor, resolve_base

    if not run.adapter_dir.is_dir():
        raise RunDirError(f"{run.path} has no adapter/ folder", hint="train the run first (tuneline train)")
    records = list(read_records(run.split_file("train")))
    resolved = resolve_base(cfg.model)
    model, processor = load_model(resolved, cfg.model.dtype), load_processor(resolved)
    path = write_into(run.adapter_dir, records, model, processor)
    if path is None:
        raise RunDirError("the drift reference profile could not be computed (see the log)")
    return path
