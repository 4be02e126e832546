"""forget: a forget request and the dataset version without its records (``tuneline data forget``).

The ledger, the selection of records and copies, and ``models affected`` are tuneline.data.forget's;
validating and writing the snapshot are the prepare stage's.
"""

from __future__ import annotations

from tuneline.config import Config
from tuneline.data.forget import Forgotten, forget_with
from tuneline.stages.prepare import build_snapshot, check


def forget(cfg: Config, records: list[str], groups: list[str]) -> Forgotten:
    """Add a forget request for ``records``/``groups`` and write the dataset version without them."""
    return forget_with(cfg, records, groups, check=check, build_snapshot=build_snapshot)
