"""Inspect image files for data validation: identity, size, mode, perceptual hashes.

One pass per file gives everything the image checks need, so the dataset is read once:

* ``sha256`` of the bytes (exact duplicates, fingerprints),
* the format, the displayed size (after EXIF orientation) and the stored mode, checked *before* any
  pixel is decoded, so a 30,000 x 30,000 header is refused in microseconds,
* a *reduced-size* decode: JPEG files are decoded with ``Image.draft``, which lets libjpeg scale
  the DCT by 1/2, 1/4 or 1/8 (4x to 64x fewer output pixels) and still raises on truncated data.
  It cannot skip the entropy (Huffman) decoding, which is most of the cost on textured images:
  measured on photo-like q90 files, 0.78 ms vs 1.14 ms for a full ``load()`` at 512x512 and
  44 ms vs 97 ms at 4000x3000. Other formats are fully decoded (their codecs have no reduced
  decode) and then box-reduced,
* ``phash``/``dhash`` (imagehash) and the mean colour of that reduced image, for near duplicates.

Only the fatal problems are reported as ``error`` (missing, unreadable, truncated, unsupported
format, too large); small or elongated images are facts the caller judges from width/height.
``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set: a truncated file must fail, not be padded grey.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import scipy.fftpack
from PIL import Image

from tuneline.data.checks.duplicates import _base
from tuneline.data.pools import pool_context

log = logging.getLogger(__name__)

DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})

# The reduced decode brings each side into [_WORK_SIZE, 2 * _WORK_SIZE). imagehash then resizes to
# 32x32 (phash) and 9x8 (dhash), so 64 px leaves a 2x margin over the phash input. Measured against
# hashes of a full decode on 2,100 calibration JPEGs: phash differs by 0.6 bits on average, dhash
# by 2.7 (a few low-contrast images much more); what matters is that all copies take this same path.
_WORK_SIZE = 64

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_READ_CHUNK = 1 << 20
_IN_MEMORY = 64 << 20
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Everything a hostile or broken file has been seen to raise from Pillow's parsers and decoders.
# ``Exception`` is the last line: inspect_image must never take the whole validation down.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError,
                  TypeError, ZeroDivisionError, MemoryError, OverflowError, RuntimeError)  # fmt: skip


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image is. ``min_side``/``max_aspect`` are applied by the caller."""

    min_side: int = 16
    max_pixels: int = 50_000_000
    max_aspect: float = 8.0
    formats: frozenset[str] = DEFAULT_FORMATS
    hash_size: int = 8


@dataclass(frozen=True)
class ImageInfo:
    """The result of inspecting one file. ``error`` is a fatal check code, or None when usable."""

    path: str
    error: str | None
    message: str | None
    size_bytes: int = 0
    sha256: str | None = None
    format: str | None = None
    width: int | None = None  # as displayed: after EXIF orientation
    height: int | None = None
    mode: str | None = None  # the stored PIL mode
    conversions: tuple[str, ...] = ()
    phash: int | None = None
    dhash: int | None = None
    mean_rgb: tuple[float, float, float] | None = None
    # Near-duplicate confirmation without a 2nd decode: central-70% mean RGB, 16x16 base thumbnail
    centre_rgb: tuple[float, float, float] | None = None
    thumb: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def inspect_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> ImageInfo:
    """Inspect one file; never raises for a bad file (the problem is in ``error``/``message``)."""
    spath = str(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns about bomb-sized headers, odd palettes and corrupt EXIF; the result
            # already says what matters, and warnings from thousands of files would drown the log.
            warnings.simplefilter("ignore")
            return _inspect(spath, limits)
    except Exception as exc:  # noqa: BLE001 - a last line of defence, see _DECODE_ERRORS
        return ImageInfo(spath, "image_unreadable", f"could not inspect the file ({_describe(exc)})")


def _inspect(path: str, limits: ImageLimits) -> ImageInfo:
    # 1. Exists, is a regular file (a FIFO or /dev/zero would block or never end), can be read.
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ImageInfo(path, "image_missing", "the file does not exist; fix the path or remove the record")
    except (OSError, ValueError) as exc:
        return ImageInfo(path, "image_unreadable", f"cannot access the file ({_describe(exc)})")
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
        return ImageInfo(path, "image_unreadable", f"the path is {kind}; point the record at an image file")

    # 2. sha256. Files up to _IN_MEMORY are read once and decoded from memory (one read for both);
    # bigger ones are hashed in a stream and re-read by Pillow (from the page cache).
    digest = hashlib.sha256()
    size = 0
    data: bytes | None = None
    try:
        with open(path, "rb") as fh:
            if st.st_size <= _IN_MEMORY:
                data = fh.read()
                digest.update(data)
                size = len(data)
            else:
                for block in iter(lambda: fh.read(_READ_CHUNK), b""):
                    digest.update(block)
                    size += len(block)
    except OSError as exc:
        return ImageInfo(
            path, "image_unreadable", f"cannot read the file ({_describe(exc)}); check permissions"
        )
    sha = digest.hexdigest()
    base: dict[str, Any] = {"path": path, "size_bytes": size, "sha256": sha}
    if size == 0:
        return ImageInfo(
            **base, error="image_unreadable", message="the file is empty (0 bytes); re-export it"
        )

    # 3. Identify from the header only.
    try:
        img = Image.open(io.BytesIO(data) if data is not None else path)
    except Image.DecompressionBombError as exc:
        return ImageInfo(
            **base,
            error="image_too_large",
            message=f"the header declares more pixels than Pillow will decode safely ({_describe(exc)}); "
            "refused before decoding. Downscale the image",
        )
    except _DECODE_ERRORS as exc:  # includes UnidentifiedImageError (an OSError)
        if data is not None:
            start = data[:32]
        else:
            with open(path, "rb") as fh:
                start = fh.read(32)
        sniffed = _sniff(start)
        if sniffed is not None:  # an image signature whose header Pillow cannot parse: cut or corrupt
            return ImageInfo(
                **base,
                format=sniffed,
                error="image_truncated",
                message=f"starts like a {sniffed} file but its header cannot be parsed ({_describe(exc)}); "
                "the file is truncated or corrupt: re-export or re-download it, or remove the record",
            )
        return ImageInfo(
            **base,
            error="image_unreadable",
            message=f"not an image Pillow can identify (starts with {start[:16]!r}); "
            "re-export it as JPEG or PNG, or remove the record",
        )

    try:
        return _inspect_open(img, base, limits)
    finally:
        img.close()


def _inspect_open(img: Image.Image, base: dict[str, Any], limits: ImageLimits) -> ImageInfo:
    """Checks on an identified image: format, pixel count (header only), then the reduced decode."""
    fmt = img.format
    width, height = img.size
    base = {**base, "format": fmt, "mode": img.mode}
    if fmt not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        return ImageInfo(
            **base,
            width=width,
            height=height,
            error="image_format_unsupported",
            message=f"format {fmt} is not accepted (allowed: {allowed}); convert it to JPEG or PNG, "
            "or allow the format in data.images.formats",
        )
    if width <= 0 or height <= 0:
        return ImageInfo(**base, error="image_unreadable", message=f"the header says {width}x{height} pixels")
    if width * height > limits.max_pixels:
        return ImageInfo(
            **base,
            width=width,
            height=height,
            error="image_too_large",
            message=f"{width}x{height} = {width * height:,} pixels is above the limit of "
            f"{limits.max_pixels:,} (data.images.max_pixels); refused before decoding. "
            "Downscale the image or raise the limit",
        )
    conversions = _mode_conversions(img)

    # Reduced-size decode. Any failure here means the pixel data is broken.
    try:
        small = _reduced_decode(img, fmt)
        orientation = _orientation(img, fmt)
    except Image.DecompressionBombError as exc:
        return ImageInfo(**base, width=width, height=height, error="image_too_large", message=_describe(exc))
    except _DECODE_ERRORS as exc:
        return ImageInfo(
            **base,
            width=width,
            height=height,
            error="image_truncated",
            message=f"the image data ends early or is corrupt ({_describe(exc)}); "
            "re-export or re-download the file, or remove the record",
        )

    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
        conversions = (*conversions, f"EXIF orientation {orientation} applied")
        if orientation >= 5:
            width, height = height, width

    # Mean colour from an 8x8 box average: exact block means, and on 64 pixels plain Python sums
    # are cheaper than numpy's call overhead (this runs once per image, thousands of times).
    px = small.resize((8, 8), Image.Resampling.BOX).tobytes()
    if small.mode == "L":
        m = sum(px) / 64
        mean_rgb = (m, m, m)
        gray = small
    else:
        mean_rgb = (sum(px[0::3]) / 64, sum(px[1::3]) / 64, sum(px[2::3]) / 64)
        gray = small.convert("L")  # once, for both hashes
    return ImageInfo(
        **base,
        error=None,
        message=None,
        width=width,
        height=height,
        conversions=conversions,
        **perceptual_hashes(gray, limits.hash_size),
        mean_rgb=mean_rgb,
        centre_rgb=centre_rgb(small),
        thumb=_base(np.asarray(small.convert("RGB"), dtype=np.uint8)),
    )


def centre_rgb(im: Image.Image) -> tuple[float, float, float]:
    """Mean RGB of the central 70% of ``im`` (one BOX resample: exact area means)."""
    box = (im.width * 0.15, im.height * 0.15, im.width * 0.85, im.height * 0.85)
    px = im.convert("RGB").resize((1, 1), Image.Resampling.BOX, box=box).tobytes()
    return (float(px[0]), float(px[1]), float(px[2]))


class PerceptualHashes(TypedDict):
    phash: int
    dhash: int


def perceptual_hashes(gray: Image.Image, hash_size: int = 8) -> PerceptualHashes:
    """imagehash's phash and dhash of the reduced decode, as ints, bit for bit.

    The arithmetic is imagehash's own (Lanczos resize to 32x32 / 9x8, scipy's type-II DCT, median
    threshold; left-right differences), written inline because imagehash's object wrapping costs
    ~100 us per image, as much as the arithmetic; at ~1 ms per image that decides whether checking
    is cheaper than a plain decode (benchmarks/bench_validate.py). A test pins equality with imagehash.
    Alternatives were measured and rejected: a box filter to 32x32 first saves ~40 us per image but
    aliases (7x more distinct look-alike pairs flagged at equal thresholds); one shared Lanczos 32x32
    for both saves ~10 us and loses ~2 points of crop recall.
    """
    side = hash_size * 4
    pixels = np.asarray(gray.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:hash_size, :hash_size]
    phash_bits = dct > np.median(dct)
    small = np.asarray(gray.resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS), dtype=np.int16)
    dhash_bits = small[:, 1:] > small[:, :-1]
    return {"phash": _bits_int(phash_bits), "dhash": _bits_int(dhash_bits)}


def _bits_int(bits: np.ndarray) -> int:
    """Hash bits as an int, most significant bit first (same as ``int(str(imagehash_hash), 16)``)."""
    flat = bits.ravel()
    return int.from_bytes(np.packbits(flat).tobytes(), "big") >> ((-flat.size) % 8)


def _reduced_decode(img: Image.Image, fmt: str | None) -> Image.Image:
    """Decode to an RGB or L image, each side reduced to [_WORK_SIZE, 2 * _WORK_SIZE) when larger.

    JPEG: ``draft`` picks the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= the
    request, so libjpeg never produces the full-size pixels. Others: full ``load()`` (PNG, WebP,
    GIF, TIFF and BMP codecs have no reduced decode), then box-reduce with ``Image.reduce``, which
    is cheap and, like the DCT scaling, an average over blocks, so copies of one image in
    different formats and sizes land on similar small images and similar hashes.
    """
    if fmt in _JPEG_FORMATS:
        img.draft("RGB", (_WORK_SIZE, _WORK_SIZE))
    img.load()
    out: Image.Image = img
    if out.mode.startswith("I;16"):  # Image.reduce cannot take it: 16 -> 8 bits first (exact, small)
        out = Image.fromarray((np.asarray(out).astype(np.uint16) >> 8).astype(np.uint8), "L")
    elif out.mode not in ("I", "F"):  # I and F are reduced first and scaled on the small image
        out = _to_rgb_or_l(out)
    fx, fy = out.width // _WORK_SIZE, out.height // _WORK_SIZE
    if fx >= 2 or fy >= 2:
        out = out.reduce((max(fx, 1), max(fy, 1)))
    return _to_rgb_or_l(out)


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """What a loader should feed a model: 8-bit RGB, or L for grayscale sources.

    High bit depths are scaled to 8 bits with numpy because PIL's ``convert("L")``/``"RGB"``
    *clips* them at 255 (a 16-bit PNG would come out almost white): 16-bit by 1/256, floats in
    [0, 1] by 255, other 32-bit integer and float data by their range when it exceeds 0-255.
    """
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8), "L")
    if mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if mode == "F" and lo >= 0 and hi <= 1:
            arr = arr * 255.0  # float images in [0, 1]
        elif lo >= 0 and 255 < hi <= 65535:
            arr = arr / 257.0  # 16-bit data stored as 32-bit (older Pillow, some TIFFs)
        elif lo < 0 or hi > 255:
            arr = (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")  # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV


def _mode_conversions(img: Image.Image) -> tuple[str, ...]:
    """Human-readable normalisations a loader must apply to get 8-bit RGB, from the stored mode."""
    mode = img.mode
    out: list[str] = []
    if mode == "P":
        out.append("palette to RGB")
        if "transparency" in img.info:
            out.append("alpha removed")
    elif mode == "PA":
        out += ["palette to RGB", "alpha removed"]
    elif mode in ("RGBA", "RGBa"):
        out.append("alpha removed")
    elif mode in ("L", "LA", "La"):
        out.append("grayscale to RGB")
        if mode != "L":
            out.append("alpha removed")
    elif mode == "1":
        out.append("1-bit to RGB")
    elif mode.startswith("I;16"):
        out += ["16-bit to 8-bit", "grayscale to RGB"]
    elif mode == "I":
        out += ["32-bit integer to 8-bit", "grayscale to RGB"]
    elif mode == "F":
        out += ["32-bit float to 8-bit", "grayscale to RGB"]
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        out.append(f"{mode} to RGB")
    elif mode != "RGB":
        out.append(f"{mode} to RGB")
    if mode in ("RGB", "RGBA") and any(";16" in str(_tile_rawmode(t)) for t in getattr(img, "tile", [])):
        out.insert(0, "16-bit to 8-bit")  # 16-bit RGB(A) PNG/TIFF: Pillow keeps only the high bytes
    return tuple(out)


def _sniff(start: bytes) -> str | None:
    """The format a file's first bytes claim, for the formats we accept (to tell cut from garbage)."""
    if start.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if start.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if start.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if start.startswith(b"RIFF") and start[8:12] == b"WEBP":
        return "WEBP"
    if start.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if start.startswith(b"BM") and len(start) >= 18:
        if struct.unpack("<I", start[14:18])[0] in (12, 16, 40, 52, 56, 64, 108, 124):  # DIB header size
            return "BMP"
    return None


def _tile_rawmode(tile: object) -> object:
    args = getattr(tile, "args", None)
    if isinstance(args, tuple):
        return args[0] if args else None
    return args


def _orientation(img: Image.Image, fmt: str | None) -> int:
    """EXIF orientation 1-8; a broken EXIF block is treated as 'no rotation', not as a bad image."""
    if fmt in ("JPEG", "MPO", "WEBP") and "exif" not in img.info:
        return 1  # no EXIF block at all: skip the parser (a measurable cost on small files)
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except _DECODE_ERRORS:
        return 1


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Many files


def inspect_images(
    paths: Sequence[str | Path],
    limits: ImageLimits = ImageLimits(),
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[ImageInfo]:
    """Inspect many files; results are in input order. ``progress(n_done)`` as results come in.

    ``workers > 1`` uses a process pool (see ``pool_context`` for fork vs spawn) fed with chunks of
    paths, so the per-task overhead is paid per chunk. A worker killed by a decoder crash does not
    hang or lose the run: the unfinished files are retried one by one, and the file that kills a
    worker again is reported as unreadable.
    """
    items = list(paths)
    n = len(items)
    results: list[ImageInfo | None] = [None] * n
    done = 0

    def finished(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done)

    if workers <= 1 or n < 2:
        for i, p in enumerate(items):
            results[i] = inspect_image(p, limits)
            finished(1)
        return results  # type: ignore[return-value]

    chunk = max(1, min(64, -(-n // (workers * 4))))
    starts = list(range(0, n, chunk))
    ctx = pool_context()
    broken = False
    ex = ProcessPoolExecutor(max_workers=min(workers, len(starts)), mp_context=ctx)
    try:
        futures: dict[Future[list[ImageInfo]], int] = {
            ex.submit(_inspect_chunk, items[s : s + chunk], limits): s for s in starts
        }
        pending = set(futures)
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                s = futures[fut]
                try:
                    infos = fut.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception:  # noqa: BLE001 - e.g. a pickling problem: do the chunk here
                    infos = [inspect_image(p, limits) for p in items[s : s + chunk]]
                results[s : s + len(infos)] = infos
                finished(len(infos))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    if broken:
        todo = [i for i in range(n) if results[i] is None]
        if len(todo) == n:  # not one chunk came back: the pool cannot run here, not a bad file
            log.warning(
                "image worker pool (%s) failed to start; inspecting in this process", ctx.get_start_method()
            )
            for i in todo:
                results[i] = inspect_image(items[i], limits)
                finished(1)
        else:
            _isolate(todo, items, limits, results, finished, ctx)
    return results  # type: ignore[return-value]


def _inspect_chunk(paths: list[str | Path], limits: ImageLimits) -> list[ImageInfo]:
    return [inspect_image(p, limits) for p in paths]


def _isolate(
    todo: list[int],
    items: list[str | Path],
    limits: ImageLimits,
    results: list[ImageInfo | None],
    finished: Callable[[int], None],
    ctx: BaseContext,
) -> None:
    """After a worker died: one file per task in a one-worker pool, so the culprit is known exactly.

    The single worker runs the tasks in order, so the first task that fails with BrokenProcessPool
    is the file that killed it; it is reported and a fresh pool takes the rest. If two fresh pools
    in a row die on their first file, the pool itself is failing (not the files): the rest is
    inspected in this process.
    """
    first_task_deaths = 0
    while todo:
        rest: list[int] = []
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            futs = [ex.submit(inspect_image, items[i], limits) for i in todo]
            for k, (i, fut) in enumerate(zip(todo, futs, strict=True)):
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    log.warning("image worker died on %s; reporting it as unreadable", items[i])
                    first_task_deaths = first_task_deaths + 1 if k == 0 else 0
                    results[i] = _crashed(items[i])
                    rest = todo[k + 1 :]
                    finished(1)
                    break
                finished(1)
        todo = rest
        if first_task_deaths >= 2:
            log.warning("image worker pool keeps dying at start; inspecting the rest in this process")
            for i in todo:
                results[i] = inspect_image(items[i], limits)
                finished(1)
            return


def _crashed(path: str | Path) -> ImageInfo:
    """The file killed the decoder process: report it with its hash (hashing bytes is safe here)."""
    spath = str(path)
    try:
        digest = hashlib.sha256()
        size = 0
        with open(spath, "rb") as fh:
            for block in iter(lambda: fh.read(_READ_CHUNK), b""):
                digest.update(block)
                size += len(block)
        sha: str | None = digest.hexdigest()
    except OSError:
        sha, size = None, 0
    return ImageInfo(
        spath,
        "image_unreadable",
        "the image decoder crashed on this file (its worker process died); re-export or remove it",
        size_bytes=size,
        sha256=sha,
    )
