"""inspect_image / inspect_images: every fatal code, every normalisation, and the pool path."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tuneline.data.images import ImageInfo, ImageLimits, inspect_image, inspect_images

# ---------------------------------------------------------------- helpers (shared by this file only)


def picture(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """An RGB image with structure (gradient + shapes), so perceptual hashes mean something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 128.0)], axis=-1)
    arr += rng.normal(0, 8, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
        d.ellipse([x0, y0, x0 + w // 5, y0 + h // 5], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that *declares* width x height (valid IHDR CRC) but carries only a tiny IDAT.

    Lets a test show the pixel limit is enforced from the header, without a real giant file.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def hamming(a: int | None, b: int | None) -> int:
    assert a is not None and b is not None
    return (a ^ b).bit_count()


# ---------------------------------------------------------------- good files


def test_good_jpeg(tmp_path):
    p = save(picture(), tmp_path / "a.jpg", quality=90)
    info = inspect_image(p)
    assert info.ok and info.error is None and info.message is None
    assert (info.format, info.width, info.height, info.mode) == ("JPEG", 320, 240, "RGB")
    assert info.conversions == ()
    assert info.size_bytes == p.stat().st_size
    assert info.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert isinstance(info.phash, int) and 0 <= info.phash < 2**64
    assert isinstance(info.dhash, int) and 0 <= info.dhash < 2**64
    assert info.mean_rgb is not None and all(0 <= c <= 255 for c in info.mean_rgb)
    assert info.path == str(p)


def test_good_png_matches_jpeg_copy(tmp_path):
    img = picture(seed=1)
    png = inspect_image(save(img, tmp_path / "a.png"))
    jpg = inspect_image(save(img, tmp_path / "a.jpg", quality=90))
    assert png.ok and png.format == "PNG" and png.conversions == ()
    # Full decode + box reduce (PNG) vs DCT-scaled decode (JPEG) must agree on the same picture.
    assert hamming(png.phash, jpg.phash) <= 4
    assert png.mean_rgb is not None and jpg.mean_rgb is not None
    assert max(abs(a - b) for a, b in zip(png.mean_rgb, jpg.mean_rgb, strict=True)) < 3


@pytest.mark.parametrize("fmt,ext", [("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif"), ("GIF", "gif")])
def test_other_accepted_formats(tmp_path, fmt, ext):
    info = inspect_image(save(picture(96, 64), tmp_path / f"a.{ext}", fmt))
    assert info.ok, info.message
    assert (info.format, info.width, info.height) == (fmt, 96, 64)


# ---------------------------------------------------------------- fatal problems


def test_missing(tmp_path):
    info = inspect_image(tmp_path / "nope.jpg")
    assert info.error == "image_missing" and not info.ok
    assert info.sha256 is None and info.message


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    info = inspect_image(p)
    assert info.error == "image_unreadable" and "empty" in (info.message or "")
    assert info.sha256 == hashlib.sha256(b"").hexdigest() and info.size_bytes == 0


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 10)
    info = inspect_image(p)
    assert info.error == "image_unreadable"
    assert info.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()  # hashed even though not an image


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_truncated_jpeg(tmp_path, fraction):
    buf = io.BytesIO()
    picture(512, 384).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: int(len(data) * fraction)])
    info = inspect_image(p)
    assert info.error == "image_truncated", info
    assert info.format == "JPEG" and info.width == 512  # the header was fine
    assert info.phash is None


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    picture(256, 256).save(buf, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    info = inspect_image(p)
    assert info.error == "image_truncated", info
    assert info.sha256 is not None


def test_giant_header_refused_fast(tmp_path):
    p = png_header_only(tmp_path / "huge.png", 30_000, 30_000)
    assert p.stat().st_size < 200
    t0 = time.perf_counter()
    info = inspect_image(p)
    assert time.perf_counter() - t0 < 30  # decoding 900 Mpx would take minutes and GBs: a hang guard
    assert info.error == "image_too_large", info
    assert info.sha256 is not None


def test_large_header_below_pillow_bomb_limit_refused_by_ours(tmp_path):
    # 8,000 x 8,000 = 64M pixels: under Pillow's own bomb limit, over our 50M default.
    p = png_header_only(tmp_path / "big.png", 8_000, 8_000)
    t0 = time.perf_counter()
    info = inspect_image(p)
    assert time.perf_counter() - t0 < 30  # refused from the header, not decoded (64 Mpx): a hang guard
    assert info.error == "image_too_large"
    assert (info.width, info.height) == (8_000, 8_000)
    assert "64,000,000" in (info.message or "")


def test_custom_pixel_limit(tmp_path):
    p = save(picture(), tmp_path / "a.jpg")
    assert inspect_image(p, ImageLimits(max_pixels=320 * 240)).ok
    assert inspect_image(p, ImageLimits(max_pixels=320 * 240 - 1)).error == "image_too_large"


@pytest.mark.parametrize("fmt,ext", [("PPM", "ppm"), ("ICO", "ico")])
def test_identifiable_but_unsupported(tmp_path, fmt, ext):
    info = inspect_image(save(picture(64, 64), tmp_path / f"a.{ext}", fmt))
    assert info.error == "image_format_unsupported"
    assert info.format == fmt and fmt in (info.message or "")


def test_format_allowlist_is_configurable(tmp_path):
    p = save(picture(64, 64), tmp_path / "a.png")
    assert inspect_image(p, ImageLimits(formats=frozenset({"JPEG"}))).error == "image_format_unsupported"
    ppm = save(picture(64, 64), tmp_path / "a.ppm")
    assert inspect_image(ppm, ImageLimits(formats=frozenset({"PPM"}))).ok


# ---------------------------------------------------------------- modes and orientation


def test_cmyk_jpeg(tmp_path):
    info = inspect_image(save(picture().convert("CMYK"), tmp_path / "c.jpg"))
    assert info.ok and info.mode == "CMYK"
    assert "CMYK to RGB" in info.conversions


def test_palette_png(tmp_path):
    info = inspect_image(save(picture().convert("P"), tmp_path / "p.png"))
    assert info.ok and info.mode == "P"
    assert info.conversions == ("palette to RGB",)
    img = picture().convert("P")
    img.info["transparency"] = 0
    info = inspect_image(save(img, tmp_path / "pt.png", transparency=0))
    assert info.conversions == ("palette to RGB", "alpha removed")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((64, 64), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    info = inspect_image(save(Image.fromarray(arr), tmp_path / "g16.png"))
    assert info.ok and info.mode is not None and info.mode.startswith("I;16")
    assert "16-bit to 8-bit" in info.conversions and "grayscale to RGB" in info.conversions
    assert info.mean_rgb is not None and abs(info.mean_rgb[0] - 127.5) < 1.5  # PIL's convert would give 255


def test_rgba_png(tmp_path):
    info = inspect_image(save(picture().convert("RGBA"), tmp_path / "a.png"))
    assert info.ok and info.mode == "RGBA" and info.conversions == ("alpha removed",)


def test_grayscale_jpeg(tmp_path):
    info = inspect_image(save(picture().convert("L"), tmp_path / "g.jpg"))
    assert info.ok and info.mode == "L" and info.conversions == ("grayscale to RGB",)
    assert info.mean_rgb is not None and info.mean_rgb[0] == info.mean_rgb[1] == info.mean_rgb[2]


def test_exif_orientation_6(tmp_path):
    shown = picture(400, 600, seed=5)  # what a viewer displays
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # 600 x 400 on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = inspect_image(save(stored, tmp_path / "r.jpg", exif=exif, quality=92))
    plain = inspect_image(save(shown, tmp_path / "p.jpg", quality=92))
    assert rotated.ok
    assert (rotated.width, rotated.height) == (400, 600)
    assert "EXIF orientation 6 applied" in rotated.conversions
    assert hamming(rotated.phash, plain.phash) <= 4  # hashed as displayed, rotated the right way


# ---------------------------------------------------------------- paths


def test_hostile_paths_are_just_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = inspect_image("../../etc/passwd")
    assert info.error in {"image_missing", "image_unreadable"} and info.path == "../../etc/passwd"
    assert inspect_image(tmp_path).error == "image_unreadable"  # a directory
    assert inspect_image("bad\0name.jpg").error in {"image_missing", "image_unreadable"}


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX only")
def test_special_files_do_not_hang(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    assert inspect_image(fifo).error == "image_unreadable"
    assert inspect_image("/dev/zero").error == "image_unreadable"
    assert time.perf_counter() - t0 < 30  # reading a FIFO or /dev/zero would never end: a hang guard


# ---------------------------------------------------------------- many files


def test_workers_give_same_results_in_order(tmp_path):
    paths: list[str | Path] = []
    for i in range(6):
        paths.append(save(picture(128, 96, seed=i), tmp_path / f"{i}.jpg"))
    paths.insert(2, tmp_path / "missing.jpg")
    (tmp_path / "t.jpg").write_text("text")
    paths.insert(5, tmp_path / "t.jpg")
    seen: list[int] = []
    one = inspect_images(paths, workers=1)
    two = inspect_images(paths, workers=2, progress=seen.append)
    assert one == two
    assert [i.path for i in two] == [str(p) for p in paths]
    assert [i.error for i in two][2] == "image_missing" and two[5].error == "image_unreadable"
    assert seen == sorted(seen) and seen[-1] == len(paths)
    assert all(isinstance(i, ImageInfo) for i in two)


def test_inspect_images_empty_and_progress():
    assert inspect_images([]) == []
    seen: list[int] = []
    out = inspect_images(["/nonexistent/a.jpg", "/nonexistent/b.jpg"], progress=seen.append)
    assert [i.error for i in out] == ["image_missing", "image_missing"] and seen == [1, 2]


def test_a_file_that_kills_its_worker_is_reported_not_fatal(tmp_path, monkeypatch):
    """A decoder segfault kills a worker; the run goes on and names the file (fork pools only)."""
    import tuneline.data.images as images

    if images.pool_context().get_start_method() != "fork":
        pytest.skip("the crash is injected by patching the module, which only fork children inherit")
    real = images._inspect

    def crashing(path: str, limits: ImageLimits) -> ImageInfo:
        if "crash" in path:
            os._exit(3)  # what a segfault in a C decoder looks like from the parent
        return real(path, limits)

    monkeypatch.setattr(images, "_inspect", crashing)
    paths = [save(picture(64, 64, seed=i), tmp_path / f"{i}.png") for i in range(5)]
    paths.insert(3, save(picture(64, 64), tmp_path / "crash.png"))
    seen: list[int] = []
    out = inspect_images(paths, workers=2, progress=seen.append)
    assert [i.path for i in out] == [str(p) for p in paths]
    assert out[3].error == "image_unreadable" and "crashed" in (out[3].message or "")
    assert out[3].sha256 is not None
    assert all(i.ok for k, i in enumerate(out) if k != 3)
    assert seen[-1] == len(paths)


def test_spawn_pool_when_threads_are_running(tmp_path, caplog):
    """With another thread alive, fork is unsafe: the pool must use spawn and still agree."""
    import threading

    from tuneline.data.images import pool_context

    paths = [save(picture(64, 64, seed=i), tmp_path / f"{i}.jpg") for i in range(3)]
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert pool_context().get_start_method() == "spawn"
        two = inspect_images(paths, workers=2)
    finally:
        stop.set()
        t.join()
    assert two == inspect_images(paths, workers=1)
    assert not [r for r in caplog.records if "pool" in r.getMessage()]  # really ran in the pool


def test_inline_hashes_equal_imagehash_bit_for_bit(tmp_path):
    """images._hashes re-implements imagehash's phash/dhash for speed: it must give the same bits."""
    import random

    import imagehash

    from tuneline.data.images import perceptual_hashes as _hashes

    rng = random.Random(0)
    for k in range(40):
        img = Image.new("L", (rng.randint(20, 90), rng.randint(20, 90)), rng.randint(0, 255))
        px = img.load()
        for _ in range(300):
            px[rng.randrange(img.width), rng.randrange(img.height)] = rng.randint(0, 255)
        ours = _hashes(img, 8)
        assert ours["phash"] == int(str(imagehash.phash(img)), 16), k
        assert ours["dhash"] == int(str(imagehash.dhash(img)), 16), k
