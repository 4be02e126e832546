"""Deterministic train/val/test split of records (same records + seed → same split)."""

from __future__ import annotations

import random

from tuneline.config.schema import SplitConfig
from tuneline.data.records import Record
from tuneline.errors import DataError

SPLITS = ("train", "val", "test")


def split_records(records: list[Record], cfg: SplitConfig, seed: int) -> dict[str, list[Record]]:
    ordered = sorted(records, key=lambda r: r.id)  # independent of file order
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_test = max(1, round(n * cfg.test))
    n_val = round(n * cfg.val) if cfg.val > 0 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(
            f"{n} record(s) are too few for the split {cfg.train}/{cfg.val}/{cfg.test}",
            hint="add data or change data.split",
        )
    return {
        "train": ordered[:n_train],
        "val": ordered[n_train : n_train + n_val],
        "test": ordered[n_train + n_val :],
    }
