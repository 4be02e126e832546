"""The one way the generators write a file: atomically, through tuneline.runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneline.runs import atomic_write_text


def write_jsonl(path: Path, lines: list[dict[str, Any]], *, ensure_ascii: bool = True) -> Path:
    """One JSON object a line, written atomically; return ``path``."""
    atomic_write_text(path, "".join(json.dumps(line, ensure_ascii=ensure_ascii) + "\n" for line in lines))
    return path
