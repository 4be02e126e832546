"""Render a sample ``data_report.html`` (or take ``--html PATH``) and screenshot it with headless Chromium.

    python scripts/screenshot_report.py --out /tmp/report-shot.png
    python scripts/screenshot_report.py --html runs/x/data_report.html --out shot.png --height 4000

Exits with status 2 and a clear message when Chromium is not installed
(``apt-get install chromium``), and with status 1 when Chromium fails to write the screenshot.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

COLOURS = {
    "red": (214, 45, 45),
    "green": (40, 160, 70),
    "blue": (45, 85, 215),
    "yellow": (232, 200, 40),
    "purple": (130, 60, 190),
}


def find_chromium(explicit: str | None = None) -> str | None:
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _picture(label: str, size: tuple[int, int], rng: random.Random):
    """A coloured shape on a soft gradient: looks like a dataset image, not a test pattern."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    top = tuple(rng.randint(170, 235) for _ in range(3))
    bottom = tuple(max(0, c - rng.randint(30, 70)) for c in top)
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line(
            [(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    colour = COLOURS.get(label, (90, 90, 90))
    r = rng.uniform(0.22, 0.36) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    kind = rng.choice(("circle", "square", "triangle"))
    shadow = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(shadow)
    sd.ellipse([cx - r, cy + r * 0.7, cx + r, cy + r * 1.05], fill=90)
    img.paste((40, 40, 40), mask=shadow.filter(ImageFilter.GaussianBlur(max(2, r / 6))))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=colour)
    else:
        a = rng.uniform(0, 2 * math.pi)
        draw.polygon(
            [
                (cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
                for k in range(3)
            ],
            fill=colour,
        )
    return img


def sample_report(folder: Path, *, seed: int = 0) -> tuple[dict[str, Any], dict[str, Path]]:
    """A realistic report over ~2,400 records, with images on disk for the flagged and related ones."""
    from PIL import Image

    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    thumbs: dict[str, Path] = {}
    labels_of: dict[str, str] = {}

    def record(i: int) -> str:
        return f"rec-{i:05d}"

    def picture(rid: str, label: str, size: tuple[int, int] = (160, 120), base: str | None = None) -> None:
        path = images / f"{rid}.jpg"
        if base is not None:  # a near duplicate: the same picture, resized and re-encoded
            with Image.open(thumbs[base]) as im:
                im.convert("RGB").resize((size[0], size[1])).save(path, quality=55)
        else:
            _picture(label, size, rng).save(path, quality=88)
        thumbs[rid] = path
        labels_of[rid] = label

    findings: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []

    def add(check: str, severity: str, rid: str | None, message: str, **kw: Any) -> None:
        n = int(rid.split("-")[1]) if rid else None
        findings.append(
            {
                "check": check,
                "severity": severity,
                "record_id": rid,
                "source": kw.get("source", f"data/train.jsonl:{n + 1}" if n is not None else None),
                "field": kw.get("field"),
                "message": message,
                "related": kw.get("related", []),
                "split": kw.get("split"),
            }
        )
        if kw.get("drop"):
            dropped.append({"record_id": rid, "source": findings[-1]["source"], "reason": check})

    labels = list(COLOURS)
    # exact duplicates (dropped), each with the original it copies
    for k in range(6):
        orig, dup = record(100 + k * 7), record(1500 + k * 11)
        label = rng.choice(labels)
        picture(orig, label)
        thumbs[dup] = thumbs[orig]
        labels_of[dup] = label
        add(
            "duplicate_exact",
            "warning",
            dup,
            f"same image bytes as {orig}",
            related=[orig],
            split="train",
            drop=True,
        )
    # near duplicates (kept with a warning), one with several copies
    for k in range(4):
        orig = record(300 + k * 13)
        label = rng.choice(labels)
        picture(orig, label)
        copies = [record(1700 + k * 10 + j) for j in range(1 + (k == 0) * 5)]
        for c in copies:
            picture(c, label, (rng.choice((120, 140, 96)), rng.choice((90, 105, 72))), base=orig)
        add(
            "duplicate_near",
            "warning",
            orig,
            f"perceptual hash within 4 bits of {len(copies)} other image(s)",
            related=copies,
            split="train",
        )
    # label conflicts: the same picture with two different answers
    for k in range(2):
        a, b = record(600 + k), record(2100 + k)
        picture(a, "red")
        picture(b, "red", base=a)
        labels_of[b] = "orange"
        add(
            "label_conflict",
            "error",
            b,
            f"same image as {a} but answer 'orange' vs 'red'",
            related=[a],
            split="train",
        )
    # split leakage
    for k in range(3):
        a, b = record(800 + k), record(2200 + k)
        label = rng.choice(labels)
        picture(a, label)
        picture(b, label, base=a)
        add(
            "split_leakage",
            "error",
            b,
            f"near duplicate of train record {a} in the val split",
            related=[a],
            split="val",
        )
    # broken files
    add(
        "image_missing",
        "error",
        record(42),
        "images/cat_0042.jpg does not exist",
        field="messages[0].content[0].path",
        drop=True,
    )
    thumbs[record(42)] = images / "cat_0042.jpg"
    bad = images / "notes.jpg"
    bad.write_text("this is a text file saved with a .jpg name\n")
    thumbs[record(57)] = bad
    add("image_unreadable", "error", record(57), "cannot identify image file (not an image)", drop=True)
    add(
        "image_truncated",
        "error",
        record(58),
        "image file is truncated (41 bytes not processed)",
        drop=True,
    )
    thumbs[record(58)] = bad
    # many small images: exercises the cap
    for k in range(64):
        rid = record(900 + k)
        size = (rng.randint(18, 30), rng.randint(18, 30))
        picture(rid, rng.choice(labels), size)
        add("image_too_small", "warning", rid, f"{size[0]}×{size[1]} px, shorter side below 32", drop=True)
    for k in range(3):
        rid = record(1100 + k)
        picture(rid, rng.choice(labels), (240, 40))
        add("image_aspect_extreme", "warning", rid, "aspect ratio 6.0 above 5.0")
    for k in range(25):
        rid = record(1200 + k)
        add("image_mode_converted", "info", rid, rng.choice(["CMYK → RGB", "P → RGB", "EXIF rotation 90°"]))
    add("pii_detected", "warning", record(1300), "an email address in the prompt text", field="messages[0]")
    add("pii_detected", "warning", record(1301), "a phone number in the answer", field="messages[1]")
    add(
        "schema_error",
        "error",
        None,
        "missing field 'messages'",
        source="data/train.jsonl:2311",
        field="messages",
        drop=True,
    )
    add("class_imbalance", "warning", None, "class 'purple' is 1.9% of records (minimum 3%)", source=None)
    add(
        "malformed_row",
        "error",
        None,
        "Expecting ',' delimiter: line 1 column 88 (char 87) — <not html> & friends",
        source="data/train.jsonl:1977",
        drop=True,
    )

    by_check: dict[str, dict[str, int]] = {}
    for f in findings:
        by_check.setdefault(f["check"], {"error": 0, "warning": 0, "info": 0})[f["severity"]] += 1
    errors = sum(c["error"] for c in by_check.values())
    records_in = 2400
    overall = {"red": 742, "blue": 655, "green": 520, "yellow": 388, "purple": 27}
    splits = {
        "train": {
            "records": 1867,
            "labels": {"red": 590, "blue": 520, "green": 410, "yellow": 320, "purple": 27},
            "groups": 412,
        },
        "val": {"records": 232, "labels": {"red": 60, "blue": 88, "green": 54, "yellow": 30}, "groups": 51},
        "test": {"records": 233, "labels": {"red": 92, "blue": 47, "green": 56, "yellow": 38}, "groups": 52},
    }
    common = [(640, 480)] * 9 + [(1024, 768)] * 5 + [(224, 224)] * 4 + [(1920, 1080)] * 2 + [(480, 640)] * 3
    sizes = [list(rng.choice(common)) for _ in range(2100)]
    sizes += [[rng.randint(300, 4000), rng.randint(200, 3000)] for _ in range(260)]
    sizes += [[rng.randint(18, 30), rng.randint(18, 30)] for _ in range(64)]
    report = {
        "summary": {
            "records_in": records_in,
            "records_out": sum(overall.values()),
            "dropped": len(dropped),
            "errors": errors,
            "warnings": sum(c["warning"] for c in by_check.values()),
            "info": sum(c["info"] for c in by_check.values()),
            "error_fraction": errors / records_in,
            "max_error_fraction": 0.01,
            "passed": errors / records_in <= 0.01,
            "by_check": by_check,
            "labels": overall,
            "splits": splits,
            "sources": [{"type": "manifest", "path": "data/train.jsonl", "records": records_in}],
            "fingerprint": "9f2c4e1ab37d5e60c8a1f0b2d4e6a8c0",
        },
        "findings": findings,
        "dropped": dropped,
        "images": {"sizes": sizes, "formats": {"JPEG": 2051, "PNG": 331, "WEBP": 40, "GIF": 2}},
    }
    return report, thumbs


def screenshot(html: Path, out: Path, *, chromium: str, width: int, height: int, timeout: float) -> None:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tuneline-chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            html.resolve().as_uri(),
        ]
        if out.exists():
            out.unlink()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(
            f"chromium exited with {proc.returncode} and wrote no screenshot\n{proc.stderr[-2000:]}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--html", type=Path, help="an existing report page; without it a sample report is rendered"
    )
    ap.add_argument("--out", type=Path, default=Path("report-shot.png"), help="the PNG to write")
    ap.add_argument("--save-html", type=Path, help="also keep the rendered sample page here")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--chromium", help="path or name of the Chromium binary (default: $CHROMIUM, then PATH)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(
            "error: Chromium is not installed (looked for "
            + ", ".join(CHROMIUM_NAMES)
            + " on PATH and $CHROMIUM); install it with `apt-get install chromium` or pass --chromium PATH",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="tuneline-report-") as tmp:
        if args.html is not None:
            if not args.html.is_file():
                print(f"error: {args.html} does not exist", file=sys.stderr)
                return 2
            html = args.html
        else:
            from tuneline.data.report_html import render_html

            report, thumbs = sample_report(Path(tmp) / "data")
            html = Path(tmp) / "data_report.html"
            render_html(report, thumbs, html, title="tuneline data report — sample")
            if args.save_html is not None:
                args.save_html.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(html, args.save_html)
        try:
            screenshot(
                html, args.out, chromium=chromium, width=args.width, height=args.height, timeout=args.timeout
            )
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"error: screenshot failed: {exc}", file=sys.stderr)
            return 1
    origin = html if args.html else "a sample report"
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) from {origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
