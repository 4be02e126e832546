"""Synthetic dermoscopy in the Kaggle ISIC 2020 layout, optionally with planted data defects.

The melanoma example needs data a small model can learn offline, laid out exactly like the real
release (``train.csv`` plus ``jpeg/train/<image_name>.jpg``) so the same config works on both. The
lesions are drawn procedurally: malignant ones follow the ABCD rule (asymmetric, irregular border,
several colours, larger), benign ones are small, round and uniformly brown.

Every image is redrawn until its perceptual hashes (pHash >= 14, dHash >= 12 bits from every
earlier image) rule out accidental near duplicates, so the only duplicates are the planted ones.

With ``defects=True`` the generator also plants one or more records for every check code of
:data:`tuneline.data.findings.CHECKS` (in ``train.csv`` and a companion chat-JSONL source,
``extra.jsonl``) and writes the truth to ``defects.json``, so a test can prove the validator finds
every defect and flags nothing on the clean records.
"""

from __future__ import annotations

import csv
import io
import json
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
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue(), newline="")
    tmp.replace(path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, newline="")
    tmp.replace(path)


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
        lines += _plant(out, rows, patients, ids, painter)
    else:  # a clean dataset must not carry the truth files of an earlier defects run
        for stale in ("defects.json", "extra.jsonl"):
            (out / stale).unlink(missing_ok=True)
    _write_csv(path, header, lines)
    return path


# --------------------------------------------------------------------------------------------------
# Planted defects
# --------------------------------------------------------------------------------------------------

FILLER_WORDS = (
    "the lesion was first noticed by the patient several months ago and has slowly changed in colour "
    "and outline since then without bleeding itching or pain reported at any visit family history is "
    "unremarkable for skin cancer and sun exposure was moderate during childhood with occasional burns "
    "on holidays dermoscopy shows a pigmented network that is partly regular with some areas of "
    "structureless brown pigmentation and the surrounding skin looks healthy with mild photodamage"
).split()


class _Planter:
    """Writes defective rows, lines and files, and records what was planted where."""

    def __init__(self, out: Path, n_clean: int, ids: _Ids, painter: _Painter) -> None:
        self.out, self.ids, self.painter, self.quality = out, ids, painter, painter.quality
        self.image_dir = out / "jpeg" / "train"
        self.csv: list[list[str] | str] = []
        self.first_csv_line = n_clean + 2  # header is line 1
        self.jsonl: list[str] = []
        self.truth: list[dict[str, Any]] = []
        self.n_fresh = 0

    def fresh(self) -> Image.Image:
        """A new valid benign lesion image, unlike every other (own seed stream)."""
        return self._draw()[0]

    def fresh_jpeg(self) -> bytes:
        return self._draw()[1]

    def _draw(self) -> tuple[Image.Image, bytes]:
        self.n_fresh += 1
        return self.painter.draw(1, self.n_fresh, False)

    def add_row(self, row: _Row | str) -> str:
        """Append a CSV line; return its source ``train.csv:<line>``."""
        self.csv.append(row if isinstance(row, str) else row.fields(True))
        return f"train.csv:{self.first_csv_line + len(self.csv) - 1}"

    def add_line(self, obj: dict[str, Any] | str) -> str:
        self.jsonl.append(obj if isinstance(obj, str) else json.dumps(obj))
        return f"extra.jsonl:{len(self.jsonl)}"

    def mark(
        self, code: str, record_id: str | None, source: str | None, note: str, related: tuple[str, ...] = ()
    ) -> None:
        entry = {
            "code": code,
            "record_id": record_id,
            "source": source,
            "related": list(related),
            "note": note,
        }
        self.truth.append(entry)

    def image_row(self, code: str, host: _Patient, payload: bytes | None, note: str) -> None:
        """A well-formed benign row whose image file holds ``payload`` (None: no file at all)."""
        name = self.ids.new("ISIC")
        row = _Row(name, host.id, host.sex, f"{host.age:.1f}", "torso", "unknown", "benign", "0", host.split)
        if payload is not None:
            (self.image_dir / f"{name}.jpg").write_bytes(payload)
        self.mark(code, name, self.add_row(row), note)


def _chat(
    line_id: str, content: Any, answer: str | None, group: str, label: str, split: str = "train"
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"id": line_id, "messages": messages, "label": label, "group": group, "split": split}


def _image_question(path: str, text: str = QUESTION) -> list[dict[str, str]]:
    return [{"type": "image", "path": path}, {"type": "text", "text": text}]


def _plant(
    out: Path, rows: list[_Row], patients: list[_Patient], ids: _Ids, painter: _Painter
) -> list[list[str] | str]:
    """Plant every defect; write extra.jsonl, the defect images and defects.json; return the CSV lines."""
    rng = random.Random(f"{painter.seed}:defects")
    size, quality = painter.size, painter.quality
    pl = _Planter(out, len(rows), ids, painter)
    by_patient = {p.id: p for p in patients}
    train_patients = [p for p in patients if p.split == "train"]
    train_benign = [r for r in rows if r.split == "train" and not r.malignant]
    if len(train_benign) < 8:
        raise ValueError("defects=True needs at least 8 benign lesions in the train split: raise n_patients")
    img = pl.image_dir

    def host() -> _Patient:
        return rng.choice(train_patients)

    # malformed_row: an unquoted comma in the site makes one field too many.
    p = host()
    bad = [ids.new("ISIC"), p.id, p.sex, f"{p.age:.1f}", "head", "neck", "unknown", "benign", "0", p.split]
    pl.mark(
        "malformed_row",
        None,
        pl.add_row(",".join(bad)),
        "CSV line with an unquoted comma: one field too many",
    )

    # schema_error: an invalid target, an empty patient id (both with valid images).
    row = _row(ids.new("ISIC"), host(), "torso", False, rng)
    (img / f"{row.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.mark(
        "schema_error", row.image_name, pl.add_row(replace(row, target="yes")), "target is 'yes', not 0/1"
    )
    row = _row(ids.new("ISIC"), host(), "lower extremity", False, rng)
    (img / f"{row.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.mark("schema_error", row.image_name, pl.add_row(replace(row, patient_id="")), "empty patient_id")

    # path_outside_root: leaves the image folder (jpeg/train, or the manifest's folder by default).
    p = host()
    row = replace(_row("../../etc/passwd", p, "torso", False, rng), diagnosis="unknown")
    pl.mark("path_outside_root", row.image_name, pl.add_row(row), "image_name climbs out of the data folder")

    # Image files with problems (rows themselves well formed).
    fresh = pl.fresh
    pl.image_row("image_missing", host(), None, "the row's jpg was never written")
    pl.image_row("image_unreadable", host(), b"", "zero-byte .jpg")
    pl.image_row(
        "image_unreadable", host(), b"scanner export failed, no image here\n", "a text file named .jpg"
    )
    data = pl.fresh_jpeg()
    pl.image_row("image_truncated", host(), data[: len(data) // 2], "JPEG cut in half")
    data = _png(fresh())
    pl.image_row("image_truncated", host(), data[: len(data) // 2], "PNG (under .jpg) cut in half")
    buf = io.BytesIO()
    fresh().save(buf, format="PPM")
    pl.image_row("image_format_unsupported", host(), buf.getvalue(), "PPM image under a .jpg name")
    pl.image_row("image_too_small", host(), _jpeg(fresh().resize((8, 8)), quality), "8x8 image")
    pl.image_row("image_too_large", host(), _png_header_only(30000, 30000), "PNG header declares 30000x30000")
    strip = fresh().crop((0, size // 2 - size // 20, size, size // 2 + size // 20)).resize((1200, 60))
    pl.image_row("image_aspect_extreme", host(), _jpeg(strip, quality), "1200x60 image")
    exif = Image.Exif()
    exif[0x0112] = 6
    gray16 = np.asarray(fresh().convert("L"), dtype=np.uint16) * 257
    rgba = fresh().convert("RGBA")
    for payload, note in (
        (_jpeg(fresh().convert("CMYK"), quality), "CMYK JPEG"),
        (_jpeg(fresh(), quality, exif=exif.tobytes()), "JPEG with EXIF orientation 6"),
        (_png(fresh().quantize(64)), "palette PNG under .jpg"),
        (_png(Image.fromarray(gray16)), "16-bit greyscale PNG under .jpg"),
        (_png(rgba), "RGBA PNG under .jpg"),
    ):
        pl.image_row("image_mode_converted", host(), payload, note)

    # Duplicates of clean images: same patient and target unless noted; originals are all different.
    originals = rng.sample(train_benign, 6)

    def copy_row(orig: _Row, payload: bytes, **changes: str) -> tuple[str, str]:
        row = replace(orig, image_name=ids.new("ISIC"), **changes)
        (img / f"{row.image_name}.jpg").write_bytes(payload)
        return row.image_name, pl.add_row(row)

    def original(orig: _Row) -> Image.Image:
        with Image.open(img / f"{orig.image_name}.jpg") as im:
            return im.convert("RGB")

    orig = originals[0]
    rid, src = copy_row(orig, (img / f"{orig.image_name}.jpg").read_bytes())
    pl.mark("duplicate_exact", rid, src, "byte-identical copy under a new image_name", (orig.image_name,))
    c = round(size * 0.04)
    s75 = round(size * 0.75)
    resized = original(originals[2]).resize((s75, s75), Image.Resampling.LANCZOS)
    # A crop moves content against the frame, and some 4% crops land as far (in perceptual-hash
    # distance) as two different lesions do: no threshold could call those copies. Take the first
    # original whose crop stays clearly near (pHash <= 8, pHash + dHash <= 15), so the truth holds.
    for crop_orig in [originals[3]] + [
        r for r in rng.sample(train_benign, len(train_benign)) if r not in originals
    ]:
        cropped = _jpeg(original(crop_orig).crop((c, c, size - c, size - c)).resize((size, size)), quality)
        dp, dd = _distance((img / f"{crop_orig.image_name}.jpg").read_bytes(), cropped)
        if dp <= 8 and dp + dd <= 15:
            break
    near = (
        (originals[1], _jpeg(original(originals[1]), 60), "re-encoded at JPEG quality 60"),
        (originals[2], _jpeg(resized, quality), "resized to 0.75x"),
        (crop_orig, cropped, "cropped 4% per side and resized back"),
    )
    for orig, payload, note in near:
        rid, src = copy_row(orig, payload)
        pl.mark("duplicate_near", rid, src, note, (orig.image_name,))
    # label_conflict: a melanoma's image again, labelled benign (adds no malignant label to the data).
    train_malignant = [r for r in rows if r.split == "train" and r.malignant]
    if train_malignant:
        orig = rng.choice(train_malignant)
        flipped = {"target": "0", "benign_malignant": "benign", "diagnosis": "nevus"}
        note = "byte-identical copy labelled benign (original malignant)"
    else:
        orig = originals[4]
        flipped = {"target": "1", "benign_malignant": "malignant", "diagnosis": "melanoma"}
        note = "byte-identical copy labelled malignant (original benign)"
    rid, src = copy_row(orig, (img / f"{orig.image_name}.jpg").read_bytes(), **flipped)
    pl.mark("label_conflict", rid, src, note, (orig.image_name,))
    pl.mark("duplicate_exact", rid, src, note, (orig.image_name,))
    # A conflict has two sides and neither label can be trusted: the original's row is involved too.
    orig_src = f"train.csv:{rows.index(orig) + 2}"
    pl.mark(
        "label_conflict", orig.image_name, orig_src, f"the original side of the conflict with {rid}", (rid,)
    )

    # split_leakage: a patient on both sides; a near-copy of a train image under another patient in test.
    leaky = _Patient(ids.new("IP"), "female", 55.0, "train")
    a = _row(ids.new("ISIC"), leaky, "torso", False, rng)
    b = _row(ids.new("ISIC"), replace(leaky, split="test"), "upper extremity", False, rng)
    for r in (a, b):
        (img / f"{r.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.add_row(a)
    pl.mark(
        "split_leakage", b.image_name, pl.add_row(b), f"patient {leaky.id} in train and test", (a.image_name,)
    )
    orig = originals[5]
    other = _Patient(ids.new("IP"), by_patient[orig.patient_id].sex, 40.0, "test")
    rid, src = copy_row(orig, _jpeg(original(orig), 70), patient_id=other.id, age="40.0", split="test")
    note = f"JPEG re-encoded copy of train image {orig.image_name} under patient {other.id} in test"
    pl.mark("split_leakage", rid, src, note, (orig.image_name,))
    pl.mark("duplicate_near", rid, src, note, (orig.image_name,))

    n_clean_jsonl = _plant_jsonl(pl, rng)

    # class_imbalance: true for the dataset as a whole (manifest rows with a valid target plus JSONL labels)
    # while the malignant fraction stays below the default data.checks.min_class_fraction.
    targets = [r.target for r in rows] + [line[7] for line in pl.csv if isinstance(line, list)]
    labels = [t for t in targets if t in ("0", "1")]
    labels += ["1" if json.loads(x).get("label") == "malignant" else "0" for x in pl.jsonl[:n_clean_jsonl]]
    fraction = labels.count("1") / len(labels)
    if fraction < MIN_CLASS_FRACTION:
        note = f"malignant is {labels.count('1')} of {len(labels)} labelled records ({fraction:.1%})"
        pl.mark("class_imbalance", None, None, note)
    _write_text(out / "extra.jsonl", "".join(line + "\n" for line in pl.jsonl))
    _write_text(out / "defects.json", json.dumps(pl.truth, indent=2) + "\n")
    return pl.csv


def _plant_jsonl(pl: _Planter, rng: random.Random) -> int:
    """extra.jsonl: clean questions about clean lesion images, then the text-side defects.

    The clean lines have lesion images of their own (``jpeg/extra/``): pointing them at the
    manifest's images would make every one an exact duplicate of a manifest row once both sources
    are validated together. Each line is its own patient (``group``) and carries a ``split``, so a
    predefined split covers this source too. Returns the number of clean lines (they come first).
    """
    extra_dir = pl.out / "jpeg" / "extra"
    extra_dir.mkdir(parents=True, exist_ok=True)
    n_clean = 30
    melanoma = rng.randrange(n_clean)  # one melanoma keeps the dataset imbalanced
    splits = ["val"] * 3 + ["test"] * 3 + ["train"] * (n_clean - 6)
    rng.shuffle(splits)
    for k in range(n_clean):
        line_id, malignant = f"extra-{k + 1:05d}", k == melanoma
        (extra_dir / f"{line_id}.jpg").write_bytes(pl.painter.draw(2, k, malignant)[1])
        answer = "malignant" if malignant else "benign"
        split = "train" if malignant else splits[k]
        content = _image_question(f"jpeg/extra/{line_id}.jpg")
        pl.add_line(_chat(line_id, content, answer, pl.ids.new("IP"), answer, split))
    n = n_clean

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"extra-{n:05d}"

    def image_line(
        text: str = QUESTION, answer: str | None = "benign", label: str = "benign"
    ) -> dict[str, Any]:
        line_id = next_id()
        (extra_dir / f"{line_id}.jpg").write_bytes(pl.fresh_jpeg())
        content = _image_question(f"jpeg/extra/{line_id}.jpg", text)
        return _chat(line_id, content, answer, pl.ids.new("IP"), label)

    line_id = next_id()
    broken = json.dumps(_chat(line_id, QUESTION, "benign", pl.ids.new("IP"), "benign"))[:60]
    pl.mark("malformed_row", None, pl.add_line(broken), "JSONL line cut off mid-object (not valid JSON)")
    obj = image_line(answer=None)
    pl.mark("schema_error", obj["id"], pl.add_line(obj), "conversation without an assistant turn")
    line_id = next_id()
    obj = _chat(line_id, _image_question("../outside.jpg"), "benign", pl.ids.new("IP"), "benign")
    pl.mark(
        "path_outside_root", line_id, pl.add_line(obj), "image path ../outside.jpg leaves the data folder"
    )
    line_id = next_id()
    obj = _chat(line_id, "", "benign", pl.ids.new("IP"), "benign")
    pl.mark("text_empty", line_id, pl.add_line(obj), 'user content "" and no image')
    obj = image_line(answer="", label="")
    pl.mark("text_empty", obj["id"], pl.add_line(obj), 'assistant answer ""')
    words = [rng.choice(FILLER_WORDS) for _ in range(2000)]
    obj = image_line("Clinical history: " + " ".join(words) + ". " + QUESTION)
    pl.mark(
        "token_budget_exceeded", obj["id"], pl.add_line(obj), "about 2,000 words of history in the prompt"
    )
    for text, note in (
        ("Referred by jane.doe@example.com.", "email address"),
        ("Call the patient back on +44 20 7946 0958.", "phone number"),
        ("Paid by card 4111 1111 1111 1111.", "card number (Luhn-valid)"),
        ("Refund to GB82 WEST 1234 5698 7654 32.", "IBAN"),
        ("Patient SSN 123-45-6789.", "US social security number"),
    ):
        obj = image_line(f"{text} {QUESTION}")
        pl.mark("pii_detected", obj["id"], pl.add_line(obj), note)
    return n_clean
