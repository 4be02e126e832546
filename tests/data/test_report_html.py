"""data_report.html: self-contained, escaped, thumbnails side by side, placeholders, charts, fast."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tuneline.data import report_html
from tuneline.data.report_html import make_thumbnail, render_html

EVIL = "<script>alert(1)</script>"
EVIL_ATTR = 'x" onerror="alert(2)'
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
N_SMALL = 60  # findings for one check: more than the 50 thumbnails shown


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    img = Image.new("RGB", size, colour)
    img.paste(
        (255 - colour[0], 255 - colour[1], 255 - colour[2]),
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2),
    )
    img.save(path)
    return path


def _finding(check: str, severity: str, rid: str | None, message: str, **kw: Any) -> dict[str, Any]:
    return {
        "check": check,
        "severity": severity,
        "record_id": rid,
        "source": kw.get("source", f"data.jsonl:{rid}" if rid else None),
        "field": kw.get("field"),
        "message": message,
        "related": kw.get("related", []),
        "split": kw.get("split"),
    }


@pytest.fixture
def sample(tmp_path) -> tuple[dict[str, Any], dict[str, Path]]:
    img = tmp_path / "images"
    img.mkdir()
    thumbs: dict[str, Path] = {
        "orig-1": _image(img / "orig-1.png", (200, 30, 30)),
        "dup-1": _image(img / "dup-1.jpg", (30, 200, 30)),
        "dup-2": _image(img / "dup-2.png", (30, 30, 200), (40, 30)),
        "conflict-a": _image(img / "conflict-a.png", (200, 200, 30)),
        "conflict-b": _image(img / "conflict-b.png", (200, 30, 200)),
        "leak-val": _image(img / "leak-val.png", (30, 200, 200)),
        "leak-train": _image(img / "leak-train.png", (120, 60, 10)),
        EVIL: _image(img / "evil.png", (10, 10, 10)),
        "missing-1": img / "does-not-exist.png",
        "unreadable-1": img / "notes.png",
    }
    (img / "notes.png").write_text("not an image at all\n")
    findings = [
        _finding(
            "duplicate_near", "warning", "orig-1", "near copies", related=["dup-1", "dup-2"], split="train"
        ),
        _finding("label_conflict", "error", "conflict-b", "same image, other answer", related=["conflict-a"]),
        _finding(
            "split_leakage",
            "error",
            "leak-val",
            "duplicate across splits",
            related=["leak-train"],
            split="val",
        ),
        _finding("image_missing", "error", "missing-1", "images/does-not-exist.png does not exist"),
        _finding("image_unreadable", "error", "unreadable-1", "cannot identify image file"),
        _finding("pii_detected", "warning", EVIL, f"an email in {EVIL}", field="messages[0]"),
        _finding("schema_error", "error", EVIL_ATTR, "bad row", source=EVIL_ATTR),
        _finding("class_imbalance", "warning", None, "class 'rare' is 2% of records", source=None),
        _finding("image_mode_converted", "info", "orig-1", "CMYK → RGB"),
    ]
    for i in range(N_SMALL):
        rid = f"small-{i:03d}"
        thumbs[rid] = _image(img / f"{rid}.png", (i * 4, 255 - i * 4, (i * 37) % 256), (20, 18))
        findings.append(_finding("image_too_small", "warning", rid, "20×18 px, shorter side below 32"))
    by_check: dict[str, dict[str, int]] = {}
    for f in findings:
        by_check.setdefault(f["check"], {"error": 0, "warning": 0, "info": 0})[f["severity"]] += 1
    report = {
        "summary": {
            "records_in": 1000,
            "records_out": 930,
            "dropped": 70,
            "errors": 5,
            "warnings": 64,
            "info": 1,
            "error_fraction": 0.005,
            "max_error_fraction": 0.01,
            "passed": True,
            "by_check": by_check,
            "labels": {"cat": 500, "dog": 400, "rare": 20, "<b>bold</b>": 10},
            "splits": {
                "train": {
                    "records": 744,
                    "labels": {"cat": 400, "dog": 320, "rare": 20, "<b>bold</b>": 4},
                    "groups": 90,
                },
                "val": {"records": 93, "labels": {"cat": 50, "dog": 40, "<b>bold</b>": 3}, "groups": 11},
                "test": {"records": 93, "labels": {"cat": 50, "dog": 40, "<b>bold</b>": 3}, "groups": 11},
            },
            "sources": [{"type": "manifest", "path": "data.jsonl", "records": 1000}],
            "fingerprint": "abc123",
        },
        "findings": findings,
        "dropped": [
            {"record_id": "missing-1", "source": "data.jsonl:missing-1", "reason": "image_missing"},
            {"record_id": EVIL, "source": "data.jsonl:9", "reason": "pii_detected"},
        ]
        + [
            {"record_id": f"small-{i:03d}", "source": None, "reason": "image_too_small"}
            for i in range(N_SMALL)
        ],
        "images": {
            "sizes": [[64, 48]] * 800 + [[1024, 768]] * 100 + [[20, 18]] * N_SMALL,
            "formats": {"PNG": 900, "JPEG": 60},
        },
    }
    return report, thumbs


@pytest.fixture
def page(sample, tmp_path) -> str:
    report, thumbs = sample
    out = tmp_path / "out" / "data_report.html"
    render_html(report, thumbs, out)
    return out.read_text(encoding="utf-8")


def _uri(path: Path) -> str:
    uri, reason = make_thumbnail(path, 96)
    assert uri is not None, reason
    return uri


def test_written_atomically_via_a_temporary_file_in_the_same_folder(sample, tmp_path, monkeypatch):
    report, thumbs = sample
    out = tmp_path / "data_report.html"
    calls: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(report_html.os, "replace", spy)
    render_html(report, thumbs, out)
    assert len(calls) == 1
    src, dst = calls[0]
    assert dst == out and src.parent == out.parent and src != out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["data_report.html"]

    # a failure before the rename leaves the previous page untouched and no temporary file behind
    out.write_text("previous page")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        render_html(report, thumbs, out)
    assert out.read_text() == "previous page"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["data_report.html"]


def test_page_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    for attr, value in re.findall(r"""\b(src|href|xlink:href|action)\s*=\s*["']([^"']*)["']""", page, re.I):
        assert not re.match(r"\s*(https?:)?//", value, re.I), (attr, value)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page, re.I)
    assert "<link" not in page.lower()
    assert "<script" not in page.lower()
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert imgs
    for tag in imgs:
        src = re.search(r'\bsrc="([^"]*)"', tag)
        assert src and src.group(1).startswith(("data:image/jpeg;base64,", "data:image/png;base64,")), tag


def test_flagged_records_shown_beside_their_related_records(page, sample):
    _, thumbs = sample
    for rid in ("orig-1", "dup-1", "dup-2", "conflict-a", "conflict-b", "leak-val", "leak-train"):
        assert _uri(thumbs[rid]) in page, rid
    # the flagged thumbnail and its related ones are in the same card, flagged first
    card = page[page.index(_uri(thumbs["orig-1"])) :]
    card = card[: card.index('class="fmeta"')]
    assert _uri(thumbs["dup-1"]) in card and _uri(thumbs["dup-2"]) in card
    assert "split_leakage" in page and "leak-train" in page


def test_thumbnails_are_capped_per_check_but_every_finding_is_listed(page, sample):
    _, thumbs = sample
    shown = sum(_uri(thumbs[f"small-{i:03d}"]) in page for i in range(N_SMALL))
    assert shown == 50
    assert "and 10 more flagged records" in page
    for i in range(N_SMALL):  # the table lists every row
        assert f"small-{i:03d}" in page
    assert "<details" in page


def test_missing_and_unreadable_images_get_placeholders(page):
    assert re.search(r'class="frame ph missing"[^>]*aria-label="missing: missing-1"', page)
    assert re.search(r'class="frame ph unreadable"[^>]*aria-label="unreadable: unreadable-1"', page)
    assert 'alt="missing-1"' not in page and 'alt="unreadable-1"' not in page


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "empty", "truncated", "nul"])
def test_make_thumbnail_never_raises(tmp_path, kind):
    good = _image(tmp_path / "good.jpg", (10, 120, 200), (300, 200))
    paths = {
        "missing": tmp_path / "nope.png",
        "directory": tmp_path,
        "text": tmp_path / "t.png",
        "empty": tmp_path / "e.png",
        "truncated": tmp_path / "cut.jpg",
        "nul": "bad\x00name.png",
    }
    (tmp_path / "t.png").write_text("hello")
    (tmp_path / "e.png").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    uri, reason = make_thumbnail(paths[kind], 96)
    assert uri is None and reason in ("missing", "unreadable")
    uri, reason = make_thumbnail(good, 32)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,") and reason == ""


def test_class_balance_and_histogram_svgs(page):
    balance = page[page.index('id="balance"') : page.index('id="images"')]
    assert '<svg id="class-balance-chart"' in balance
    assert balance.count("<rect") == 4 * 4  # 4 labels × (all kept + 3 splits)
    for split in ("train", "val", "test"):
        assert split in balance
    assert 'class="num absent"' in balance  # "rare" is in train only
    images = page[page.index('id="images"') : page.index('id="findings"')]
    assert 'id="size-histogram"' in images
    assert images.count('class="chart histogram"') == 2
    assert "960 images read" in images
    assert "PNG" in images and "JPEG" in images


def test_checks_table_sorted_by_severity_and_only_nonzero(page):
    checks = page[page.index('id="checks"') : page.index('id="balance"')]
    codes = re.findall(r'<a class="code" href="#check-[^"]+">([^<]+)</a>', checks)
    sev = {
        "label_conflict": 0,
        "split_leakage": 0,
        "image_missing": 0,
        "image_unreadable": 0,
        "schema_error": 0,
    }
    sev |= {"duplicate_near": 1, "pii_detected": 1, "class_imbalance": 1, "image_too_small": 1}
    sev |= {"image_mode_converted": 2}
    assert sorted(codes) == sorted(sev)
    assert [sev[c] for c in codes] == sorted(sev[c] for c in codes)
    assert "duplicate_exact" not in checks  # zero counts are not listed
    assert "a re-encoded, resized or slightly cropped copy" in checks  # the description from CHECKS


def test_text_from_the_data_is_escaped(page):
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert EVIL_ATTR not in page and 'onerror="alert' not in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_verdict_banner(sample, tmp_path):
    report, thumbs = sample
    out = tmp_path / "r.html"
    render_html(report, thumbs, out, title="my <data>")
    html = out.read_text()
    assert "Data checks passed" in html and "0.5%" in html and "1%" in html
    assert "<title>my &lt;data&gt;</title>" in html
    report["summary"] |= {"passed": False, "error_fraction": 0.25}
    render_html(report, thumbs, out)
    html = out.read_text()
    assert "Data checks failed" in html and "25%" in html


def test_minimal_report_renders(tmp_path):
    out = tmp_path / "r.html"
    render_html({"summary": {"records_in": 0, "records_out": 0}, "findings": [], "dropped": []}, {}, out)
    html = out.read_text()
    assert "No check reported anything" in html
    assert 'id="balance"' not in html and 'id="findings"' not in html


def test_hundred_thousand_sizes_render_quickly(tmp_path):
    import random

    rng = random.Random(0)
    sizes = [[rng.randint(16, 6000), rng.randint(16, 6000)] for _ in range(100_000)]
    findings = [
        _finding("duplicate_near", "warning", f"r{i}", "near copy", related=[f"r{i + 1}"])
        for i in range(20_000)
    ]
    report = {
        "summary": {"records_in": 100_000, "records_out": 100_000, "labels": {"a": 60_000, "b": 40_000}},
        "findings": findings,
        "dropped": [],
        "images": {"sizes": sizes, "formats": {"JPEG": 100_000}},
    }
    out = tmp_path / "big.html"
    render_html(report, {}, out, max_rows=1000)  # how fast: benchmarks/bench_speed.py (data-report-100k)
    html = out.read_text()
    assert "100,000 images read" in html
    assert "19,000 more rows in" in html
    assert len(html) < 2_000_000


@pytest.mark.integration
def test_screenshot_script_says_when_chromium_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CHROMIUM"} | {"PATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "shot.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Chromium is not installed" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
@pytest.mark.integration
def test_screenshot_of_sample_report(tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--save-html", str(tmp_path / "sample.html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 20_000
    with Image.open(out) as im:
        assert im.size == (1280, 2400)
        assert im.convert("RGB").getcolors(maxcolors=1) is None  # more than one colour
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
