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
from tuneline.data.neardup import exact_duplicate_groups, near_duplicate_batches, unique_pairs
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
POOL_MIN_IMAGES = 2048  # fewer images to grid (~1 ms each) are done here: a pool costs more to start
REDUCED_CACHE = 16384  # reduced images kept at once (12 KB each: <= 200 MB); the rest are re-decoded


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
    n_a, n_z, n_s = len(_AXIS), len(SCALES), len(SHIFTS)
    img = small.astype(np.float32).transpose(2, 0, 1)  # (3, h, w)
    # Two GEMMs: x first for every axis option, then y; rows (ay, s), columns (c, ax, t).
    cols = img.reshape(3 * h, w) @ wx.reshape(n_a * THUMB, w).T  # (3h, A*T)
    cols = cols.reshape(3, h, n_a * THUMB).transpose(1, 0, 2).reshape(h, 3 * n_a * THUMB)
    thumbs = (wy.reshape(n_a * THUMB, h) @ cols).reshape(n_a, THUMB, 3, n_a, THUMB)  # (ay, T_y, c, ax, T_x)
    # Per channel: a colour cast is not structure. The BOX means come from the weights' row sums,
    # without a strided reduction over the thumbnails.
    ux, uy = wx.sum(axis=1), wy.sum(axis=1)  # (A, w), (A, h)
    means = np.einsum("ah,chw,bw->acb", uy, img, ux, optimize=True) / (THUMB * THUMB)  # (ay, c, ax)
    thumbs -= means[:, None, :, :, None]
    # _GRID order: zx, zy, sx, sy -> index (zx, sx) on x and (zy, sy) on y.
    t = thumbs.reshape(n_z, n_s, THUMB, 3, n_z, n_s, THUMB)  # (zy, sy, T_y, c, zx, sx, T_x)
    t = t.transpose(4, 0, 5, 1, 2, 6, 3).reshape(len(_GRID), THUMB * THUMB * 3)
    norms = np.sqrt(np.einsum("ij,ij->i", t, t))[:, None]
    return t / np.where(norms > 0, norms, 1)  # a flat thumbnail stays all zeros


def _base(small: np.ndarray) -> np.ndarray:
    """Row ``_BASE`` of ``_grid(small)`` (zoom 1, no shift), computed alone: two small products."""
    h, w = small.shape[:2]
    k = _AXIS.index((1.0, 0.0))
    wx, wy = _axis_weights(w)[k], _axis_weights(h)[k]  # (T, w), (T, h)
    img = small.astype(np.float32).transpose(2, 0, 1)  # (3, h, w)
    t = (wy[None] @ img @ wx.T[None]).transpose(1, 2, 0).reshape(THUMB * THUMB, 3)  # (T*T, 3)
    t = (t - t.mean(axis=0, keepdims=True)).reshape(-1)
    norm = float(np.linalg.norm(t))
    return t / norm if norm > 0 else t


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

    def __init__(self, grid_cache: int = GRID_CACHE, reduced_cache: int = REDUCED_CACHE) -> None:
        self.reduced: dict[str, Reduced | None] = {}
        self.grids: OrderedDict[str, np.ndarray] = OrderedDict()
        self.grid_cache = grid_cache
        self.reduced_cache = reduced_cache

    def _reduced(self, path: str) -> Reduced | None:
        if path in self.reduced:
            return self.reduced[path]
        reduced = _reduce(path)
        if len(self.reduced) < self.reduced_cache:
            self.reduced[path] = reduced
        return reduced

    def forget(self, path: str) -> None:
        """Drop what is kept for ``path`` (its pairs are all scored)."""
        self.reduced.pop(path, None)
        self.grids.pop(path, None)

    def base(self, path: str) -> np.ndarray | None:
        """The unit-norm zoom-1, shift-0 thumbnail (row _BASE of the grid), without the grid."""
        reduced = self._reduced(path)
        return None if reduced is None else _base(reduced[0])

    def get(self, path: str) -> Thumbs | None:
        reduced = self._reduced(path)
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
        reduced = self._reduced(path)
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
    records: list[Record], infos: dict, max_distance: int | None, workers: int = 1
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
    root = np.arange(len(inf))
    for j, first in exact_of.items():
        root[j] = first
    i_arr, j_arr, d_arr = _nominated(inf, root, distance, total)
    same = _confirm(inf, i_arr, j_arr, workers)
    for i, j, dist in zip(i_arr[same].tolist(), j_arr[same].tolist(), d_arr[same].tolist(), strict=True):
        near.append((recs[i].id, recs[j].id))
        message = (
            f"{Path(inf[j].path).name} looks like a copy of the image of {recs[i].id} (hash distance {dist})"
        )
        findings.append(
            Finding("duplicate_near", "error", message, recs[j].id, recs[j].source, "image", (recs[i].id,))
        )
    return findings, links, near


def _nominated(
    inf: list, root: np.ndarray, distance: int, total: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i, j, hash distance), sorted, that survive the two tests needing no pixels:
    not exact copies of one original, and central colours within MAX_COLOUR_SHIFT (from the
    inspection). Streamed in arrays: similar-looking sets nominate millions of pairs by hash."""
    nan = (np.nan, np.nan, np.nan)
    centres = np.array([x.centre_rgb if x.centre_rgb is not None else nan for x in inf], dtype=np.float32)
    centres = centres.reshape(-1, 3)

    def kept():
        batches = near_duplicate_batches(
            [x.phash for x in inf], [x.dhash for x in inf], max_distance=distance, max_total_distance=total
        )
        for i, j, d in batches:
            shift = np.abs(centres[i] - centres[j]).max(axis=1)
            keep = (root[i] != root[j]) & ~(shift > MAX_COLOUR_SHIFT)  # no colour known: keep it
            if keep.any():
                yield i[keep], j[keep], d[keep]

    return unique_pairs(kept())


def _confirm(infos: list, i: np.ndarray, j: np.ndarray, workers: int = 1) -> np.ndarray:
    """Which pairs are copies on pixels: max(base_i . grid_j, base_j . grid_i) >= MIN_PIXEL_CORRELATION.

    Each image's base thumbnail (3 KB) comes with its inspection; each image named by a pair is
    decoded (reduced) and gridded once, however many pairs name it, and its grid scored against all
    its partners' bases, in ``workers`` processes when there are enough images to pay for a pool.
    An image without a thumbnail confirms its pairs (inspection judged it readable)."""
    if not len(i):
        return np.zeros(0, dtype=bool)
    images = np.unique(np.concatenate([i, j]))
    slot = np.full(int(images.max()) + 1, -1, dtype=np.int64)
    slot[images] = np.arange(len(images))
    names = [infos[int(x)].path for x in images]
    got = [infos[int(x)].thumb for x in images]  # from the inspection's decode: no second read
    known = np.array([b is not None for b in got], dtype=bool)
    bases = np.stack([b if b is not None else np.zeros(THUMB * THUMB * 3, np.float32) for b in got])
    del got
    si, sj = slot[i], slot[j]
    unknown = ~known[si] | ~known[sj]
    # Work items: one image's grid against its partners' bases (pair k, partner slot), both sides.
    side = np.concatenate([si, sj])
    other = np.concatenate([sj, si])
    pair = np.concatenate([np.arange(len(i)), np.arange(len(i))])
    ok = known[side] & known[other]
    side, other, pair = side[ok], other[ok], pair[ok]
    order = np.argsort(side, kind="stable")
    side, other, pair = side[order], other[order], pair[order]
    bounds = np.flatnonzero(np.diff(side)) + 1
    items = [
        (names[int(side[lo])], pair[lo:hi], other[lo:hi])
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(side)], strict=True)
    ]
    best = np.full(len(i), -np.inf, dtype=np.float32)
    pool = workers if len(items) >= POOL_MIN_IMAGES else 1
    for ks, scores in _run(_scores_chunk, _chunks(items, pool), pool, bases):
        np.maximum.at(best, ks, scores)
    return unknown | (best >= MIN_PIXEL_CORRELATION)


_BASES: np.ndarray | None = None  # the partners' base thumbnails, set in each worker once


def _set_bases(bases: np.ndarray | None) -> None:
    global _BASES
    _BASES = bases


def _scores_chunk(items: list[tuple[str, np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert _BASES is not None
    out = []
    for name, ks, partners in items:
        thumbs = _Pixels(reduced_cache=0).get(name)
        if thumbs is None:  # read before, unreadable now: leave the pair to the base test's verdict
            continue
        out.append((ks, (thumbs[0] @ _BASES[partners].T).max(axis=0).astype(np.float32)))
    return out


def _chunks(items: list, workers: int) -> list[list]:
    size = max(1, min(256, -(-len(items) // max(1, workers * 4))))
    return [items[k : k + size] for k in range(0, len(items), size)]


def _run(fn, chunks: list[list], workers: int, bases: np.ndarray | None = None) -> list:
    """``fn`` over ``chunks`` (results concatenated in order): in this process, or a pool."""
    if workers <= 1 or len(chunks) < 2:
        _set_bases(bases)
        try:
            return [r for c in chunks for r in fn(c)]
        finally:
            _set_bases(None)
    from concurrent.futures import ProcessPoolExecutor

    from tuneline.data.pools import pool_context

    n = min(workers, len(chunks))
    with ProcessPoolExecutor(n, mp_context=pool_context(), initializer=_set_bases, initargs=(bases,)) as ex:
        return [r for rs in ex.map(fn, chunks) for r in rs]
