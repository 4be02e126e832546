"""A dataset written with ``datasets.save_to_disk`` (a Dataset or a DatasetDict).

Two shapes: a ``messages`` column in the OpenAI shape whose image parts take the ``images``
column's images in order (the TRL / HF VLM convention), or an image column plus a label column
with a prompt. Image bytes stored inside the Arrow files are written once into a
content-addressed cache folder, so every later step reads ordinary image files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneline.data.records import Record
from tuneline.data.sources.common import (
    RowProblem,
    SourceResult,
    inline_cache_dir,
    no_records,
    prompt_messages,
    store_bytes,
    text_part,
)
from tuneline.errors import DataError


def _image_file(value: Any, cache: Path) -> str:
    """A datasets Image value (undecoded: {"bytes", "path"}) → a file path."""
    if not isinstance(value, dict):
        raise RowProblem("schema_error", "image value is not an image")
    raw = value.get("bytes")
    if raw is None:
        if value.get("path") and Path(value["path"]).is_file():
            raw = Path(value["path"]).read_bytes()
        else:
            raise RowProblem(
                "image_missing", f"image has no bytes and no readable path ({value.get('path')!r})"
            )
    return store_bytes(raw, Path(value.get("path") or "img.bin").suffix.lstrip("."), cache)


def _messages(raw: Any, images: list[str]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise RowProblem("schema_error", "messages must be a non-empty list", "messages")
    queue = list(images)
    messages = []
    for i, m in enumerate(raw):
        content = m.get("content")
        if isinstance(content, str):
            parts = [text_part(content)]
        else:
            parts = []
            for p in content or []:
                if p.get("type") == "image":
                    if not queue:
                        raise RowProblem(
                            "schema_error", f"messages[{i}] has more image parts than images", "images"
                        )
                    parts.append({"type": "image", "path": queue.pop(0)})
                elif p.get("type") == "text":
                    parts.append(text_part(p.get("text") or ""))
        messages.append({"role": m.get("role"), "content": parts})
    if queue:
        raise RowProblem("schema_error", f"{len(queue)} image(s) not referenced by any image part", "images")
    if not messages or messages[-1]["role"] != "assistant":
        raise RowProblem("schema_error", "the conversation must end with the assistant's answer", "messages")
    return messages


def read(cfg: Any) -> SourceResult:
    from datasets import Dataset, DatasetDict, Image, Sequence, load_from_disk

    if not cfg.path.exists():
        raise DataError(f"saved dataset {cfg.path} not found", hint="check data.sources[].path")
    try:
        loaded = load_from_disk(str(cfg.path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{cfg.path} is not a dataset saved with save_to_disk ({exc})") from exc
    parts: list[tuple[str, Dataset]]
    if isinstance(loaded, DatasetDict):
        names = [cfg.split] if cfg.split else list(loaded)
        parts = [(n, loaded[n]) for n in names]
    else:
        parts = [(cfg.split or "data", loaded)]
    cache = inline_cache_dir()
    result = SourceResult()
    for split_name, ds in parts:
        label_names = None
        if cfg.label_column and cfg.label_column in ds.features:
            label_names = getattr(ds.features[cfg.label_column], "names", None)
        for col in (cfg.images_column, cfg.image_column):
            if col and col in ds.features:
                feature = ds.features[col]
                ds = ds.cast_column(
                    col,
                    Sequence(Image(decode=False))
                    if isinstance(feature, (list, Sequence))
                    else Image(decode=False),
                )
        for i, row in enumerate(ds):
            result.rows += 1
            source = f"{cfg.path}#{split_name}[{i}]"
            rid = f"{cfg.path.name}-{split_name}-{i}"
            try:
                group = str(row[cfg.group_column]) if cfg.group_column else None
                label = None
                if cfg.label_column:
                    value = row[cfg.label_column]
                    label = label_names[value] if label_names is not None else str(value)
                if cfg.messages_column and cfg.messages_column in row:
                    images = [_image_file(v, cache) for v in (row.get(cfg.images_column) or [])]
                    messages = _messages(row[cfg.messages_column], images)
                elif cfg.image_column and cfg.prompt and label is not None:
                    messages = prompt_messages(
                        [_image_file(row[cfg.image_column], cache)], cfg.prompt, label, None
                    )
                else:
                    raise DataError(
                        f"{cfg.path}: no {cfg.messages_column!r} column; for an image + label "
                        "dataset set image_column, label_column and prompt"
                    )
            except RowProblem as exc:
                result.problem(exc.check, str(exc), source, rid, exc.field_name)
                continue
            result.records.append(
                Record(
                    id=rid,
                    messages=messages,
                    source=source,
                    label=label,
                    group=group,
                    metadata={"split": split_name} if split_name in ("train", "val", "test") else {},
                )
            )
    if not result.rows:
        raise no_records(cfg.path, "holds a dataset with no rows")
    return result
