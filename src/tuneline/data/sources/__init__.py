"""Data sources: each turns an on-disk layout into canonical records plus row-level findings.

A bad row never stops reading and is never skipped silently: it becomes a finding
(malformed_row, schema_error, path_outside_root) with its file and line. Problems that make a
whole source unreadable (file missing, a configured column absent) raise DataError at once.
"""

from __future__ import annotations

from typing import Any

from tuneline.data.sources.common import SourceResult

__all__ = ["SourceResult", "read_source"]


def read_source(cfg: Any) -> SourceResult:
    """Dispatch on the source config's type (the registry of source readers)."""
    from tuneline.data.sources import folder, hf_disk, jsonl, manifest

    readers = {
        "jsonl": jsonl.read,
        "manifest": manifest.read,
        "image_folder": folder.read,
        "hf_disk": hf_disk.read,
    }
    return readers[cfg.type](cfg)
