"""A manifest table (CSV or Parquet): one image per row, a label, optional group and metadata.

Rows become conversations through the configured prompt template ({column} placeholders). The
SIIM-ISIC 2020 layout works as-is: ``image_column: image_name, image_extension: .jpg,
label_column: target, labels: {"0": benign, "1": malignant}, group_column: patient_id``.
"""

from __future__ import annotations

import csv
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneline.data.records import Record
from tuneline.data.sources.common import (
    SPLIT_NAMES,
    RowProblem,
    SourceResult,
    missing_columns,
    no_records,
    prompt_messages,
    require_file,
    resolve_image,
    text_lines,
)
from tuneline.errors import DataError


def _rows(
    path: Path, encoding: str, result: SourceResult
) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """(columns, iterator of (source location, row dict)); malformed CSV lines become findings."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise DataError(f"[malformed_row] {path} is not a readable Parquet file ({exc})") from exc
        if not table.num_rows:
            raise no_records(path, "has columns and no rows")
        columns = table.column_names
        return columns, ((f"{path}#row={i + 1}", row) for i, row in enumerate(table.to_pylist()))

    lines, bad = text_lines(path, encoding)
    if 1 in bad:
        raise DataError(f"[malformed_row] {path}:1 (the header): {bad[1].message()}")
    reader = csv.reader(lines)
    try:
        columns = next(reader)
    except StopIteration:
        raise no_records(path, "is empty: expected a header line and rows") from None
    if not any(line.strip() for line in lines[reader.line_num :]):
        raise no_records(path, "has a header and no rows")

    def gen() -> Iterator[tuple[str, dict[str, Any]]]:
        line = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                result.rows += 1
                result.problem("malformed_row", f"unparsable CSV ({exc})", f"{path}:{reader.line_num}")
                line = reader.line_num
                continue
            start, line = line + 1, reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            undecodable = next((bad[n] for n in range(start, line + 1) if n in bad), None)
            if undecodable is not None:
                result.rows += 1
                result.problem("malformed_row", undecodable.message(), f"{path}:{undecodable.line}")
                continue
            if len(values) != len(columns):
                result.rows += 1
                result.problem(
                    "malformed_row",
                    f"{len(values)} fields where the header has {len(columns)}",
                    f"{path}:{start}",
                )
                continue
            yield f"{path}:{start}", dict(zip(columns, values, strict=True))

    return columns, gen()


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_LEADING_ZERO = re.compile(r"[+-]?0\d")  # "007", "0012": an identifier, not a number
_MISSING = {"", "na", "n/a", "nan", "null", "none"}


def numbers_from_text(values: list[Any]) -> list[Any] | None:
    """One column's values as numbers when they are numbers written as text (a CSV's "70.0"), else None.

    The column converts only when every value is text, every non-missing one a plain decimal number
    and none has a leading zero (an identifier such as "0012" stays text): all integers give int,
    else float. Missing cells (empty, NA, NaN, null, none) become None.
    """
    if not values or not all(isinstance(v, str) for v in values):
        return None
    present = [v.strip() for v in values if v.strip().lower() not in _MISSING]
    if not present or not all(_NUMBER.fullmatch(v) and not _LEADING_ZERO.match(v) for v in present):
        return None
    as_number = int if all(_INTEGER.fullmatch(v) for v in present) else float
    return [None if v.strip().lower() in _MISSING else as_number(v.strip()) for v in values]


def _numbers_from_text(records: list[Record], columns: list[str]) -> None:
    """Metadata columns that hold numbers written as text become numbers in place (see
    :func:`numbers_from_text`). Values already typed (Parquet) stay."""
    for col in columns:
        holding = [r for r in records if col in r.metadata]
        converted = numbers_from_text([r.metadata[col] for r in holding])
        for r, v in zip(holding, converted or [], strict=False):
            r.metadata[col] = v


def _label_text(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if text.endswith(".0") and text[:-2].lstrip("-").isdigit():  # 1.0 from a float column means 1
        text = text[:-2]
    return text


def read(cfg: Any) -> SourceResult:
    path: Path = cfg.path
    require_file(path, "manifest")
    image_root = (cfg.image_dir or path.parent).resolve()
    id_column = cfg.id_column or cfg.image_column
    result = SourceResult()
    columns, rows = _rows(path, cfg.encoding, result)
    missing_columns(
        path,
        columns,
        {
            "image_column": cfg.image_column,
            "label_column": cfg.label_column,
            "id_column": id_column,
            "group_column": cfg.group_column,
            "split_column": cfg.split_column,
            **{f"metadata_columns[{i}]": c for i, c in enumerate(cfg.metadata_columns or [])},
        },
    )
    fields = {name for _, name, _, _ in string.Formatter().parse(cfg.prompt) if name}
    missing_columns(path, columns, {f"prompt {{{f}}}": f for f in fields})
    keep = cfg.metadata_columns if cfg.metadata_columns is not None else columns
    seen: dict[str, str] = {}
    for source, row in rows:
        result.rows += 1
        rid = str(row.get(id_column) or "").strip() or None
        try:
            if rid is None:
                raise RowProblem("schema_error", f"empty {id_column!r}", id_column)
            if rid in seen:
                raise RowProblem(
                    "schema_error", f"id {rid!r} already used at {seen[rid]}; ids must be unique", id_column
                )
            name = str(row.get(cfg.image_column) or "").strip()
            if not name:
                raise RowProblem("schema_error", f"empty {cfg.image_column!r}", cfg.image_column)
            image = resolve_image(name + cfg.image_extension, image_root, image_root, cfg.image_column)
            raw_label = _label_text(row.get(cfg.label_column))
            if cfg.labels is not None:
                if raw_label not in cfg.labels:
                    raise RowProblem(
                        "schema_error",
                        f"{cfg.label_column} {raw_label!r} is not one of "
                        f"{', '.join(map(repr, cfg.labels))} (data.sources labels)",
                        cfg.label_column,
                    )
                answer = cfg.labels[raw_label]
            elif not raw_label:
                raise RowProblem("schema_error", f"empty {cfg.label_column!r}", cfg.label_column)
            else:
                answer = raw_label
            group = None
            if cfg.group_column:
                group = str(row.get(cfg.group_column) or "").strip()
                if not group:
                    raise RowProblem("schema_error", f"empty {cfg.group_column!r}", cfg.group_column)
            metadata = {k: row[k] for k in keep if k in row}
            if cfg.split_column:
                split = str(row.get(cfg.split_column) or "").strip()
                if split not in SPLIT_NAMES:
                    raise RowProblem(
                        "schema_error",
                        f"{cfg.split_column} {split!r} must be one of {', '.join(SPLIT_NAMES)}",
                        cfg.split_column,
                    )
                metadata["split"] = split
            prompt = cfg.prompt.format_map({k: "" if v is None else v for k, v in row.items()})
        except RowProblem as exc:
            result.problem(exc.check, str(exc), source, rid, exc.field_name)
            continue
        seen[rid] = source
        result.records.append(
            Record(
                id=rid,
                messages=prompt_messages([image], prompt, answer, cfg.system),
                source=source,
                metadata=metadata,
                label=answer,
                group=group,
            )
        )
    # Numbers read as text become numbers (evaluation bands them); the columns that name a record
    # (id, image, label, group, split) stay text.
    roles = {id_column, cfg.image_column, cfg.label_column, cfg.group_column, cfg.split_column}
    if cfg.split_column:
        roles.add("split")
    _numbers_from_text(result.records, [c for c in keep if c not in roles])
    if not result.rows:  # every line after the header was empty cells (",,,")
        raise no_records(path, "has a header and no rows (only empty cells)")
    return result
