"""Chat JSONL: one ``{"messages": [...]}`` object per line, in the OpenAI shape.

Content is a string or a list of parts: ``{"type": "text", "text": ...}``, ``{"type": "image",
"path": ...}`` or the OpenAI ``{"type": "image_url", "image_url": {"url": ...}}``. Image references
are paths relative to the JSONL file's folder (which they may not leave), ``file://`` URLs or base64
``data:`` URIs; remote URLs are refused. Optional top-level ``id``, ``label``, ``group`` and
``split``; every other key is kept as metadata. Every bad line becomes a finding with file:line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneline.data.records import Record
from tuneline.data.sources.common import (
    SPLIT_NAMES,
    RowProblem,
    SourceResult,
    inline_cache_dir,
    no_records,
    require_file,
    resolve_image,
    text_lines,
    text_part,
)

ROLES = ("system", "user", "assistant")


def _parts(content: Any, root: Path, msg_no: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [text_part(content)]
    if not isinstance(content, list) or not content:
        raise RowProblem(
            "schema_error", f"messages[{msg_no}].content must be a string or a non-empty list of parts"
        )
    parts = []
    for j, part in enumerate(content):
        where = f"messages[{msg_no}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RowProblem("schema_error", f"{where}.text must be a string")
            parts.append(text_part(part["text"]))
        elif kind in ("image", "image_url"):
            ref = part.get("path") or part.get("image") if kind == "image" else (part.get("image_url") or {})
            if isinstance(ref, dict):
                ref = ref.get("url")
            if not isinstance(ref, str) or not ref:
                raise RowProblem("schema_error", f'{where}: image parts need a "path" (or image_url.url)')
            parts.append({"type": "image", "path": resolve_image(ref, root, inline_cache_dir(), where)})
        else:
            raise RowProblem("schema_error", f"{where} must be a text, image or image_url part")
    return parts


def _record(obj: Any, root: Path, default_id: str, source: str) -> Record:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise RowProblem("schema_error", 'expected an object with a non-empty "messages" list', "messages")
    messages = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RowProblem(
                "schema_error", f"messages[{i}].role must be one of {', '.join(ROLES)}", "messages"
            )
        messages.append({"role": m["role"], "content": _parts(m.get("content"), root, i)})
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem(
            "schema_error",
            'no assistant turn: add the expected answer as {"role": "assistant", ...}',
            "messages",
        )
    if messages[-1]["role"] != "assistant":
        raise RowProblem("schema_error", "the conversation must end with the assistant's answer", "messages")
    split = obj.get("split")
    if split is not None and split not in SPLIT_NAMES:
        raise RowProblem("schema_error", f"split {split!r} must be one of {', '.join(SPLIT_NAMES)}", "split")
    label, group = obj.get("label"), obj.get("group")
    metadata = {k: v for k, v in obj.items() if k not in ("messages", "id", "label", "group")}
    return Record(
        id=str(obj.get("id", default_id)),
        messages=messages,
        source=source,
        metadata=metadata,
        label=None if label is None else str(label),
        group=None if group is None else str(group),
    )


def read(cfg: Any) -> SourceResult:
    path: Path = cfg.path
    require_file(path, "data file")
    root = path.parent.resolve()
    result = SourceResult()
    seen: dict[str, int] = {}
    lines, bad = text_lines(path, cfg.encoding)
    if not any(line.strip() for line in lines):
        raise no_records(path, "has no lines" if not lines else "has only blank lines")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result.rows += 1
        source = f"{path}:{n}"
        if n in bad:
            result.problem("malformed_row", bad[n].message(), source)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            result.problem("malformed_row", f"not valid JSON ({exc.msg} at column {exc.colno})", source)
            continue
        rid = str(obj.get("id", f"{path.stem}-{n}")) if isinstance(obj, dict) else None
        try:
            rec = _record(obj, root, f"{path.stem}-{n}", source)
        except RowProblem as exc:
            result.problem(exc.check, str(exc), source, rid, exc.field_name)
            continue
        if rec.id in seen:
            result.problem(
                "schema_error",
                f"id {rec.id!r} already used on line {seen[rec.id]}; ids must be unique",
                source,
                rec.id,
                "id",
            )
            continue
        seen[rec.id] = n
        result.records.append(rec)
    return result
