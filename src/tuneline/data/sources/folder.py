"""An image folder with one sub-folder per class: ``root/<label>/<image>``.

Every non-hidden file under a class folder becomes a record (a file that is not an image is then
reported by the image checks, not skipped); files directly under the root are schema errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneline.data.records import Record
from tuneline.data.sources.common import RowProblem, SourceResult, no_records, prompt_messages, resolve_image
from tuneline.errors import DataError


def read(cfg: Any) -> SourceResult:
    root: Path = cfg.path.resolve()
    if not root.is_dir():
        raise DataError(f"image folder {root} not found", hint="check data.sources[].path")
    result = SourceResult()
    for path in sorted(p for p in root.rglob("*") if not any(part.startswith(".") for part in p.parts[-2:])):
        if path.is_dir():
            continue
        rel = path.relative_to(root)
        result.rows += 1
        if len(rel.parts) != 2:
            result.problem(
                "schema_error",
                f"{rel} is not inside a class folder (expected <label>/<image>)",
                str(path),
                str(rel),
            )
            continue
        try:
            image = resolve_image(str(rel), root, root, "path")  # a symlink out of the root is refused here
        except RowProblem as exc:
            result.problem(exc.check, str(exc), str(path), str(rel), exc.field_name)
            continue
        label = rel.parts[0]
        result.records.append(
            Record(
                id=rel.as_posix(),
                messages=prompt_messages([image], cfg.prompt, label, cfg.system),
                source=str(path),
                label=label,
            )
        )
    if not result.rows:
        raise no_records(root, "holds no images: expected <root>/<label>/<image> files")
    return result
