"""What every source reader shares: results, row problems, text decoding, images and chat messages.

(The readers import this module; the package's ``read_source`` imports the readers.)
"""

from __future__ import annotations

import base64
import binascii
import codecs
import difflib
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tuneline.data.findings import Finding
from tuneline.data.records import Record
from tuneline.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SourceResult:
    records: list[Record] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # severity is set later, from the check's action
    rows: int = 0  # rows or lines seen, bad ones included

    def problem(
        self,
        check: str,
        message: str,
        source: str,
        record_id: str | None = None,
        field_name: str | None = None,
    ) -> None:
        self.findings.append(
            Finding(
                check=check,
                severity="error",
                message=message,
                record_id=record_id,
                source=source,
                field=field_name,
            )
        )


class RowProblem(Exception):
    """Raised while building one record; becomes a finding for that row."""

    def __init__(self, check: str, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.check = check
        self.field_name = field_name


def require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(
            f"{what} {path} not found",
            hint="check the path in data.sources (relative paths are resolved against the config file)",
        )


@dataclass(frozen=True)
class BadBytes:
    """Where a line stopped decoding: its number, the file offset of the first bad byte, the bytes."""

    line: int
    offset: int
    data: bytes
    encoding: str

    def message(self) -> str:
        return (
            f"byte {' '.join(f'0x{b:02X}' for b in self.data)} at byte offset {self.offset} is not valid "
            f"{self.encoding}; set encoding: on this data.sources entry to the file's encoding "
            "(e.g. latin-1, cp1252)"
        )


_WIDE_BOMS = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}  # UTF-32 first: its little-endian BOM starts with UTF-16's


def text_lines(path: Path, encoding: str) -> tuple[list[str], dict[int, BadBytes]]:
    """The file's lines (1-based line i is ``lines[i - 1]``, line ends kept), decoded strictly.

    A line holding a byte that does not decode is returned with that byte as a lone surrogate
    (``surrogateescape``, so a CSV reader keeps its quoting in step) and is listed in the second
    value: the caller turns it into a malformed_row finding, never into text. A UTF-8 BOM is
    skipped; a UTF-16/32 file read as UTF-8 (BOM or NUL bytes) raises DataError naming the encoding.
    """
    raw = path.read_bytes()
    name = codecs.lookup(encoding).name
    if name in ("utf-8", "utf-8-sig"):
        wide = next((enc for bom, enc in _WIDE_BOMS.items() if raw.startswith(bom)), None)
        if wide or b"\x00" in raw[:4096]:
            why = f"starts with a {wide.upper()} byte-order mark" if wide else "contains NUL bytes"
            raise DataError(
                f"[malformed_row] {path} {why}: it is not {encoding} text (UTF-16 or UTF-32?)",
                hint=f"set encoding: {wide or 'utf-16'} on this data.sources entry, "
                "or re-save the file as UTF-8",
            )
        name = "utf-8"
    # a UTF-8 BOM is skipped, but offsets stay offsets into the file
    start = len(codecs.BOM_UTF8) if name == "utf-8" and raw.startswith(codecs.BOM_UTF8) else 0
    if "\n".encode(name) != b"\n":  # UTF-16/32: not line-splittable as bytes; decode the whole file
        try:
            text = raw.decode(name)
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].decode(name, errors="ignore").count("\n") + 1
            raise DataError(
                f"[malformed_row] {path}:{line}: "
                + BadBytes(line, exc.start, raw[exc.start : exc.end], encoding).message()
            ) from None
        return io.StringIO(text, newline="").readlines(), {}
    lines: list[str] = []
    bad: dict[int, BadBytes] = {}
    offset = start
    for n, chunk in enumerate(raw[start:].splitlines(keepends=True), start=1):
        try:
            lines.append(chunk.decode(name))
        except UnicodeDecodeError as exc:
            bad[n] = BadBytes(n, offset + exc.start, chunk[exc.start : exc.end], encoding)
            lines.append(chunk.decode(name, errors="surrogateescape"))
        offset += len(chunk)
    return lines, bad


def no_records(path: Path, why: str) -> DataError:
    return DataError(
        f"no records: {path} {why}",
        hint="point data.sources at the file that holds the data, or remove this source",
    )


def missing_columns(path: Path, columns: list[str], wanted: dict[str, str | None]) -> None:
    """Raise a schema_error DataError naming every configured column the table lacks."""
    problems = []
    for key, column in wanted.items():
        if column is not None and column not in columns:
            close = difflib.get_close_matches(column, columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}={column!r}{hint}")
    if problems:
        raise DataError(
            f"[schema_error] {path}: column(s) missing: {', '.join(problems)}; "
            f"the table has {', '.join(columns)}",
            hint="fix the column names in data.sources or in the file",
        )


def store_bytes(raw: bytes, ext: str, folder: Path) -> str:
    """Write image bytes once into a content-addressed folder (name = sha256); return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(raw).hexdigest()}.{(ext or 'bin')[:8]}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        tmp.replace(path)
    return str(path)


def resolve_image(ref: str, root: Path, inline_dir: Path, field_name: str | None = None) -> str:
    """An image reference → an absolute path inside ``root`` (or the inline-image cache).

    Accepts a path relative to ``root``, a ``file://`` URL, or a base64 ``data:`` URI (decoded into
    the content-addressed cache). Refuses remote URLs and anything resolving outside ``root``.
    ``field_name`` (the column or message part holding ``ref``) is named by the findings.
    """
    if ref.startswith("data:"):
        head, _, payload = ref.partition(",")
        if ";base64" not in head or not payload:
            raise RowProblem(
                "schema_error", "data: URI must be base64 encoded (data:image/png;base64,...)", field_name
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RowProblem("schema_error", f"invalid base64 in data: URI ({exc})", field_name) from None
        return store_bytes(raw, head[5:].split(";")[0].split("/")[-1], inline_dir)
    parsed = urlparse(ref)
    if parsed.scheme in ("http", "https", "s3", "gs", "ftp"):
        raise RowProblem(
            "schema_error",
            f"remote image {ref!r} refused: download it and reference the file "
            "(tuneline does not fetch remote images)",
            field_name,
        )
    if parsed.scheme == "file":
        ref = unquote(parsed.path)
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise RowProblem(
            "path_outside_root",
            f"image path {ref!r} points outside the data folder {root}; move the image under that folder",
            field_name,
        )
    return str(path)


def image_part(path: str) -> dict[str, Any]:
    return {"type": "image", "path": path}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def prompt_messages(images: list[str], prompt: str, answer: str, system: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [text_part(system)]})
    messages.append({"role": "user", "content": [*(image_part(p) for p in images), text_part(prompt)]})
    messages.append({"role": "assistant", "content": [text_part(answer)]})
    return messages


def inline_cache_dir() -> Path:
    from tuneline.runs import workspace

    return workspace() / "cache" / "inline-images"
