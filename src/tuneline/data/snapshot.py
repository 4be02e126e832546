"""Content-addressed dataset versions: what training reads.

    tuneline data prepare CONFIG

A snapshot is a folder ``.tuneline/datasets/<fingerprint[:16]>/`` holding ``records.parquet``
(one row per kept record with its split), ``images/`` (normalised copies: EXIF orientation applied,
RGB, optionally resized to ``data.images.max_side``), the validation reports and ``manifest.json``.
The fingerprint covers the records, the bytes of every image and the split and normalisation
settings, so unchanged inputs reuse the snapshot and one changed image byte makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneline.config import Config
from tuneline.data.records import Record
from tuneline.data.split import SPLITS
from tuneline.runs import atomic_write_json, tuneline_version

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Snapshot:
    path: Path
    fingerprint: str
    counts: dict[str, int]
    reused: bool

    def records(self, split: str) -> list[Record]:
        import pyarrow.parquet as pq

        rows = pq.read_table(self.path / "records.parquet", filters=[("split", "=", split)]).to_pylist()
        out = []
        for row in rows:
            messages = json.loads(row["messages"])
            for m in messages:
                for p in m["content"]:
                    if p["type"] == "image":
                        p["path"] = str(self.path / p["path"])
            out.append(
                Record(
                    id=row["id"],
                    messages=messages,
                    source=row["source"],
                    metadata=json.loads(row["metadata"]),
                    label=row["label"],
                    group=row["group"],
                )
            )
        return out


def _settings(cfg: Config) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "split": cfg.data.split.model_dump(),
        "seed": cfg.run.seed,
        "max_side": cfg.data.images.max_side,
        "redact_pii": cfg.data.checks.redact_pii,
    }


def _image_name(info: Any, max_side: int | None) -> str:
    needs_resize = max_side is not None and max(info.width, info.height) > max_side
    ext = "jpg" if info.format in ("JPEG", "MPO") else "png"
    suffix = f"-{max_side}" if needs_resize else ""
    return f"{info.sha256}{suffix}.{ext}"


def content_messages(rec: Record, infos: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's messages with every image replaced by the sha256 of its bytes."""
    return [
        {
            "role": m["role"],
            "content": [
                {"type": "image", "sha256": infos[p["path"]].sha256} if p["type"] == "image" else p
                for p in m["content"]
            ],
        }
        for m in rec.messages
    ]


def fingerprint(cfg: Config, splits: dict[str, list[Record]], infos: dict[str, Any]) -> str:
    """sha256 over settings, then each record (split, id, label, group, metadata, messages) with every
    image replaced by the sha256 of its bytes: paths may move, content may not."""
    digest = hashlib.sha256(json.dumps(_settings(cfg), sort_keys=True).encode())
    for split in SPLITS:
        for rec in splits[split]:
            messages = content_messages(rec, infos)
            digest.update(
                json.dumps(
                    [split, rec.id, rec.label, rec.group, rec.metadata, messages], sort_keys=True, default=str
                ).encode()
            )
    return digest.hexdigest()


def _normalise(job: tuple[str, str, bool, int | None, str]) -> None:
    """Write one image into the snapshot: a plain copy/link when nothing changes, else re-encoded."""
    src, dst, needs_work, max_side, store = job
    if not needs_work:
        if store == "link":
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copyfile(src, dst)
        return
    from PIL import Image, ImageOps

    with Image.open(src) as opened:
        if max_side and opened.format == "JPEG":
            opened.draft("RGB", (max_side, max_side))  # decode at reduced size: much faster for photos
        im = ImageOps.exif_transpose(opened)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            background = Image.new("RGB", im.size, (255, 255, 255))
            background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
            im = background
        elif im.mode.startswith("I;16") or im.mode == "I":
            im = im.point(lambda v: v / 256).convert("L")
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if dst.endswith(".jpg"):
            im.save(dst, "JPEG", quality=95)
        else:
            im.save(dst, "PNG")


def build(
    cfg: Config,
    splits: dict[str, list[Record]],
    infos: dict[str, Any],
    *,
    root: Path,
    extra_files: dict[str, Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """Write (or reuse) the snapshot of a validated, split dataset under ``root``."""
    fp = fingerprint(cfg, splits, infos)
    target = root / fp[:16]
    counts = {s: len(splits[s]) for s in SPLITS}
    manifest_file = target / "manifest.json"
    if manifest_file.is_file() and json.loads(manifest_file.read_text()).get("fingerprint") == fp:
        return Snapshot(target, fp, counts, reused=True)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fp[:16]}-", dir=root))
    try:
        (tmp / "images").mkdir()
        max_side = cfg.data.images.max_side
        names: dict[str, str] = {}
        by_name: dict[str, tuple[str, str, bool, int | None, str]] = {}  # same bytes → one file
        for path in sorted({p for s in SPLITS for r in splits[s] for p in r.images}):
            info = infos[path]
            name = _image_name(info, max_side)
            names[path] = f"images/{name}"
            resize = max_side is not None and max(info.width, info.height) > max_side
            by_name.setdefault(
                name,
                (
                    path,
                    str(tmp / "images" / name),
                    bool(info.conversions) or resize,
                    max_side,
                    cfg.data.images.store,
                ),
            )
        jobs = list(by_name.values())
        if cfg.data.workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(cfg.data.workers) as pool:
                for i, _ in enumerate(pool.map(_normalise, jobs, chunksize=16), 1):
                    if progress:
                        progress(i, len(jobs))
        else:
            for i, job in enumerate(jobs, 1):
                _normalise(job)
                if progress:
                    progress(i, len(jobs))
        _write_records(tmp / "records.parquet", splits, names)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        atomic_write_json(
            tmp / "manifest.json",
            {
                "fingerprint": fp,
                "counts": counts,
                "settings": _settings(cfg),
                "tuneline_version": tuneline_version(),
                "sources": [{"type": s.type, "path": str(s.path)} for s in cfg.data.sources],
                "images": len(jobs),
            },
        )
        try:
            tmp.rename(target)
        except (
            OSError
        ):  # the same snapshot was written meanwhile (or a stale partial one): keep the complete one
            if not manifest_file.is_file():
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Snapshot(target, fp, counts, reused=False)


def _write_records(path: Path, splits: dict[str, list[Record]], names: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for split in SPLITS:
        for rec in splits[split]:
            messages = [
                {
                    "role": m["role"],
                    "content": [
                        {"type": "image", "path": names[p["path"]]} if p["type"] == "image" else p
                        for p in m["content"]
                    ],
                }
                for m in rec.messages
            ]
            rows.append(
                {
                    "id": rec.id,
                    "split": split,
                    "label": rec.label,
                    "group": rec.group,
                    "source": rec.source,
                    "messages": json.dumps(messages, ensure_ascii=False),
                    "metadata": json.dumps(rec.metadata, ensure_ascii=False, default=str),
                }
            )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("label", pa.string()),
            ("group", pa.string()),
            ("source", pa.string()),
            ("messages", pa.string()),
            ("metadata", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
