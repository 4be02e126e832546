"""Exact duplicates (same bytes) and near duplicates (re-encoded, resized or cropped copies).

The first record holding an image is the original; later ones are flagged with it as related.
The links also go to the splitter, so duplicates always land in the same split.

Perceptual hashes only nominate candidates (a wide net: phash <= 20 of 64 bits, phash + dhash <= 36,
found by the sub-quadratic index in tuneline.data.neardup); each candidate is then confirmed on
pixels, which is what separates a copy from a look-alike:
  * colour: the mean RGB of the central 70% (crops and vignettes leave it alone) may differ by at most
    MAX_COLOUR_SHIFT per channel; hashes see luminance only, so a red and a green square would
    otherwise be "copies";
  * structure: the correlation of 16x16 RGB thumbnails (each channel centred), the best over a grid of
    anisotropic zooms (1-1.1x) and shifts (+-2.5%) of either image (a crop resized back is a zoom
    plus a shift), must reach MIN_PIXEL_CORRELATION.
Colour thumbnails rather than grayscale: a blue triangle on yellow and a green one on lilac share
their grayscale structure and their mean colour, not their channels.
Measured: 80 crops of 0-5% per side (some also resized and re-encoded) all >= 0.9917 with a colour
shift <= 6; re-encoded and resized copies >= 0.999. Distinct synthetic lesions nominated by the
hashes: <= 0.925. Handwritten digits of different writers (8x8 originals, whose hashes collide by
the thousand): no pair of two different digits reaches 0.98.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tuneline.data.findings import Finding
from tuneline.data.neardup import exact_duplicate_groups, near_duplicate_pairs
from tuneline.data.records import Record

CANDIDATE_DISTANCE = 20
CANDIDATE_TOTAL_DISTANCE = 36
MAX_COLOUR_SHIFT = 12.0
MIN_PIXEL_CORRELATION = 0.985
THUMB = 16
SCALES = (1.0, 1.025, 1.05, 1.075, 1.1)
SHIFTS = (-0.025, 0.0, 0.025)
_GRID = [(zx, zy, sx, sy) for zx in SCALES for zy in SCALES for sx in SHIFTS for sy in SHIFTS]
_BASE = _GRID.index((1.0, 1.0, 0.0, 0.0))

Thumbs = tuple[np.ndarray, np.ndarray]  # (grid of unit-norm thumbnails, central mean RGB)


Reduced = tuple[np.ndarray, np.ndarray]  # (the image at most 64x64 RGB uint8, central mean RGB)
GRID_CACHE = 256  # unit-norm thumbnail grids kept at once (~0.7 MB each); the rest are recomputed


def _reduce(path: str) -> Reduced | None:
    """The small image every comparison starts from (<= 64x64 RGB, 12 KB) and its central colour."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (THUMB * 8, THUMB * 8))  # JPEG: decode at reduced size
            im = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception:  # noqa: BLE001 - inspection already judged the file readable; stay safe anyway
        return None
    w, h = im.size
    centre = (w * 0.15, h * 0.15, w * 0.85, h * 0.85)
    colour = np.asarray(im.resize((1, 1), Image.Resampling.BOX, box=centre), dtype=np.float32).ravel()
    if min(w, h) > THUMB * 4:
        im = im.resize((THUMB * 4, THUMB * 4), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.uint8).copy(), colour


def _box_weights(size: int, lo: float, hi: float) -> np.ndarray:
    """(THUMB, size) weights of PIL's BOX resample of the source span [lo, hi) to THUMB pixels."""
    scale = (hi - lo) / THUMB
    support = 0.5 * max(scale, 1.0)
    out = np.zeros((THUMB, size), dtype=np.float64)
    for i in range(THUMB):
        centre = lo + (i + 0.5) * scale
        x0 = max(int(centre - support + 0.5), 0)
        x1 = min(int(centre + support + 0.5), size)
        t = (np.arange(x0, x1) - centre + 0.5) / max(scale, 1.0)
        w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        out[i, x0:x1] = w / w.sum() if w.sum() else w
    return out


_AXIS = [(z, s) for z in SCALES for s in SHIFTS]  # per axis, in _GRID's nesting order


@functools.lru_cache(maxsize=64)
def _axis_weights(size: int) -> np.ndarray:
    rows = []
    for z, s in _AXIS:
        c = size / z
        m = (size - c) / 2
        centre = size / 2 + max(-m, min(m, s * size))
        rows.append(_box_weights(size, centre - c / 2, centre + c / 2))
    return np.stack(rows).astype(np.float32)  # (len(_AXIS), THUMB, size)


def _grid(small: np.ndarray) -> np.ndarray:
    """Unit-norm 16x16 RGB thumbnails over the zoom/shift grid of one reduced image.

    One separable matrix product per axis (PIL's BOX weights, in float) instead of 225 resizes:
    ~50x faster, the same thumbnails up to PIL's 8-bit rounding between its two passes.
    """
    h, w = small.shape[:2]
    wx, wy = _axis_weights(w), _axis_weights(h)  # (A, T, w), (A, T, h)
    img = small.astype(np.float32).transpose(2, 0, 1)  # (3, h, w)
    cols = img[None] @ wx.transpose(0, 2, 1)[:, None]  # (A_x, 3, h, T)
    thumbs = wy[:, None, None] @ cols[None]  # (A_y, A_x, 3, T, T)
    thumbs = thumbs.transpose(0, 1, 3, 4, 2)  # (A_y, A_x, T_y, T_x, 3)
    # _GRID order: zx, zy, sx, sy -> index (zx, sx) on x and (zy, sy) on y.
    n_z, n_s = len(SCALES), len(SHIFTS)
    t = thumbs.reshape(n_z, n_s, n_z, n_s, THUMB, THUMB, 3)  # (zy, sy, zx, sx, ...)
    t = t.transpose(2, 0, 3, 1, 4, 5, 6).reshape(len(_GRID), THUMB * THUMB, 3)
    t = t - t.mean(axis=1, keepdims=True)  # per channel: a colour cast is not structure
    t = t.reshape(len(_GRID), -1)
    norms = np.linalg.norm(t, axis=1, keepdims=True)
    return np.where(norms > 0, t / np.where(norms > 0, norms, 1), t)


def _grid_pil(small: np.ndarray) -> np.ndarray:
    """The reference: 225 PIL resizes (kept for the test that pins _grid to it)."""
    im = Image.fromarray(small, "RGB")
    w, h = im.size
    rows = []
    for zx, zy, sx, sy in _GRID:
        cw, ch = w / zx, h / zy
        mx, my = (w - cw) / 2, (h - ch) / 2
        cx, cy = w / 2 + max(-mx, min(mx, sx * w)), h / 2 + max(-my, min(my, sy * h))
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        a = np.asarray(im.resize((THUMB, THUMB), Image.Resampling.BOX, box=box), dtype=np.float32)
        a = (a - a.mean(axis=(0, 1))).ravel()  # per channel: a colour cast is not structure
        norm = float(np.linalg.norm(a))
        rows.append(a / norm if norm > 0 else a)
    return np.stack(rows)


def _thumbs(path: str) -> Thumbs | None:
    reduced = _reduce(path)
    return None if reduced is None else (_grid(reduced[0]), reduced[1])


class _Pixels:
    """Per image that a candidate pair names: the file is decoded once into a 12 KB reduced image
    (kept: O(images) x 12 KB, not the ~0.7 MB grid); grids are derived from it and only the
    GRID_CACHE most recently used are kept (pairs come sorted, so the first image repeats)."""

    def __init__(self, grid_cache: int = GRID_CACHE) -> None:
        self.reduced: dict[str, Reduced | None] = {}
        self.grids: OrderedDict[str, np.ndarray] = OrderedDict()
        self.grid_cache = grid_cache

    def get(self, path: str) -> Thumbs | None:
        if path not in self.reduced:
            self.reduced[path] = _reduce(path)
        reduced = self.reduced[path]
        if reduced is None:
            return None
        grid = self.grids.get(path)
        if grid is None:
            grid = self.grids[path] = _grid(reduced[0])
            if len(self.grids) > self.grid_cache:
                self.grids.popitem(last=False)
        else:
            self.grids.move_to_end(path)
        return grid, reduced[1]

    def colour(self, path: str) -> np.ndarray | None:
        if path not in self.reduced:
            self.reduced[path] = _reduce(path)
        reduced = self.reduced[path]
        return None if reduced is None else reduced[1]

    def same(self, a: str, b: str) -> bool:
        ca, cb = self.colour(a), self.colour(b)
        if ca is None or cb is None:
            return True
        if float(np.abs(ca - cb).max()) > MAX_COLOUR_SHIFT:
            return False  # the colour test first: it needs no grid
        ta, tb = self.get(a), self.get(b)
        if ta is None or tb is None:
            return True
        best = max(float((ta[0][_BASE] @ tb[0].T).max()), float((tb[0][_BASE] @ ta[0].T).max()))
        return best >= MIN_PIXEL_CORRELATION


def _first_images(records: list[Record], infos: dict) -> tuple[list[Record], list]:
    """Records with a usable image, and that image's inspection (the first image of each record)."""
    usable = [(r, infos[r.images[0]]) for r in records if r.images and infos[r.images[0]].error is None]
    return [r for r, _ in usable], [i for _, i in usable]


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
            message = f"{Path(inf[j].path).name} has the same bytes as the image of {recs[first].id}"
            findings.append(
                Finding(
                    "duplicate_exact",
                    "error",
                    message,
                    recs[j].id,
                    recs[j].source,
                    "image",
                    (recs[first].id,),
                )
            )
    distance = CANDIDATE_DISTANCE if max_distance is None else max_distance
    total = CANDIDATE_TOTAL_DISTANCE if max_distance is None else None
    pixels = _Pixels()
    candidates = near_duplicate_pairs(
        [x.phash for x in inf], [x.dhash for x in inf], max_distance=distance, max_total_distance=total
    )
    for i, j, dist in candidates:
        if exact_of.get(j) == i or exact_of.get(i, i) == exact_of.get(j, j):
            continue  # already reported as an exact copy of the same original
        if not pixels.same(inf[i].path, inf[j].path):
            continue  # nominated by the hashes, but a look-alike (or another colour), not a copy
        near.append((recs[i].id, recs[j].id))
        message = (
            f"{Path(inf[j].path).name} looks like a copy of the image of {recs[i].id} (hash distance {dist})"
        )
        findings.append(
            Finding("duplicate_near", "error", message, recs[j].id, recs[j].source, "image", (recs[i].id,))
        )
    return findings, links, near
