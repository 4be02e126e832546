"""Exact duplicates (same bytes) and near duplicates (perceptual hashes), across all sources.

The first record holding an image is the original; later ones are flagged with it as related.
The links also go to the splitter, so duplicates always land in the same split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tuneline.data.findings import Finding
from tuneline.data.neardup import exact_duplicate_groups, near_duplicate_pairs
from tuneline.data.records import Record


def _first_images(records: list[Record], infos: dict) -> tuple[list[Record], list]:
    """Records with a usable image, and that image's inspection (the first image of each record)."""
    usable = [(r, infos[r.images[0]]) for r in records if r.images and infos[r.images[0]].error is None]
    return [r for r, _ in usable], [i for _, i in usable]


MAX_COLOUR_SHIFT = 12.0  # mean R, G, B may differ this much (0-255): re-encoding and crops stay well inside
# Hash candidates are confirmed on pixels: correlation of 16x16 grayscale thumbnails, the best over a
# few centre zooms of either image (a crop resized back is a zoom). Measured on planted copies (JPEG q60
# re-encodes, 0.75x resizes, 4%-per-side crops; 12 data sets at 128-512 px): all >= 0.999. Different
# writers' handwritten digits (8x8 originals, whose hashes collide by the thousand): 6 of 5,576 pairs
# >= 0.99, none of them across two different digits. Without the zooms, crops scored 0.94-0.98.
MIN_PIXEL_CORRELATION = 0.995
THUMB = 16
ZOOMS = (1.0, 1.03, 1.06, 1.09, 1.12, 1.15)


def _thumbs(path: str) -> np.ndarray | None:
    """Unit-norm, zero-mean 16x16 grayscale thumbnails of the image at each zoom, stacked."""
    try:
        with Image.open(path) as im:
            im.draft("L", (THUMB * 8, THUMB * 8))  # JPEG: decode at reduced size
            im = ImageOps.exif_transpose(im).convert("L")
            w, h = im.size
            rows = []
            for z in ZOOMS:
                cw, ch = w / z, h / z
                box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
                a = np.asarray(
                    im.resize((THUMB, THUMB), Image.Resampling.BOX, box=box), dtype=np.float32
                ).ravel()
                a -= a.mean()
                norm = float(np.linalg.norm(a))
                rows.append(a / norm if norm > 0 else a)
    except Exception:  # noqa: BLE001 - inspection already judged the file readable; stay safe anyway
        return None
    return np.stack(rows)


class _Pixels:
    def __init__(self) -> None:
        self.cache: dict[str, np.ndarray | None] = {}

    def get(self, path: str) -> np.ndarray | None:
        if path not in self.cache:
            self.cache[path] = _thumbs(path)
        return self.cache[path]

    def similar(self, a: str, b: str) -> bool:
        ta, tb = self.get(a), self.get(b)
        if ta is None or tb is None:
            return True
        best = max(float((ta[0] @ tb.T).max()), float((tb[0] @ ta.T).max()))
        return best >= MIN_PIXEL_CORRELATION


def _same_colour(a, b) -> bool:
    if a.mean_rgb is None or b.mean_rgb is None:
        return True
    return max(abs(x - y) for x, y in zip(a.mean_rgb, b.mean_rgb, strict=True)) <= MAX_COLOUR_SHIFT


def check(
    records: list[Record], infos: dict, max_distance: int | None
) -> tuple[list[Finding], list[tuple[str, str]], list[tuple[str, str]]]:
    """(findings, exact links, near links): links are (original id, copy id) pairs."""
    recs, inf = _first_images(records, infos)
    findings: list[Finding] = []
    links: list[tuple[str, str]] = []
    near: list[tuple[str, str]] = []
    exact_of: dict[int, int] = {}
    for group in exact_duplicate_groups([i.sha256 for i in inf]):
        first = group[0]
        for j in group[1:]:
            exact_of[j] = first
            links.append((recs[first].id, recs[j].id))
            findings.append(
                Finding(
                    "duplicate_exact",
                    "error",
                    f"{Path(inf[j].path).name} has the same bytes as the image of {recs[first].id}",
                    recs[j].id,
                    recs[j].source,
                    "image",
                    (recs[first].id,),
                )
            )
    kwargs = {} if max_distance is None else {"max_distance": max_distance}
    pixels = _Pixels()
    for i, j, dist in near_duplicate_pairs([x.phash for x in inf], [x.dhash for x in inf], **kwargs):
        if exact_of.get(j) == i or exact_of.get(i, i) == exact_of.get(j, j):
            continue  # already reported as an exact copy of the same original
        if not _same_colour(inf[i], inf[j]):
            continue  # perceptual hashes see luminance only: a red and a green square hash alike
        if not pixels.similar(inf[i].path, inf[j].path):
            continue  # hashes of low-detail images collide: look-alikes, not copies
        near.append((recs[i].id, recs[j].id))
        findings.append(
            Finding(
                "duplicate_near",
                "error",
                f"{Path(inf[j].path).name} looks like a copy of the "
                f"image of {recs[i].id} (perceptual distance {dist})",
                recs[j].id,
                recs[j].source,
                "image",
                (recs[i].id,),
            )
        )
    return findings, links, near
