"""Exact and near duplicates: the calibrated thresholds on real decodes, and the index's guarantees."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tuneline.data.images import inspect_images
from tuneline.data.neardup import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MAX_TOTAL_DISTANCE,
    candidate_pairs,
    exact_duplicate_groups,
    near_duplicate_pairs,
)

# ---------------------------------------------------------------- image makers (this file only)


def lesion(seed: int, size: int = 512) -> Image.Image:
    """Brownish blobs (one lesion, some satellites) on noisy beige skin: look-alikes by design."""
    rng = np.random.default_rng(seed)
    base = np.array([222.0, 190.0, 160.0]) + rng.normal(0, 6, 3)
    noise = rng.normal(0, 10, (size, size, 1)) + rng.normal(0, 4, (size, size, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for k in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in np.array([120, 80, 50]) + rng.normal(0, 20, 3))
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        lo, hi = (0.08, 0.2) if k == 0 else (0.02, 0.08)
        if rng.random() < 0.5:
            rx, ry = rng.uniform(lo, hi, 2) * size
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
        else:
            n = int(rng.integers(5, 10))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(lo, hi, n) * size
            draw.polygon(
                [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)],
                fill=colour,
            )
    return img.filter(ImageFilter.GaussianBlur(2))


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), round(w - right * w), round(h - bottom * h)))


def scale(img: Image.Image, f: float) -> Image.Image:
    return img.resize((round(img.width * f), round(img.height * f)), Image.Resampling.LANCZOS)


EXACT_COPIES = ("q60", "q95", "half", "double")  # must all be found
CROPPED_COPIES = ("crop2", "crop_asym", "crop5", "combo")  # found at the calibrated rate


def copies(img: Image.Image) -> dict[str, bytes]:
    """Re-encoded, resized, slightly cropped, and all three (crop + 0.75x + JPEG q70)."""
    return {
        "q60": jpeg_bytes(img, 60),
        "q95": jpeg_bytes(img, 95),
        "half": jpeg_bytes(scale(img, 0.5)),
        "double": jpeg_bytes(scale(img, 2.0)),
        "crop2": jpeg_bytes(crop(img, 0.02, 0.02, 0.02, 0.02)),
        "crop_asym": jpeg_bytes(crop(img, 0.04, 0.01, 0.0, 0.03)),
        "crop5": jpeg_bytes(crop(img, 0.05, 0.05, 0.05, 0.05)),
        "combo": jpeg_bytes(scale(crop(img, 0.02, 0.04, 0.03, 0.01), 0.75), 70),
    }


def sample_crops(n_per_image: int = 3, size: int = 200) -> list[Image.Image]:
    """Non-overlapping-ish crops of the two sklearn sample photos (shipped with sklearn, offline)."""
    from sklearn.datasets import load_sample_images

    out = []
    for arr in load_sample_images().images:
        img = Image.fromarray(arr)
        for k in range(n_per_image):
            x = 20 + k * (img.width - size - 40) // max(1, n_per_image - 1)
            out.append(img.crop((x, 100, x + size, 100 + size)))
    return out


def digits() -> list[Image.Image]:
    """One handwritten digit per class, 8x8 upscaled to 128x128: small, similar, distinct."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for cls in range(10):
        i = int(np.flatnonzero(d.target == cls)[0])
        a = (255 - d.images[i] / 16 * 255).astype(np.uint8)
        out.append(Image.fromarray(a).resize((128, 128), Image.Resampling.BILINEAR).convert("RGB"))
    return out


def write_families(root: Path, bases: list[Image.Image], with_copies: bool) -> tuple[list[Path], list[int]]:
    """Write each base (and its copies) to disk; return the paths and each path's family number."""
    paths, family = [], []
    for f, img in enumerate(bases):
        files = {"base": jpeg_bytes(img)} | (copies(img) if with_copies else {})
        for name, data in files.items():
            p = root / f"f{f}_{name}.jpg"
            p.write_bytes(data)
            paths.append(p)
            family.append(f)
    return paths, family


# ---------------------------------------------------------------- calibration on real decodes


def test_copies_paired_and_lookalikes_not(tmp_path):
    lesions = [lesion(seed) for seed in range(8)]
    photos = sample_crops()
    paths, family = write_families(tmp_path, lesions + photos, with_copies=True)
    d_paths: list[Path] = []
    d_family: list[int] = []
    (tmp_path / "digits").mkdir()
    for k, img in enumerate(digits()):
        p = tmp_path / "digits" / f"{k}.png"
        img.save(p)
        d_paths.append(p)
        d_family.append(1000 + k)
    paths += d_paths
    family += d_family

    infos = inspect_images(paths)
    assert all(i.ok for i in infos)
    pairs = near_duplicate_pairs([i.phash for i in infos], [i.dhash for i in infos])
    found = {(i, j) for i, j, _ in pairs}

    # Re-encoded and resized copies are always paired with their original; slightly cropped ones
    # at the rate measured in calibration (crops shift content against the frame, and phash's low
    # DCT frequencies are not shift invariant: see neardup's docstring).
    base_of = {g: k for k, (p, g) in enumerate(zip(paths, family, strict=True)) if p.stem.endswith("_base")}
    kind = [p.stem.split("_", 1)[1] if p.parent == tmp_path else "digit" for p in paths]
    missed_exact = [
        paths[k].name
        for k, g in enumerate(family)
        if kind[k] in EXACT_COPIES and (base_of[g], k) not in found
    ]
    assert not missed_exact, missed_exact
    cropped = [k for k in range(len(paths)) if kind[k] in CROPPED_COPIES]
    crop_found = sum((base_of[family[k]], k) in found for k in cropped)
    assert crop_found / len(cropped) >= 0.75, (crop_found, len(cropped))  # measured 0.80 here
    # ...and nothing is paired across families (distinct lesions, photo crops, digits).
    across = [(paths[i].name, paths[j].name, d) for i, j, d in pairs if family[i] != family[j]]
    assert not across, across
    assert all(i < j and 0 <= d <= DEFAULT_MAX_DISTANCE for i, j, d in pairs)


@pytest.mark.slow
def test_calibration_rates(tmp_path):
    """The evidence behind the defaults (see neardup's docstring): crop recall and look-alike rate."""
    rng = np.random.default_rng(11)
    found = total = 0
    for seed in range(60):
        img = lesion(2000 + seed)
        files = {"base": jpeg_bytes(img)}
        for k in range(3):
            f = rng.uniform(0, 0.05, 4)
            files[f"crop{k}"] = jpeg_bytes(crop(img, *f))
        paths = []
        for name, data in files.items():
            p = tmp_path / f"{seed}_{name}.jpg"
            p.write_bytes(data)
            paths.append(p)
        infos = inspect_images(paths)
        got = {
            j
            for i, j, _ in near_duplicate_pairs([x.phash for x in infos], [x.dhash for x in infos])
            if i == 0
        }
        found += len(got)
        total += len(paths) - 1
    assert found / total >= 0.85  # measured 0.93 on 1,000+ crops

    paths = []
    for seed in range(400):
        p = tmp_path / f"distinct{seed}.jpg"
        p.write_bytes(jpeg_bytes(lesion(50_000 + seed)))
        paths.append(p)
    infos = inspect_images(paths)
    pairs = near_duplicate_pairs([x.phash for x in infos], [x.dhash for x in infos])
    assert len(pairs) / (400 * 399 / 2) < 3e-4  # measured 8.8e-5 on 319,600 pairs


# ---------------------------------------------------------------- the index


def brute_force(
    ph: list[int | None], dh: list[int | None], p_max: int, total_max: int
) -> set[tuple[int, int, int]]:
    out = set()
    for i, j in itertools.combinations(range(len(ph)), 2):
        if None in (ph[i], ph[j], dh[i], dh[j]):
            continue
        dp = (ph[i] ^ ph[j]).bit_count()  # type: ignore[operator]
        dd = (dh[i] ^ dh[j]).bit_count()  # type: ignore[operator]
        if dp <= p_max and dp + dd <= total_max:
            out.add((i, j, dp))
    return out


def clustered_hashes(n: int, centres: int, flips: int, seed: int) -> tuple[list[int], list[int]]:
    """Hashes scattered around a few centres, so many pairs sit near every threshold."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2**64, (centres, 2), dtype=np.uint64)
    ph, dh = [], []
    for k in range(n):
        p, d = (int(x) for x in c[k % centres])
        for b in rng.integers(0, 64, int(rng.integers(0, flips))):
            p ^= 1 << int(b)
        for b in rng.integers(0, 64, int(rng.integers(0, flips))):
            d ^= 1 << int(b)
        ph.append(p)
        dh.append(d)
    return ph, dh


@pytest.mark.parametrize(
    "p_max,total_max",
    [(0, 0), (3, 5), (DEFAULT_MAX_DISTANCE, DEFAULT_MAX_TOTAL_DISTANCE), (12, 60), (20, 30)],
)
def test_index_finds_exactly_what_brute_force_finds(p_max, total_max):
    ph, dh = clustered_hashes(400, centres=12, flips=14, seed=p_max + total_max)
    ph[5] = None
    dh[17] = None
    got = near_duplicate_pairs(ph, dh, max_distance=p_max, max_total_distance=total_max)
    assert got == sorted(brute_force(ph, dh, p_max, total_max))
    assert len(got) == len(set(got))


def test_many_random_hashes_are_not_quadratic():
    n = 20_000
    rng = np.random.default_rng(0)
    ph = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
    dh = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
    for k in range(20):  # planted copies: a few bits off on both hashes
        ph[n - 1 - k] = ph[k] ^ 0b1011 << (3 * k)
        dh[n - 1 - k] = dh[k] ^ 0b11 << (2 * k)
    pairs = near_duplicate_pairs(ph, dh)
    assert {(k, n - 1 - k) for k in range(20)} <= {(i, j) for i, j, _ in pairs}
    # Not quadratic, counted rather than timed (the 5 s bound is benchmarks/bench_speed.py's neardup-20k).
    candidates = sum(len(i) for i, _ in candidate_pairs(ph, dh))
    assert candidates < 0.05 * n * (n - 1) / 2  # measured ~2% (all pairs would be 2e8)


def test_total_bound_follows_max_distance():
    ph = [0, 0b1111, 0]
    dh = [0, (1 << 10) - 1, (1 << 20) - 1]
    # phash + dhash: (0, 1) = 4 + 10, (1, 2) = 4 + 10, (0, 2) = 0 + 20
    assert [(i, j) for i, j, _ in near_duplicate_pairs(ph, dh)] == [(0, 1), (1, 2)]  # total <= 19
    assert near_duplicate_pairs(ph, dh, max_distance=6) == []  # total <= 13
    assert [(i, j) for i, j, _ in near_duplicate_pairs(ph, dh, max_distance=13)] == [(0, 1), (0, 2), (1, 2)]
    assert near_duplicate_pairs(ph, dh, max_distance=12, max_total_distance=14) == [(0, 1, 4), (1, 2, 4)]


def test_none_and_edge_inputs():
    assert near_duplicate_pairs([], []) == []
    assert near_duplicate_pairs([1], [1]) == []
    assert near_duplicate_pairs([None, 5, 5, 7], [1, 1, None, 1]) == [(1, 3, 1)]
    with pytest.raises(ValueError):
        near_duplicate_pairs([1, 2], [1])
    with pytest.raises(ValueError):
        near_duplicate_pairs([2**64, 1], [1, 1])


def test_exact_duplicate_groups():
    shas = ["a", None, "b", "a", "c", "b", "a", None]
    assert exact_duplicate_groups(shas) == [[0, 3, 6], [2, 5]]
    assert exact_duplicate_groups([]) == []
    assert exact_duplicate_groups(["x", "y"]) == []


def test_thumbnail_grid_matches_pil_resizes_and_cache_is_bounded(tmp_path):
    """The vectorised grid is PIL's 225 BOX resizes up to 8-bit rounding; grids kept are capped."""
    import numpy as np
    from PIL import Image

    from tuneline.data.checks import duplicates

    rng = np.random.default_rng(0)
    for shape in ((64, 64, 3), (40, 57, 3)):
        # Smooth content (a copy's thumbnails), then a noisy copy of it: the best correlation of
        # one's base thumbnail against the other's grid is what the check compares.
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
        a = np.stack([128 + 100 * np.sin(x / 7 + c) * np.cos(y / 9) for c in range(3)], axis=-1)
        b = a + rng.normal(0, 8, a.shape)
        a, b = (np.clip(v, 0, 255).astype(np.uint8) for v in (a, b))
        fast = (duplicates._grid(a)[duplicates._BASE] @ duplicates._grid(b).T).max()
        ref = (duplicates._grid_pil(a)[duplicates._BASE] @ duplicates._grid_pil(b).T).max()
        assert abs(fast - ref) < 0.005
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    pixels = duplicates._Pixels(grid_cache=2)
    for p in paths:
        assert pixels.get(p) is not None
    assert len(pixels.grids) == 2 and len(pixels.reduced) == 5
    assert all(r[0].nbytes <= 64 * 64 * 3 for r in pixels.reduced.values())
