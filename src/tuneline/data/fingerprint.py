"""Content fingerprint of a prepared dataset: records, image bytes and split settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuneline.data.records import Record


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(splits: dict[str, list[Record]], settings: dict[str, Any]) -> str:
    """sha256 over the split settings, each record (with its split) and each image's bytes.

    Image paths are replaced by content hashes, so moving the data folder keeps the fingerprint
    and changing one image byte changes it.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    image_hash: dict[str, str] = {}
    for name in sorted(splits):
        for rec in splits[name]:
            messages = []
            for m in rec.messages:
                parts = []
                for p in m["content"]:
                    if p["type"] == "image":
                        h = image_hash.setdefault(p["path"], file_sha256(p["path"]))
                        parts.append({"type": "image", "sha256": h})
                    else:
                        parts.append(p)
                messages.append({"role": m["role"], "content": parts})
            digest.update(json.dumps([name, rec.id, messages], sort_keys=True).encode())
    return digest.hexdigest()
