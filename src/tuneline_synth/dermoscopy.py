"""Synthetic dermoscopy in the Kaggle ISIC 2020 layout, optionally with planted data defects.

The melanoma example needs data a small model can learn offline, laid out exactly like the real
release (``train.csv`` plus ``jpeg/train/<image_name>.jpg``) so the same config works on both. The
lesions are drawn procedurally: malignant ones follow the ABCD rule (asymmetric, irregular border,
several colours, larger), benign ones are small, round and uniformly brown.

Every image is redrawn until its perceptual hashes (pHash >= 14, dHash >= 12 bits from every
earlier image) rule out accidental near duplicates, so the only duplicates are the planted ones.

With ``defects=True`` the generator also plants (``tuneline_synth.dermoscopy_defects``) one or
more records for every check code of :data:`tuneline.data.findings.CHECKS` (in ``train.csv`` and a
companion chat-JSONL source, ``extra.jsonl``) and writes the truth to ``defects.json``, so a test
can prove the validator finds every defect and flags nothing on the clean records.
"""

from __future__ import annotations

import csv
import io
import math
import random
import struct
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tuneline.data.images import perceptual_hashes
from tuneline.runs import atomic_write_text

HEADER = (
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
)
SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital")
SITE_WEIGHTS = (0.50, 0.26, 0.15, 0.06, 0.02, 0.01)  # roughly the ISIC 2020 proportions
BENIGN_DIAGNOSES = ("unknown", "nevus", "seborrheic keratosis", "lentigo NOS")
BENIGN_WEIGHTS = (0.80, 0.17, 0.02, 0.01)
QUESTION = "Is this lesion benign or malignant?"
MIN_CLASS_FRACTION = 0.05  # data.checks.min_class_fraction's default: below it, class_imbalance
# Defaults: ~4,300 lesions, ~214 malignant (one per patient), ~32 malignant patients in a 15% test split.
N_PATIENTS = 1200
PREVALENCE = 0.05

# Skin tones from light to dark (RGB); a tone is interpolated between two neighbours.
SKIN_TONES = np.array(
    [(242, 208, 190), (226, 184, 160), (204, 152, 122), (170, 118, 88), (120, 80, 60)], dtype=np.float32
)
BLACK = np.array((38, 28, 30), dtype=np.float32)
BLUE_GREY = np.array((92, 102, 122), dtype=np.float32)
RED = np.array((172, 72, 70), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (shared, read-only)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field (about unit variance) of shape (h, w): bicubic-upsampled noise."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _radius_table(rng: np.random.Generator, malignant: bool, n: int = 2048) -> np.ndarray:
    """Border radius (relative to 1) per angle: near-constant for benign, lumpy and notched for malignant."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False, dtype=np.float32)
    r = np.ones(n, dtype=np.float32)
    if malignant:
        low = [(k, rng.uniform(0.07, 0.16)) for k in (1, 2, 3)]  # Asymmetry: strong low harmonics
        high = [(k, rng.uniform(0.01, 0.03)) for k in rng.choice(np.arange(5, 15), 5, replace=False)]
        harmonics = low + high
    else:
        harmonics = [(k, rng.uniform(0.0, 0.025)) for k in (2, 3, 4)]
    for k, amp in harmonics:
        r += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    if malignant:  # Border: a few notches
        for _ in range(int(rng.integers(2, 6))):
            centre, width, depth = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.16), rng.uniform(0.12, 0.3)
            delta = np.angle(np.exp(1j * (theta - centre))).astype(np.float32)
            r *= 1 - depth * np.exp(-((delta / width) ** 2))
    return np.clip(r, 0.35, None)


def _skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured skin background (float32, H x W x 3) and its mean tone."""
    t = rng.beta(1.6, 2.4) * (len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    tone = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[i + 1] * (t - i)
    tone = tone + rng.normal(0, 6, 3).astype(np.float32) + np.array((rng.uniform(0, 10), 0, 0), np.float32)
    yy, xx = _grid(size)
    blotch = _field(rng, size, size, int(rng.integers(3, 6)))  # uneven pigmentation / redness
    angle = rng.uniform(0, 2 * np.pi)
    light = (xx * math.cos(angle) + yy * math.sin(angle)) * rng.uniform(0.06, 0.16)  # uneven lighting
    grain = rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(2.5, 6.0)
    mottle = _field(rng, size, size, int(rng.integers(8, 14)))  # finer texture: keeps images hash-distinct
    lum = 1 + light + blotch * rng.uniform(0.08, 0.12) + mottle * rng.uniform(0.05, 0.08)
    img = tone[None, None, :] * lum[..., None]
    redness = np.maximum(_field(rng, size, size, int(rng.integers(2, 5))), -0.3) * rng.uniform(3, 9)
    img[..., 0] += redness
    img[..., 1] -= redness * 0.4
    img += grain[..., None]
    return img, tone


def _lesion(rng: np.random.Generator, img: np.ndarray, tone: np.ndarray, malignant: bool) -> None:
    """Paint one lesion into ``img`` in place."""
    size = img.shape[0]
    radius = size * (rng.uniform(0.16, 0.27) if malignant else rng.uniform(0.06, 0.14))
    reach = radius * 1.45
    cx = rng.uniform(-0.17, 0.17) * size + size / 2
    cy = rng.uniform(-0.17, 0.17) * size + size / 2
    x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    rot = rng.uniform(0, 2 * np.pi)
    squash = rng.uniform(0.62, 1.0) if malignant else rng.uniform(0.72, 1.0)  # oval, never a line
    u = xs * math.cos(rot) + ys * math.sin(rot)
    v = (-xs * math.sin(rot) + ys * math.cos(rot)) / squash
    dist = np.sqrt(u * u + v * v) / radius
    table = _radius_table(rng, malignant)
    theta = np.arctan2(v, u)
    idx = ((theta + np.pi) * (len(table) / (2 * np.pi))).astype(np.int32) % len(table)
    rnorm = dist / table[idx]  # < 1 inside the lesion
    h, w = rnorm.shape
    if malignant:  # fuzzy in places, sharp in others
        edges = np.clip(0.04 + 0.22 * np.abs(rng.standard_normal(16)), 0.03, 0.4).astype(np.float32)
        edge = np.interp(theta, np.linspace(-np.pi, np.pi, 17)[:-1], edges, period=2 * np.pi)
    else:
        edge = np.float32(rng.uniform(0.04, 0.1))
    alpha = _smoothstep((1 - rnorm) / edge + 0.5)
    if malignant:
        base = tone * np.array((0.42, 0.32, 0.28), np.float32) * rng.uniform(0.85, 1.1)
        col = np.broadcast_to(base, (h, w, 3)).copy()
        cells = int(rng.integers(4, 8))
        light_brown = tone * np.array((0.66, 0.52, 0.44), np.float32)
        # (colour, threshold, centrality > 0 favours the centre, opacity)
        layers = [(light_brown, 0.4, -0.8, 1.0), (RED, rng.uniform(0.3, 0.7), -0.5, 0.75)]
        if rng.random() < 0.85:
            layers.append((BLUE_GREY, rng.uniform(0.1, 0.5), 0.8, 0.8))  # blue-grey veil
        layers.append((BLACK, rng.uniform(0.0, 0.4), 0.0, 1.0))
        for colour, threshold, centrality, opacity in layers:
            f = _field(rng, h, w, cells) + centrality * (1 - 2 * rnorm)
            wgt = _smoothstep((f - threshold) / 0.35)[..., None] * opacity
            col += (colour - col) * wgt
        col += _field(rng, h, w, 24)[..., None] * 9  # mottled texture
        # Dark globules scattered near the border
        n_dots = int(rng.integers(4, 14))
        dot_r, dot_t = rng.uniform(0.55, 0.95, n_dots), rng.uniform(0, 2 * np.pi, n_dots)
        dot_idx = ((dot_t * len(table) / (2 * np.pi)).astype(int)) % len(table)
        dot_u = np.cos(dot_t - np.pi) * dot_r * table[dot_idx] * radius
        dot_v = np.sin(dot_t - np.pi) * dot_r * table[dot_idx] * radius
        for du, dv, s in zip(dot_u, dot_v, rng.uniform(0.015, 0.04, n_dots) * radius * 3, strict=True):
            d2 = (u - du) ** 2 + (v - dv) ** 2
            col += (BLACK - col) * np.exp(-d2 / (s * s))[..., None] * 0.9
    else:
        brown = tone * np.array((0.64, 0.50, 0.42), np.float32) * rng.uniform(0.8, 1.05)
        col = np.broadcast_to(brown, (h, w, 3)).copy()
        if rng.random() < 0.5:  # a second, darker brown in the centre (symmetric)
            core = brown * rng.uniform(0.68, 0.85)
            wgt = _smoothstep((rng.uniform(0.45, 0.7) - rnorm) / 0.25)[..., None]
            col += (core - col) * wgt
        col += _field(rng, h, w, 12)[..., None] * 2.5
    region = img[y0:y1, x0:x1]
    region += (col - region) * alpha[..., None]


def _hairs(rng: np.random.Generator, im: Image.Image) -> None:
    size = im.width
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 9))):
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, 2) * size for _ in range(3))
        t = np.linspace(0, 1, 24)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        shade = int(rng.integers(15, 70))
        width = max(1, round(size / 512 * rng.uniform(1, 3.5)))
        draw.line([tuple(p) for p in pts.tolist()], fill=(shade, shade * 4 // 5, shade * 3 // 5), width=width)


def render(rng: np.random.Generator, size: int, malignant: bool) -> Image.Image:
    """One synthetic dermoscopy image (RGB, ``size`` x ``size``)."""
    img, tone = _skin(rng, size)
    _lesion(rng, img, tone, malignant)
    yy, xx = _grid(size)
    oy, ox = rng.uniform(-0.2, 0.2, 2)
    r2 = (yy - oy) ** 2 + (xx - ox) ** 2
    img *= (1 - rng.uniform(0.1, 0.35) * r2 / 2)[..., None]  # dermoscope vignetting
    if rng.random() < 0.35:  # the dark ring of a contact dermoscope
        ring = rng.uniform(0.95, 1.25)
        img *= (1 - _smoothstep((np.sqrt(r2) - ring) / 0.08 + 0.5))[..., None] * 0.9 + 0.1
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        _hairs(rng, im)
    return im


def _hashes(data: bytes) -> tuple[np.uint64, np.uint64]:
    """(pHash, dHash) of an encoded image (imagehash's, computed by tuneline.data.images)."""
    with Image.open(io.BytesIO(data)) as decoded:
        h = perceptual_hashes(decoded.convert("L"))
    return np.uint64(h["phash"]), np.uint64(h["dhash"])


def _distance(a: bytes, b: bytes) -> tuple[int, int]:
    (pa, da), (pb, db) = _hashes(a), _hashes(b)
    return int(np.bitwise_count(pa ^ pb)), int(np.bitwise_count(da ^ db))


class _Painter:
    """Draws lesion images that are pairwise perceptually distinct (no accidental near-duplicates).

    Each candidate is JPEG-encoded, decoded and hashed (pHash and dHash, as a duplicate check
    would); one too close to an earlier image is redrawn from the next seed. After ``MAX_TRIES``
    the most distant candidate is kept, so very large datasets degrade gracefully.
    """

    MIN_PHASH = 14
    MIN_DHASH = 12
    MAX_TRIES = 25

    def __init__(self, seed: int, size: int, quality: int) -> None:
        self.seed, self.size, self.quality = seed, size, quality
        self.phash = np.zeros(0, np.uint64)
        self.dhash = np.zeros(0, np.uint64)

    def draw(self, stream: int, index: int, malignant: bool) -> tuple[Image.Image, bytes]:
        best: tuple[float, Image.Image, bytes, np.uint64, np.uint64] | None = None
        for attempt in range(self.MAX_TRIES):
            im = render(np.random.default_rng([self.seed, stream, index, attempt]), self.size, malignant)
            data = _jpeg(im, self.quality)
            p, d = _hashes(data)
            if len(self.phash) == 0:
                margin = 0.0
            else:
                dp = int(np.bitwise_count(self.phash ^ p).min())
                dd = int(np.bitwise_count(self.dhash ^ d).min())
                margin = min(dp - self.MIN_PHASH, dd - self.MIN_DHASH)
            if best is None or margin > best[0]:
                best = (margin, im, data, p, d)
            if margin >= 0:
                break
        assert best is not None
        _, im, data, p, d = best
        self.phash = np.append(self.phash, p)
        self.dhash = np.append(self.dhash, d)
        return im, data


def _jpeg(im: Image.Image, quality: int, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression-bomb stand-in)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024, 9))
        + _png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    id: str
    sex: str
    age: float
    split: str = ""


@dataclass(frozen=True)
class _Row:
    image_name: str
    patient_id: str
    sex: str
    age: str
    site: str
    diagnosis: str
    benign_malignant: str
    target: str
    split: str = ""

    @property
    def malignant(self) -> bool:
        return self.target == "1"

    def fields(self, with_split: bool) -> list[str]:
        values = [self.image_name, self.patient_id, self.sex, self.age, self.site, self.diagnosis]
        values += [self.benign_malignant, self.target]
        return values + [self.split] if with_split else values


class _Ids:
    """Unique random ISIC-style ids (``ISIC_0123456``, ``IP_0123456``) from one seeded stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            candidate = f"{prefix}_{self.rng.randrange(10**7):07d}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate


def _row(name: str, patient: _Patient, site: str, malignant: bool, rng: random.Random) -> _Row:
    diagnosis = "melanoma" if malignant else rng.choices(BENIGN_DIAGNOSES, BENIGN_WEIGHTS)[0]
    return _Row(
        image_name=name,
        patient_id=patient.id,
        sex=patient.sex,
        age=f"{patient.age:.1f}",
        site=site,
        diagnosis=diagnosis,
        benign_malignant="malignant" if malignant else "benign",
        target="1" if malignant else "0",
        split=patient.split,
    )


def _assign_splits(patients: list[_Patient], malignant_ids: set[str], rng: random.Random) -> list[_Patient]:
    """Whole patients to train/val/test (~80/10/10), separately for patients with and without melanoma."""
    split_of: dict[str, str] = {}
    for pool in (
        [p for p in patients if p.id in malignant_ids],
        [p for p in patients if p.id not in malignant_ids],
    ):
        order = sorted(pool, key=lambda p: p.id)
        rng.shuffle(order)
        n_val = round(len(order) * 0.1)
        n_test = round(len(order) * 0.1)
        for i, p in enumerate(order):
            split_of[p.id] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return [replace(p, split=split_of[p.id]) for p in patients]


def _write_csv(path: Path, header: list[str], lines: list[list[str] | str]) -> None:
    """Rows as lists go through the csv writer; plain strings are written verbatim (malformed lines)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for line in lines:
        if isinstance(line, str):
            buf.write(line + "\n")
        else:
            writer.writerow(line)
    atomic_write_text(path, buf.getvalue())


def _plan(
    n_patients: int, lo: int, hi: int, prevalence: float, seed: int, defects: bool
) -> tuple[list[_Patient], list[_Row], _Ids]:
    """Patients and manifest rows (sorted by image name), drawn before any image is painted."""
    rng = random.Random(seed)
    ids = _Ids(random.Random(f"{seed}:ids"))
    patients = [
        _Patient(ids.new("IP"), rng.choice(("male", "female")), float(5 * rng.randint(4, 17)))
        for _ in range(n_patients)
    ]
    counts = [rng.randint(lo, hi) for _ in patients]
    total = sum(counts)
    n_malignant = min(total, max(2, math.floor(prevalence * total)))  # never above the prevalence
    # Malignant lesions go to distinct patients first (round robin over a shuffled patient order).
    order = list(range(n_patients))
    rng.shuffle(order)
    slots = [(p, j) for j in range(hi) for p in order if j < counts[p]]
    malignant_slots = set(slots[:n_malignant])
    malignant_ids = {patients[p].id for p, _ in malignant_slots}
    if defects:
        patients = _assign_splits(patients, malignant_ids, random.Random(f"{seed}:splits"))

    rows: list[_Row] = []
    for p, patient in enumerate(patients):
        for j in range(counts[p]):
            site = rng.choices(SITES, SITE_WEIGHTS)[0]
            rows.append(_row(ids.new("ISIC"), patient, site, (p, j) in malignant_slots, rng))
    rows.sort(key=lambda r: r.image_name)
    return patients, rows, ids


def manifest(
    *,
    n_patients: int = N_PATIENTS,
    lesions_per_patient: tuple[int, int] = (1, 6),
    prevalence: float = PREVALENCE,
    seed: int = 0,
) -> list[dict[str, str]]:
    """The rows ``generate`` writes to ``train.csv`` for the same arguments, without drawing images."""
    _, rows, _ = _plan(n_patients, *lesions_per_patient, prevalence, seed, False)
    return [dict(zip(HEADER, r.fields(False), strict=True)) for r in rows]


def generate(
    out: Path,
    *,
    n_patients: int = N_PATIENTS,
    lesions_per_patient: tuple[int, int] = (1, 6),
    prevalence: float = PREVALENCE,
    size: int = 256,
    seed: int = 0,
    defects: bool = False,
    quality: int = 90,
) -> Path:
    """Write an ISIC 2020-layout dataset under ``out``; return the path of ``train.csv``.

    The defaults (1,200 patients, ~4,300 lesions, 5% malignant, 256 px) put ~32 malignant patients in
    a 15% test split, enough to measure ROC-AUC on (ISIC 2020's ~1.8% would need ~10,000 images for
    as many, more than a CPU run can draw, check and score in minutes); the melanoma example
    downsizes to 64 px anyway.

    Deterministic for a seed (same bytes on every run). ``prevalence`` is the fraction of malignant
    lesions, rounded down (at least two patients get one). ``defects=True`` adds a ``split`` column
    (whole patients, ~80/10/10), appends defective rows, writes ``extra.jsonl`` (a chat-JSONL
    companion source) and ``defects.json`` (the truth: code, record_id, source "file:line",
    related ids, note). The class_imbalance entry is written only while malignant records stay
    below 5% (the default ``data.checks.min_class_fraction``), i.e. for prevalence <= ~0.05.
    """
    lo, hi = lesions_per_patient
    if n_patients < 2:
        raise ValueError("n_patients must be at least 2 (two patients get a melanoma)")
    if not 1 <= lo <= hi:
        raise ValueError(
            f"lesions_per_patient must be (min, max) with 1 <= min <= max, got {lesions_per_patient}"
        )
    if not 0 <= prevalence < 1:
        raise ValueError(f"prevalence must be in [0, 1), got {prevalence}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    out = Path(out)
    image_dir = out / "jpeg" / "train"
    image_dir.mkdir(parents=True, exist_ok=True)

    patients, rows, ids = _plan(n_patients, lo, hi, prevalence, seed, defects)
    painter = _Painter(seed, size, quality)
    for i, row in enumerate(rows):
        (image_dir / f"{row.image_name}.jpg").write_bytes(painter.draw(0, i, row.malignant)[1])

    header = list(HEADER) + (["split"] if defects else [])
    lines: list[list[str] | str] = [r.fields(defects) for r in rows]
    path = out / "train.csv"
    if defects:
        from tuneline_synth.dermoscopy_defects import plant

        lines += plant(out, rows, patients, ids, painter)
    else:  # a clean dataset must not carry the truth files of an earlier defects run
        for stale in ("defects.json", "extra.jsonl"):
            (out / stale).unlink(missing_ok=True)
    _write_csv(path, header, lines)
    return path
