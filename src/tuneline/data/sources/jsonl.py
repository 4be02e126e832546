"""Chat JSONL: one ``{"messages": [...]}`` object per line, in the OpenAI shape.

Content is a string or a list of parts: ``{"type": "text", "text": ...}`` and
``{"type": "image", "path": ...}`` with the path relative to the JSONL file's folder, which it
may not leave. Every bad line is reported (file:line and what to fix), none skipped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneline.data.records import Record
from tuneline.errors import DataError

ROLES = ("system", "user", "assistant")
MAX_REPORTED = 20


class _LineError(Exception):
    pass


def _parts(content: Any, root: Path, msg_no: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _LineError(f"messages[{msg_no}].content must be a string or a non-empty list of parts")
    parts = []
    for j, part in enumerate(content):
        where = f"messages[{msg_no}].content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
            raise _LineError(f'{where} must be {{"type": "text", ...}} or {{"type": "image", ...}}')
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise _LineError(f"{where}.text must be a string")
            parts.append({"type": "text", "text": part["text"]})
            continue
        rel = part.get("path")
        if not isinstance(rel, str) or not rel:
            raise _LineError(f'{where}: image parts need a "path" relative to the JSONL file')
        image = (root / rel).resolve()
        if not image.is_relative_to(root):
            raise _LineError(
                f"{where}: image path {rel!r} points outside the data folder {root}; "
                "move the image under that folder"
            )
        if not image.is_file():
            raise _LineError(f"{where}: image {rel!r} does not exist (looked for {image})")
        parts.append({"type": "image", "path": str(image)})
    return parts


def _record(obj: Any, root: Path, default_id: str, source: str) -> Record:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise _LineError('expected an object with a non-empty "messages" list')
    messages = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _LineError(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        messages.append({"role": m["role"], "content": _parts(m.get("content"), root, i)})
    if not any(m["role"] == "assistant" for m in messages):
        raise _LineError('no assistant turn: add the expected answer as {"role": "assistant", ...}')
    if messages[-1]["role"] != "assistant":
        raise _LineError("the conversation must end with the assistant's answer")
    rid = obj.get("id", default_id)
    metadata = {k: v for k, v in obj.items() if k not in ("messages", "id")}
    return Record(id=str(rid), messages=messages, source=source, metadata=metadata)


def read_jsonl(path: Path) -> list[Record]:
    """All records of a chat JSONL file; raises DataError listing every bad line."""
    if not path.is_file():
        raise DataError(f"data file {path} not found", hint="check data.path (relative to the config file)")
    root = path.parent.resolve()
    records: list[Record] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            source = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{source}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                rec = _record(obj, root, f"{path.stem}-{n}", source)
            except _LineError as exc:
                errors.append(f"{source}: {exc}")
                continue
            if rec.id in seen:
                errors.append(
                    f"{source}: id {rec.id!r} already used on line {seen[rec.id]}; ids must be unique"
                )
                continue
            seen[rec.id] = n
            records.append(rec)
    if errors:
        shown = errors[:MAX_REPORTED]
        more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise DataError(
            f"{len(errors)} bad line(s) in {path}:\n  " + "\n  ".join(shown) + more,
            hint="fix these lines; tuneline never skips bad records silently",
        )
    if not records:
        raise DataError(f"{path} holds no records", hint="add one JSON object per line")
    return records
