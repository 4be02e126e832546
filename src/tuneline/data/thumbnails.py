"""Thumbnails for ``data_report.html``: small JPEGs embedded as ``data:`` URIs, made once per record.

A record whose image cannot be shown (absent from the mapping, missing on disk, unreadable) gets a
reason instead, which the page draws as a placeholder box.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps


@dataclass(frozen=True)
class Thumb:
    """One record's picture on the page: a data URI, or a reason for the placeholder box."""

    record_id: str
    uri: str | None
    reason: str = ""  # "missing", "unreadable" or "no image" when uri is None
    split: str | None = None


def make_thumbnail(path: str | Path, px: int = 96) -> tuple[str | None, str]:
    """A ``data:image/jpeg;base64,...`` URI of at most ``px`` × ``px``, or ``(None, reason)``.

    Never raises: a path that does not exist gives ``"missing"``, anything that fails to open or
    decode (not an image, truncated, too large, odd mode) gives ``"unreadable"``.
    """
    try:
        p = Path(path)
        if not p.is_file():
            return None, "missing"
    except Exception:  # noqa: BLE001 - invalid path (NUL byte, too long, permissions)
        return None, "missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                im.draft("RGB", (px * 2, px * 2))  # JPEG: decode at reduced scale (no-op otherwise)
                im.load()
                img: Image.Image = ImageOps.exif_transpose(im) or im
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    img = img.point(lambda v: v / 256).convert("L")
                elif img.mode == "F":
                    img = img.convert("L")
                has_alpha = img.mode in ("RGBA", "LA", "PA") or (
                    img.mode == "P" and "transparency" in img.info
                )
                img = img.convert("RGBA" if has_alpha else "RGB")
                img.thumbnail((px, px), Image.Resampling.LANCZOS)
                if has_alpha:
                    flat = Image.new("RGB", img.size, (255, 255, 255))
                    flat.paste(img, mask=img.getchannel("A"))
                    img = flat
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=82, optimize=True)
    except Exception:  # noqa: BLE001 - any failure to decode is a placeholder, never a crash
        return None, "unreadable"
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), ""


class _Thumbs:
    """Thumbnails made on demand, once per record id."""

    def __init__(self, paths: Mapping[str, str | Path], px: int, splits: Mapping[str, str]) -> None:
        self._paths = paths
        self._px = px
        self._splits = splits
        self._cache: dict[str, Thumb] = {}

    def has(self, record_id: str | None) -> bool:
        return record_id is not None and record_id in self._paths

    def get(self, record_id: str) -> Thumb:
        thumb = self._cache.get(record_id)
        if thumb is None:
            path = self._paths.get(record_id)
            if path is None:
                uri, reason = None, "no image"
            else:
                uri, reason = make_thumbnail(path, self._px)
            thumb = Thumb(record_id, uri, reason, self._splits.get(record_id))
            self._cache[record_id] = thumb
        return thumb
