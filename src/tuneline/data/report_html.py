"""``data_report.html``: the data report as a self-contained page a person would rather read.

The page is one file with no network references: CSS is inline, charts are inline SVG generated
here, and images are small JPEG thumbnails embedded as ``data:`` URIs. Everything the report says
is escaped by Jinja2's autoescape; the SVG charts are built from numbers in Python and drawn by
the template, so labels taken from the data are escaped like any other text.

Huge datasets still give a page of reasonable size: thumbnails are capped per check (``and N
more``), related records per finding are capped, finding and dropped tables are capped at
``max_rows`` rows (the JSON report keeps every one), and image sizes are binned in Python.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import tempfile
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape
from PIL import Image, ImageOps

from tuneline.data.findings import CHECKS

SEVERITIES = ("error", "warning", "info")
SPLIT_ORDER = ("train", "val", "validation", "dev", "test")
SPLIT_COLOURS = ("#1570ef", "#e04f16", "#7a5af8", "#0e9384", "#c11574", "#667085")
OVERALL_COLOUR = "#98a2b3"
MAX_RELATED_SHOWN = 4  # related thumbnails per flagged record; the rest are counted
MAX_LABELS = 20  # class-balance rows; the rest are summed into "other"
DRIFT_ABS = 0.05  # a split's label share this far from the overall share is highlighted
# Checks about a file that cannot be shown: drawn as placeholder boxes even without thumbnails.
_BROKEN_IMAGE_CHECKS = frozenset(
    {
        "path_outside_root",
        "image_missing",
        "image_unreadable",
        "image_truncated",
        "image_format_unsupported",
        "image_too_large",
    }
)
# Half-octave ladder for the size histogram when sizes span a wide range.
_SIZE_LADDER = (
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    1024,
    1536,
    2048,
    3072,
    4096,
    6144,
    8192,
)
_SIZE_LADDER += (12288, 16384, 24576, 32768, 65536)


# --------------------------------------------------------------------------------------------------
# thumbnails


@dataclass(frozen=True)
class Thumb:
    """One record's picture on the page: a data URI, or a reason for the placeholder box."""

    record_id: str
    uri: str | None
    reason: str = ""  # "missing", "unreadable" or "no image" when uri is None
    split: str | None = None


def make_thumbnail(path: str | Path, px: int = 96) -> tuple[str | None, str]:
    """A ``data:image/jpeg;base64,...`` URI of at most ``px`` × ``px``, or ``(None, reason)``.

    Never raises: a path that does not exist gives ``"missing"``, anything that fails to open or
    decode (not an image, truncated, too large, odd mode) gives ``"unreadable"``.
    """
    try:
        p = Path(path)
        if not p.is_file():
            return None, "missing"
    except Exception:  # noqa: BLE001 - invalid path (NUL byte, too long, permissions)
        return None, "missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                im.draft("RGB", (px * 2, px * 2))  # JPEG: decode at reduced scale (no-op otherwise)
                im.load()
                img: Image.Image = ImageOps.exif_transpose(im) or im
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    img = img.point(lambda v: v / 256).convert("L")
                elif img.mode == "F":
                    img = img.convert("L")
                has_alpha = img.mode in ("RGBA", "LA", "PA") or (
                    img.mode == "P" and "transparency" in img.info
                )
                img = img.convert("RGBA" if has_alpha else "RGB")
                img.thumbnail((px, px), Image.Resampling.LANCZOS)
                if has_alpha:
                    flat = Image.new("RGB", img.size, (255, 255, 255))
                    flat.paste(img, mask=img.getchannel("A"))
                    img = flat
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=82, optimize=True)
    except Exception:  # noqa: BLE001 - any failure to decode is a placeholder, never a crash
        return None, "unreadable"
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), ""


class _Thumbs:
    """Thumbnails made on demand, once per record id."""

    def __init__(self, paths: Mapping[str, str | Path], px: int, splits: Mapping[str, str]) -> None:
        self._paths = paths
        self._px = px
        self._splits = splits
        self._cache: dict[str, Thumb] = {}

    def has(self, record_id: str | None) -> bool:
        return record_id is not None and record_id in self._paths

    def get(self, record_id: str) -> Thumb:
        thumb = self._cache.get(record_id)
        if thumb is None:
            path = self._paths.get(record_id)
            if path is None:
                uri, reason = None, "no image"
            else:
                uri, reason = make_thumbnail(path, self._px)
            thumb = Thumb(record_id, uri, reason, self._splits.get(record_id))
            self._cache[record_id] = thumb
        return thumb


# --------------------------------------------------------------------------------------------------
# small helpers


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if 0 < value < 10 ** -(digits + 2):
        return f"<{10**-digits:g}%"
    text = f"{value * 100:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def _wbr(text: Any) -> Markup:
    """Escaped text with line-break opportunities after ``/`` and before ``:`` or ``#`` (paths)."""
    parts = re.split(r"(?<=/)|(?=[:#])", str(text))
    return Markup("<wbr>").join(escape(p) for p in parts)


def _anchor(code: str) -> str:
    return "check-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(code))


def _nice_step(span: float, target: int) -> float:
    """A 1/2/5 × 10^k step that cuts ``span`` into about ``target`` pieces."""
    if span <= 0:
        return 1.0
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


def _ticks(top: float, target: int = 4) -> tuple[float, list[float]]:
    """Axis maximum and tick values for data in ``[0, top]``."""
    step = _nice_step(top, target)
    axis_max = max(step, math.ceil(top / step) * step)
    return axis_max, [step * i for i in range(int(round(axis_max / step)) + 1)]


def _ordered_splits(names: Iterable[str]) -> list[str]:
    names = list(names)
    known = [s for s in SPLIT_ORDER if s in names]
    return known + sorted(n for n in names if n not in known)


def _short_number(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 10_000:
        return f"{v / 1000:g}k"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:g}"


# --------------------------------------------------------------------------------------------------
# checks, findings, dropped


def _severity_counts(report: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    by_check = (report.get("summary") or {}).get("by_check")
    if by_check:
        return {
            code: {s: int((counts or {}).get(s, 0) or 0) for s in SEVERITIES}
            for code, counts in by_check.items()
        }
    counts: dict[str, dict[str, int]] = {}
    for f in report.get("findings") or []:
        sev = f.get("severity")
        if sev in SEVERITIES:
            counts.setdefault(str(f.get("check")), dict.fromkeys(SEVERITIES, 0))[sev] += 1
    return counts


def _check_order(counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Non-zero checks: errors first, then warnings, then info; larger counts first; then CHECKS order."""
    order = {code: i for i, code in enumerate(CHECKS)}

    def key(code: str) -> tuple[int, int, int, str]:
        c = counts[code]
        rank = next((i for i, s in enumerate(SEVERITIES) if c.get(s)), len(SEVERITIES))
        return rank, -int(c.get(SEVERITIES[min(rank, 2)], 0)), order.get(code, len(order)), code

    return sorted((code for code, c in counts.items() if any(c.get(s) for s in SEVERITIES)), key=key)


def _top_severity(counts: Mapping[str, int]) -> str:
    return next((s for s in SEVERITIES if counts.get(s)), "info")


def _finding_row(f: Mapping[str, Any]) -> dict[str, Any]:
    related = [str(r) for r in (f.get("related") or [])]
    return {
        "severity": f.get("severity") if f.get("severity") in SEVERITIES else "info",
        "record_id": None if f.get("record_id") is None else str(f.get("record_id")),
        "source": f.get("source"),
        "field": f.get("field"),
        "split": f.get("split"),
        "message": str(f.get("message") or ""),
        "related": related[:5],
        "related_more": max(0, len(related) - 5),
    }


def _checks_context(
    report: Mapping[str, Any], thumbs: _Thumbs, max_thumbs: int, max_rows: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    counts = _severity_counts(report)
    by_code: dict[str, list[Mapping[str, Any]]] = {}
    for f in report.get("findings") or []:
        by_code.setdefault(str(f.get("check")), []).append(f)
    for code, items in by_code.items():  # findings without a by_check entry still get a section
        if code not in counts:
            counts[code] = dict.fromkeys(SEVERITIES, 0)
            for f in items:
                if f.get("severity") in SEVERITIES:
                    counts[code][f["severity"]] += 1
    codes = _check_order(counts)
    codes += sorted(c for c in by_code if c not in codes)

    table, sections = [], []
    for code in codes:
        c = counts[code]
        desc = CHECKS[code][1] if code in CHECKS else ""
        action = CHECKS[code][0] if code in CHECKS else ""
        top = _top_severity(c)
        table.append({"code": code, "anchor": _anchor(code), "desc": desc, "action": action, "top": top, **c})
        items = by_code.get(code, [])
        if not items:
            continue
        with_record = [f for f in items if f.get("record_id") is not None]
        gallery_wanted = code in _BROKEN_IMAGE_CHECKS or any(
            thumbs.has(str(f.get("record_id"))) or f.get("related") for f in with_record[:max_thumbs]
        )
        cards = []
        if gallery_wanted:
            for f in with_record[:max_thumbs]:
                related = [str(r) for r in (f.get("related") or [])]
                cards.append(
                    {
                        "row": _finding_row(f),
                        "main": thumbs.get(str(f["record_id"])),
                        "related": [thumbs.get(r) for r in related[:MAX_RELATED_SHOWN]],
                        "related_more": max(0, len(related) - MAX_RELATED_SHOWN),
                    }
                )
        sections.append(
            {
                "code": code,
                "anchor": _anchor(code),
                "desc": desc,
                "top": top,
                "counts": c,
                "total": len(items),
                "cards": cards,
                "cards_more": max(0, len(with_record) - len(cards)) if cards else 0,
                "rows": [_finding_row(f) for f in items[:max_rows]],
                "rows_more": max(0, len(items) - max_rows),
            }
        )
    return table, sections


# --------------------------------------------------------------------------------------------------
# class balance


def _balance_context(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    splits_in: Mapping[str, Any] = summary.get("splits") or {}
    split_names = _ordered_splits(splits_in)
    split_labels = {
        s: {str(k): int(v) for k, v in ((splits_in[s] or {}).get("labels") or {}).items()}
        for s in split_names
    }
    overall = {str(k): int(v) for k, v in (summary.get("labels") or {}).items()}
    if not overall:
        for counts in split_labels.values():
            for k, v in counts.items():
                overall[k] = overall.get(k, 0) + v
    if not overall:
        return None
    labels = sorted(
        set(overall) | {k for c in split_labels.values() for k in c}, key=lambda k: (-overall.get(k, 0), k)
    )
    top, rest = labels[:MAX_LABELS], labels[MAX_LABELS:]

    series = [{"name": "all kept", "colour": OVERALL_COLOUR, "counts": overall}]
    for i, s in enumerate(split_names):
        series.append({"name": s, "colour": SPLIT_COLOURS[i % len(SPLIT_COLOURS)], "counts": split_labels[s]})
    for ser in series:
        ser["total"] = sum(ser["counts"].values())

    def share(counts: Mapping[str, int], keys: list[str], total: int) -> tuple[int, float | None]:
        n = sum(counts.get(k, 0) for k in keys)
        return n, (n / total if total else None)

    groups = [(k, [k]) for k in top]
    if rest:
        groups.append((f"other ({len(rest):,} labels)", rest))
    rows = []
    for name, keys in groups:
        cells = []
        for ser in series:
            n, p = share(ser["counts"], keys, ser["total"])
            cells.append({"n": n, "p": p, "flag": ""})
        o = cells[0]
        for cell in cells[1:]:
            if cell["p"] is None or o["p"] is None:
                continue
            if cell["n"] == 0 and o["n"] > 0:
                cell["flag"] = "absent"
            elif abs(cell["p"] - o["p"]) >= DRIFT_ABS:
                cell["flag"] = "drift"
        rows.append({"label": name, "other": keys is rest, "cells": cells})

    # SVG geometry: one group of horizontal bars per label, one bar per series (all kept first).
    width, left, right = 560, 150, 52
    bar_h, bar_gap, group_gap, top_pad = 9, 2, 10, 22
    plot_w = width - left - right
    peak = max((c["p"] or 0) for r in rows for c in r["cells"]) or 1.0
    axis_max, ticks = _ticks(peak, 4)
    n_series = len(series)
    group_h = n_series * (bar_h + bar_gap) - bar_gap
    bars, texts = [], []
    y = top_pad
    for r in rows:
        texts.append({"x": left - 8, "y": y + group_h / 2 + 4, "text": r["label"], "full": r["label"]})
        for ser, cell in zip(series, r["cells"], strict=True):
            p = cell["p"] or 0.0
            w = plot_w * p / axis_max
            bars.append(
                {
                    "x": left,
                    "y": y,
                    "w": max(w, 1.0 if cell["n"] else 0.0),
                    "h": bar_h,
                    "fill": ser["colour"],
                    "title": f"{r['label']} · {ser['name']}: {cell['n']:,} ({_pct(cell['p'])})",
                    "tx": left + w + 4,
                    "ty": y + bar_h - 1,
                    "text": _pct(cell["p"]) if cell["p"] is not None else "",
                    "flag": cell["flag"],
                }
            )
            y += bar_h + bar_gap
        y += group_gap - bar_gap
    height = y + 4
    grid = [{"x": left + plot_w * t / axis_max, "label": _pct(t, 0)} for t in ticks]
    return {
        "series": [{"name": s["name"], "colour": s["colour"], "total": s["total"]} for s in series],
        "splits": [
            {
                "name": s,
                "records": int((splits_in[s] or {}).get("records", 0) or 0),
                "groups": (splits_in[s] or {}).get("groups"),
                "colour": SPLIT_COLOURS[i % len(SPLIT_COLOURS)],
            }
            for i, s in enumerate(split_names)
        ],
        "rows": rows,
        "n_labels": len(labels),
        "svg": {
            "width": width,
            "height": height,
            "left": left,
            "plot_w": plot_w,
            "bars": bars,
            "texts": texts,
            "grid": grid,
            "top_pad": top_pad,
        },
        "drift": any(c["flag"] for r in rows for c in r["cells"]),
    }


# --------------------------------------------------------------------------------------------------
# image sizes


def _bins(counter: Counter[int]) -> tuple[list[float], bool]:
    """Bin edges for the values in ``counter``, and whether each bin holds a single value.

    A narrow range gets linear bins with a round step; a wide one (longest over shortest above 4)
    gets half-octave bins (16, 24, 32, 48, 64, ...), which read naturally for pixel sizes.
    """
    lo, hi = min(counter), max(counter)
    if hi <= 4 * max(lo, 1):
        step = max(1.0, float(math.ceil(_nice_step(hi - lo, 12)))) if hi > lo else 1.0
        start = math.floor(lo / step) * step
        n = int((hi - start) // step) + 1
        return [start + i * step for i in range(n + 1)], step == 1
    ladder = [0, *_SIZE_LADDER, math.inf]
    first = bisect_right(ladder, lo) - 1
    last = bisect_right(ladder, hi)
    return ladder[first : last + 1], False


def _edge_label(value: float) -> str:
    return "" if value == math.inf else str(int(value))


def _histogram(counter: Counter[int], title: str) -> dict[str, Any] | None:
    if not counter:
        return None
    edges, single = _bins(counter)
    n_bins = len(edges) - 1
    counts = [0] * n_bins
    for value, n in counter.items():
        counts[min(max(bisect_right(edges, value) - 1, 0), n_bins - 1)] += n
    width, height, left, bottom, top = 560, 220, 52, 34, 18
    plot_w, plot_h = width - left - 12, height - top - bottom
    axis_max, ticks = _ticks(max(counts), 4)
    slot = plot_w / n_bins
    bar_w = max(2.0, slot - max(1.0, min(6.0, slot * 0.12)))
    total = sum(counts)
    label_every = max(1, math.ceil(34 / slot))
    bars, xlabels = [], []
    for i, n in enumerate(counts):
        a, b = edges[i], edges[i + 1]
        if single:
            rng = f"{int(a)} px"
        elif b == math.inf:
            rng = f"{int(a)} px and more"
        else:
            rng = f"{int(a)}–{int(b) - 1} px"
        h = plot_h * n / axis_max
        h = max(h, 1.5) if n else 0.0
        x = left + i * slot + (slot - bar_w) / 2
        bars.append(
            {
                "x": x,
                "y": top + plot_h - h,
                "w": bar_w,
                "h": h,
                "cx": x + bar_w / 2,
                "title": f"{rng}: {n:,} images ({_pct(n / total)})",
                "count_text": _short_number(n) if n and slot >= 28 else "",
            }
        )
        if single and i % label_every == 0:
            xlabels.append({"x": left + (i + 0.5) * slot, "text": _edge_label(a)})
    if not single:
        for i, e in enumerate(edges):
            if i % label_every == 0 and e != math.inf:
                xlabels.append({"x": left + i * slot, "text": _edge_label(e)})
        if edges[-1] == math.inf:
            xlabels.append({"x": left + plot_w, "text": "+"})
    grid = [{"y": top + plot_h - plot_h * t / axis_max, "label": _short_number(t)} for t in ticks]
    return {
        "title": title,
        "width": width,
        "height": height,
        "left": left,
        "right": width - 12,
        "top": top,
        "base": top + plot_h,
        "bars": bars,
        "xlabels": xlabels,
        "grid": grid,
    }


def _quantile(counter: Counter[int], qs: Iterable[float]) -> list[int]:
    items = sorted(counter.items())
    total = sum(counter.values())
    out = []
    for q in qs:
        target, seen = q * (total - 1), 0
        for value, n in items:
            seen += n
            if seen > target:
                out.append(value)
                break
    return out


def _sizes_context(images: Mapping[str, Any]) -> dict[str, Any] | None:
    pairs: Counter[tuple[int, int]] = Counter()
    for s in images.get("sizes") or []:
        try:
            w, h = int(s[0]), int(s[1])
        except (TypeError, ValueError, IndexError):
            continue
        pairs[(w, h)] += 1
    if not pairs:
        return None
    longer: Counter[int] = Counter()
    shorter: Counter[int] = Counter()
    widths: Counter[int] = Counter()
    heights: Counter[int] = Counter()
    for (w, h), n in pairs.items():
        longer[max(w, h)] += n
        shorter[min(w, h)] += n
        widths[w] += n
        heights[h] += n
    qs = (0.0, 0.05, 0.5, 0.95, 1.0)
    total = sum(pairs.values())
    return {
        "total": total,
        "distinct": len(pairs),
        "charts": [_histogram(longer, "Longer side (px)"), _histogram(shorter, "Shorter side (px)")],
        "stats": [
            {"name": "width", "values": _quantile(widths, qs)},
            {"name": "height", "values": _quantile(heights, qs)},
            {"name": "longer side", "values": _quantile(longer, qs)},
            {"name": "shorter side", "values": _quantile(shorter, qs)},
        ],
        "common": [{"w": w, "h": h, "n": n, "p": n / total} for (w, h), n in pairs.most_common(6)],
    }


def _formats_context(images: Mapping[str, Any]) -> list[dict[str, Any]]:
    formats = {str(k): int(v or 0) for k, v in (images.get("formats") or {}).items()}
    total = sum(formats.values())
    return [
        {"name": k, "n": v, "p": (v / total if total else 0.0)}
        for k, v in sorted(formats.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


# --------------------------------------------------------------------------------------------------
# page


def _context(
    report: Mapping[str, Any],
    thumbnails: Mapping[str, str | Path],
    title: str,
    thumb_px: int,
    max_thumbs: int,
    max_rows: int,
) -> dict[str, Any]:
    summary: Mapping[str, Any] = report.get("summary") or {}
    splits_of: dict[str, str] = {}
    for f in report.get("findings") or []:
        rid, split = f.get("record_id"), f.get("split")
        if rid is not None and split and str(rid) not in splits_of:
            splits_of[str(rid)] = str(split)
    thumbs = _Thumbs(thumbnails, thumb_px, splits_of)
    check_table, sections = _checks_context(report, thumbs, max_thumbs, max_rows)

    error_fraction = float(summary.get("error_fraction") or 0.0)
    allowed = summary.get("max_error_fraction")
    allowed = None if allowed is None else float(allowed)
    passed = bool(summary.get("passed", error_fraction <= (allowed if allowed is not None else 0.0)))
    scale = max(error_fraction * 1.15, (allowed or 0.0) * 2, 1e-9)
    gauge = {
        "w": 260,
        "fill": 260 * min(error_fraction / scale, 1.0),
        "mark": None if allowed is None else 260 * min(allowed / scale, 1.0),
    }

    dropped = list(report.get("dropped") or [])
    dropped_reasons = Counter(str(d.get("reason")) for d in dropped)
    images: Mapping[str, Any] = report.get("images") or {}
    return {
        "title": title,
        "px": thumb_px,
        "summary": summary,
        "passed": passed,
        "error_fraction": error_fraction,
        "allowed": allowed,
        "gauge": gauge,
        "cards": [
            ("Records in", summary.get("records_in"), ""),
            ("Kept", summary.get("records_out"), "ok"),
            ("Dropped", summary.get("dropped", len(dropped)), "warning" if summary.get("dropped") else ""),
            ("Errors", summary.get("errors"), "error" if summary.get("errors") else ""),
            ("Warnings", summary.get("warnings"), "warning" if summary.get("warnings") else ""),
            ("Info", summary.get("info"), ""),
        ],
        "sources": list(summary.get("sources") or []),
        "fingerprint": summary.get("fingerprint"),
        "check_table": check_table,
        "sections": sections,
        "n_findings": len(report.get("findings") or []),
        "balance": _balance_context(summary),
        "sizes": _sizes_context(images),
        "formats": _formats_context(images),
        "dropped": [
            {
                "record_id": None if d.get("record_id") is None else str(d.get("record_id")),
                "source": d.get("source"),
                "field": d.get("field"),
                "reason": str(d.get("reason")),
                "anchor": _anchor(str(d.get("reason"))),
                "desc": CHECKS.get(str(d.get("reason")), ("", ""))[1],
            }
            for d in dropped[:max_rows]
        ],
        "dropped_more": max(0, len(dropped) - max_rows),
        "dropped_total": len(dropped),
        "dropped_reasons": dropped_reasons.most_common(),
        "max_thumbs": max_thumbs,
        "max_rows": max_rows,
    }


def _environment() -> Environment:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["wbr"] = _wbr
    env.filters["f1"] = lambda v: f"{float(v):.1f}"
    return env


def render_html_string(
    report: Mapping[str, Any],
    thumbnails: Mapping[str, str | Path],
    *,
    title: str = "tuneline data report",
    thumb_px: int = 96,
    max_thumbs_per_check: int = 50,
    max_rows: int = 2000,
) -> str:
    """The page as a string (see :func:`render_html`)."""
    ctx = _context(report, thumbnails, title, thumb_px, max_thumbs_per_check, max_rows)
    return _environment().from_string(TEMPLATE).render(**ctx)


def render_html(
    report: dict,
    thumbnails: Mapping[str, str | Path],
    out: Path,
    *,
    title: str = "tuneline data report",
    thumb_px: int = 96,
    max_thumbs_per_check: int = 50,
    max_rows: int = 2000,
) -> None:
    """Write ``report`` (the ``data_report.json`` dict) to ``out`` as a self-contained HTML page.

    ``thumbnails`` maps record id → image path on disk; flagged records and their related records
    are shown as embedded thumbnails of at most ``thumb_px`` pixels, and records whose image is
    absent from the mapping, missing on disk or unreadable get a placeholder box. At most
    ``max_thumbs_per_check`` flagged records per check are drawn as thumbnails and at most
    ``max_rows`` rows per table are listed (the JSON report has all of them). The file is written
    atomically: a temporary file in the same folder, then ``os.replace``.
    """
    html = render_html_string(
        report,
        thumbnails,
        title=title,
        thumb_px=thumb_px,
        max_thumbs_per_check=max_thumbs_per_check,
        max_rows=max_rows,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------------------------------
# the template

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tuneline">
<title>{{ title }}</title>
<style>
:root {
  --fg: #101828; --fg2: #344054; --muted: #667085; --line: #eaecf0; --line2: #d0d5dd;
  --bg: #f5f6f8; --card: #ffffff;
  --err: #b42318; --err-bg: #fef3f2; --err-line: #fecdca;
  --warn: #b54708; --warn-bg: #fffaeb; --warn-line: #fedf89;
  --info: #175cd3; --info-bg: #eff8ff; --info-line: #b2ddff;
  --ok: #067647; --ok-bg: #ecfdf3; --ok-line: #abefc6;
  --px: {{ px }}px;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans",
    "Liberation Sans", Arial, sans-serif; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  "DejaVu Sans Mono", monospace; font-size: 12.5px; }
a { color: var(--info); text-decoration: none; }
a:hover { text-decoration: underline; }
header.top { background: #101828; color: #fff; }
header.top .wrap { display: flex; align-items: baseline; gap: 24px; padding-top: 14px; padding-bottom: 14px; }
header.top h1 { font-size: 17px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header.top nav { display: flex; gap: 16px; flex-wrap: wrap; font-size: 13px; }
header.top nav a { color: #d0d5dd; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
main.wrap { padding-top: 20px; padding-bottom: 48px; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px 20px; margin: 0 0 18px; }
h2 { font-size: 16px; margin: 0 0 4px; font-weight: 650; }
h3 { font-size: 14px; margin: 0; font-weight: 600; }
p.sub { margin: 0 0 14px; color: var(--muted); font-size: 13px; }
.muted { color: var(--muted); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }

/* verdict */
.verdict { display: flex; align-items: center; gap: 18px; border-radius: 10px; padding: 16px 22px;
  margin: 0 0 18px; border: 1px solid; }
.verdict.pass { background: var(--ok-bg); border-color: var(--ok-line); color: var(--ok); }
.verdict.fail { background: var(--err-bg); border-color: var(--err-line); color: var(--err); }
.verdict .icon { width: 40px; height: 40px; border-radius: 50%; display: flex; align-items: center;
  justify-content: center; font-size: 22px; font-weight: 700; color: #fff; flex: none; }
.verdict.pass .icon { background: #17b26a; }
.verdict.fail .icon { background: #d92d20; }
.verdict .what { font-size: 19px; font-weight: 650; line-height: 1.25; }
.verdict .why { color: var(--fg2); margin-top: 2px; }
.verdict .gauge { margin-left: auto; text-align: right; color: var(--fg2); font-size: 12px; }

/* summary */
.stats { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 14px; }
.stat { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fcfcfd; }
.stat .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .4px; }
.stat .v { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; line-height: 1.3; }
.stat.error .v { color: var(--err); } .stat.warning .v { color: var(--warn); } .stat.ok .v { color: var(--ok); }
.meta { display: flex; flex-wrap: wrap; gap: 6px 28px; font-size: 13px; color: var(--fg2); }
.meta b { color: var(--muted); font-weight: 500; margin-right: 6px; }

/* tables */
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .3px; border-bottom: 1px solid var(--line2); padding: 6px 10px; white-space: nowrap; }
td { border-bottom: 1px solid var(--line); padding: 6px 10px; vertical-align: top; }
tbody tr:hover td { background: #f9fafb; }
td.zero { color: #c0c5cd; }
td.wrapcell { word-break: break-word; }
.rows td { padding: 4px 10px; }
details { margin-top: 12px; }
details > summary { cursor: pointer; color: var(--info); font-size: 13px; user-select: none; }
details[open] > summary { margin-bottom: 6px; }
.scroll { max-height: 560px; overflow: auto; border: 1px solid var(--line); border-radius: 8px; }
.scroll th { position: sticky; top: 0; background: #fff; }

/* badges */
.badge { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 11.5px; font-weight: 600;
  line-height: 19px; border: 1px solid; white-space: nowrap; vertical-align: 1px; }
.badge.error { color: var(--err); background: var(--err-bg); border-color: var(--err-line); }
.badge.warning { color: var(--warn); background: var(--warn-bg); border-color: var(--warn-line); }
.badge.info { color: var(--info); background: var(--info-bg); border-color: var(--info-line); }
.badge.split { color: var(--fg2); background: #f2f4f7; border-color: var(--line2); font-weight: 500; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 12.5px; font-weight: 600; }

/* class balance */
.balance { display: grid; grid-template-columns: minmax(0, 1fr) 560px; gap: 24px; align-items: start; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 12.5px; color: var(--fg2); margin: 0 0 8px; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
td.drift { background: var(--warn-bg); color: var(--warn); font-weight: 600; }
td.absent { background: var(--err-bg); color: var(--err); font-weight: 600; }
.key { padding: 0 5px; border-radius: 3px; font-weight: 600; }
.key.drift { background: var(--warn-bg); color: var(--warn); } .key.absent { background: var(--err-bg); color: var(--err); }
th .sw { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 5px; }
.cell-n { color: var(--muted); font-weight: 400; margin-left: 4px; font-size: 12px; }
svg text { font-family: inherit; }

/* sizes */
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
.charts h3 { margin-bottom: 4px; }
.twocol { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; margin-top: 14px; }
.bar { height: 8px; background: #eef0f3; border-radius: 4px; overflow: hidden; min-width: 120px; }
.bar > span { display: block; height: 100%; background: #1570ef; border-radius: 4px; }

/* findings */
.check { border-top: 1px solid var(--line); padding-top: 16px; margin-top: 16px; }
.check:first-of-type { border-top: 0; padding-top: 4px; margin-top: 4px; }
.check-head { display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; margin-bottom: 10px; }
.check-head .desc { color: var(--muted); }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.gallery.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(calc(var(--px) + 170px), 1fr)); }
.fcard { border: 1px solid var(--line); border-radius: 8px; padding: 10px; background: #fcfcfd; max-width: 100%; }
.fcard.single { display: flex; gap: 12px; align-items: flex-start; }
.fcard.single .fmeta { margin-top: 0; min-width: 0; }
.fcard.multi { flex: 0 1 auto; }
.fcard.multi .fmeta { min-width: 0; }
.pics { display: flex; gap: 8px; align-items: flex-start; }
.pic { width: var(--px); flex: none; }
.pic .frame { width: var(--px); height: var(--px); border-radius: 6px; overflow: hidden; display: flex;
  align-items: center; justify-content: center; background: #f2f4f7; border: 1px solid var(--line2); }
.pic.flagged .frame { outline: 2px solid currentColor; outline-offset: 1px; border-color: transparent; }
.pic.flagged.error { color: #f04438; } .pic.flagged.warning { color: #f79009; } .pic.flagged.info { color: #2e90fa; }
.pic img { max-width: 100%; max-height: 100%; display: block; }
.pic .cap { font-size: 11px; color: var(--fg2); margin-top: 4px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
.pic .cap2 { font-size: 10.5px; color: var(--muted); }
.ph { flex-direction: column; gap: 2px; color: #98a2b3; font-size: 11px; text-align: center;
  background: repeating-linear-gradient(135deg, #f9fafb 0 8px, #f2f4f7 8px 16px) !important;
  border: 1.5px dashed #98a2b3 !important; }
.ph .x { font-size: 20px; line-height: 1; }
.ph.missing, .ph.unreadable { color: #d92d20; border-color: #f97066 !important; }
.link, .more-rel { height: var(--px); display: flex; align-items: center; flex: none; }
.link { color: #98a2b3; font-size: 18px; }
.more-rel { font-size: 12px; color: var(--muted); white-space: nowrap; }
.fmeta { margin-top: 8px; font-size: 12.5px; }
.fmeta .rid { font-weight: 600; word-break: break-all; }
.fmeta .src { color: var(--muted); font-size: 11.5px; }
.fmeta .msg { margin-top: 3px; color: var(--fg2); display: -webkit-box; -webkit-line-clamp: 3;
  -webkit-box-orient: vertical; overflow: hidden; overflow-wrap: anywhere; }
.more { margin-top: 10px; color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 8px 0 24px; }
@media (max-width: 1000px) {
  .stats { grid-template-columns: repeat(3, 1fr); }
  .balance, .charts, .twocol { grid-template-columns: 1fr; }
}
@media print { header.top nav { display: none; } .scroll { max-height: none; overflow: visible; } }
</style>
</head>
<body>
{% macro badge(sev) %}<span class="badge {{ sev }}">{{ sev }}</span>{% endmacro %}
{% macro pic(t, cls, caption=True) %}
<div class="pic {{ cls }}" title="{{ t.record_id }}{% if t.reason %} ({{ t.reason }}){% endif %}">
  {% if t.uri %}
  <div class="frame"><img src="{{ t.uri }}" alt="{{ t.record_id }}" loading="lazy"></div>
  {% else %}
  <div class="frame ph {{ t.reason|replace(' ', '-') }}" role="img" aria-label="{{ t.reason }}: {{ t.record_id }}">
    <span class="x">{% if t.reason == 'no image' %}&#9633;{% else %}&#10005;{% endif %}</span>
    <span>{{ t.reason }}</span>
  </div>
  {% endif %}
  {% if caption %}
  <div class="cap">{{ t.record_id }}</div>
  {% if t.split %}<div class="cap2">{{ t.split }}</div>{% endif %}
  {% endif %}
</div>
{% endmacro %}
{% macro fmeta(c, top) %}
<div class="fmeta">
  <div><span class="rid mono">{{ c.row.record_id }}</span>
    {% if c.row.split %}<span class="badge split">{{ c.row.split }}</span>{% endif %}
    {% if c.row.severity != top %}{{ badge(c.row.severity) }}{% endif %}</div>
  {% if c.row.source %}<div class="src mono">{{ c.row.source|wbr }}</div>{% endif %}
  <div class="msg" title="{{ c.row.message }}">{{ c.row.message }}</div>
</div>
{% endmacro %}
{% macro opt(v) %}{% if v is none or v == '' %}<span class="muted">—</span>{% else %}{{ v }}{% endif %}{% endmacro %}

<header class="top">
  <div class="wrap">
    <h1>{{ title }}</h1>
    <nav>
      <a href="#summary">Summary</a>
      <a href="#checks">Checks</a>
      {% if balance %}<a href="#balance">Class balance</a>{% endif %}
      {% if sizes or formats %}<a href="#images">Images</a>{% endif %}
      {% if sections %}<a href="#findings">Findings</a>{% endif %}
      {% if dropped_total %}<a href="#dropped">Dropped</a>{% endif %}
    </nav>
  </div>
</header>

<main class="wrap">
<div class="verdict {{ 'pass' if passed else 'fail' }}" id="verdict">
  <div class="icon">{% if passed %}&#10003;{% else %}&#10005;{% endif %}</div>
  <div>
    <div class="what">{% if passed %}Data checks passed{% else %}Data checks failed{% endif %}</div>
    <div class="why">
      {{ error_fraction|pct(2) }} of records have errors
      {% if allowed is not none %}&mdash; {{ 'within' if passed else 'above' }} the allowed {{ allowed|pct(2) }}
      (<code>data.checks.max_error_fraction</code>){% endif %}.
      {{ summary.get('records_out')|num }} of {{ summary.get('records_in')|num }} records kept.
    </div>
  </div>
  <div class="gauge">
    <svg width="{{ gauge.w + 2 }}" height="30" viewBox="0 0 {{ gauge.w + 2 }} 30" role="img"
         aria-label="error fraction {{ error_fraction|pct(2) }}{% if allowed is not none %}, allowed {{ allowed|pct(2) }}{% endif %}">
      <rect x="1" y="8" width="{{ gauge.w }}" height="10" rx="5" fill="#ffffff" stroke="#d0d5dd"/>
      {% if gauge.fill > 0 %}<rect x="1" y="8" width="{{ gauge.fill|f1 }}" height="10" rx="5" fill="{{ '#17b26a' if passed else '#d92d20' }}"/>{% endif %}
      {% if gauge.mark is not none %}
      <line x1="{{ (gauge.mark + 1)|f1 }}" x2="{{ (gauge.mark + 1)|f1 }}" y1="3" y2="23" stroke="#101828" stroke-width="2"/>
      <text x="{{ (gauge.mark + 1)|f1 }}" y="30" font-size="9" text-anchor="middle" fill="#344054">allowed</text>
      {% endif %}
    </svg>
    <div>errors {{ error_fraction|pct(2) }}{% if allowed is not none %} / allowed {{ allowed|pct(2) }}{% endif %}</div>
  </div>
</div>

<section class="card" id="summary">
  <h2>Summary</h2>
  <p class="sub">Counts over every record read; "kept" records go on to training.</p>
  <div class="stats">
    {% for label, value, cls in cards %}
    <div class="stat {{ cls }}"><div class="k">{{ label }}</div><div class="v">{{ value|num }}</div></div>
    {% endfor %}
  </div>
  <div class="meta">
    {% for s in sources %}
    <div><b>{{ s.get('type', 'source') }}</b><code>{{ s.get('path') }}</code>
      <span class="muted">({{ s.get('records')|num }} records)</span></div>
    {% endfor %}
    {% if fingerprint %}<div><b>fingerprint</b><code>{{ fingerprint }}</code></div>{% endif %}
  </div>
</section>

<section class="card" id="checks">
  <h2>Checks</h2>
  {% if check_table %}
  <p class="sub">Checks that reported something, most severe first. Click a code to see its records.</p>
  <table>
    <thead><tr><th style="width:1%">Severity</th><th>Check</th><th>What it means</th><th>Default</th>
      <th class="num">Errors</th><th class="num">Warnings</th><th class="num">Info</th></tr></thead>
    <tbody>
    {% for c in check_table %}
    <tr>
      <td>{{ badge(c.top) }}</td>
      <td><a class="code" href="#{{ c.anchor }}">{{ c.code }}</a></td>
      <td>{{ opt(c.desc) }}</td>
      <td class="muted">{{ c.action }}</td>
      {% for s in ['error', 'warning', 'info'] %}
      <td class="num {{ '' if c[s] else 'zero' }}">{{ c[s]|num if c[s] else '–' }}</td>
      {% endfor %}
    </tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="sub">No check reported anything.</p>
  {% endif %}
</section>

{% if balance %}
<section class="card" id="balance">
  <h2>Class balance</h2>
  <p class="sub">Share of each label among kept records{% if balance.splits %}, overall and per split. Bars of one label
    should be about the same length; cells far from the overall share are highlighted{% endif %}.
    {% if balance.n_labels > balance.rows|length %}Top {{ balance.rows|length - 1 }} of {{ balance.n_labels|num }} labels.{% endif %}</p>
  {% if balance.splits %}
  <div class="legend">
    {% for s in balance.splits %}
    <span><i style="background: {{ s.colour }}"></i><b>{{ s.name }}</b>: {{ s.records|num }} records{% if s.groups is not none %}, {{ s.groups|num }} groups{% endif %}</span>
    {% endfor %}
  </div>
  {% endif %}
  <div class="balance">
    <div>
      <table>
        <thead><tr><th>Label</th>
          {% for s in balance.series %}<th class="num"><span class="sw" style="background: {{ s.colour }}"></span>{{ s.name }}</th>{% endfor %}
        </tr></thead>
        <tbody>
        {% for r in balance.rows %}
        <tr>
          <td class="wrapcell">{% if r.other %}<span class="muted">{{ r.label }}</span>{% else %}{{ r.label }}{% endif %}</td>
          {% for c in r.cells %}
          <td class="num {{ c.flag }}" {% if c.flag == 'absent' %}title="label absent from this split"{% elif c.flag == 'drift' %}title="share differs from overall by 5 points or more"{% endif %}>
            {{ c.p|pct }}<span class="cell-n">{{ c.n|num }}</span></td>
          {% endfor %}
        </tr>
        {% endfor %}
        </tbody>
        <tfoot><tr><td class="muted">records</td>
          {% for s in balance.series %}<td class="num muted">{{ s.total|num }}</td>{% endfor %}</tr></tfoot>
      </table>
      {% if balance.drift %}
      <p class="sub" style="margin-top: 8px"><span class="key drift">amber</span> a split's share differs from the
        overall share by 5 points or more; <span class="key absent">red</span> the label is absent from the split.</p>
      {% endif %}
    </div>
    <div>
      <div class="legend">
        {% for s in balance.series %}<span><i style="background: {{ s.colour }}"></i>{{ s.name }}</span>{% endfor %}
      </div>
      {% set g = balance.svg %}
      <svg id="class-balance-chart" class="chart" width="{{ g.width }}" height="{{ g.height|f1 }}" style="max-width: 100%; height: auto"
           viewBox="0 0 {{ g.width }} {{ g.height|f1 }}" role="img" aria-label="class balance per split">
        {% for t in g.grid %}
        <line x1="{{ t.x|f1 }}" x2="{{ t.x|f1 }}" y1="{{ g.top_pad - 6 }}" y2="{{ (g.height - 4)|f1 }}" stroke="#eaecf0"/>
        <text x="{{ t.x|f1 }}" y="{{ g.top_pad - 10 }}" font-size="10" fill="#667085" text-anchor="middle">{{ t.label }}</text>
        {% endfor %}
        {% for t in g.texts %}
        <text x="{{ t.x }}" y="{{ t.y|f1 }}" font-size="12" fill="#344054" text-anchor="end"><title>{{ t.full }}</title>{{ t.text|truncate(22, True, '…', 0) }}</text>
        {% endfor %}
        {% for b in g.bars %}
        <rect x="{{ b.x }}" y="{{ b.y|f1 }}" width="{{ b.w|f1 }}" height="{{ b.h }}" rx="2" fill="{{ b.fill }}"><title>{{ b.title }}</title></rect>
        <text x="{{ b.tx|f1 }}" y="{{ b.ty|f1 }}" font-size="9.5" fill="{{ '#b42318' if b.flag == 'absent' else ('#b54708' if b.flag == 'drift' else '#667085') }}"{% if b.flag %} font-weight="700"{% endif %}>{{ b.text }}</text>
        {% endfor %}
        <line x1="{{ g.left }}" x2="{{ g.left }}" y1="{{ g.top_pad - 6 }}" y2="{{ (g.height - 4)|f1 }}" stroke="#98a2b3"/>
      </svg>
    </div>
  </div>
</section>
{% endif %}

{% if sizes or formats %}
<section class="card" id="images">
  <h2>Images</h2>
  {% if sizes %}
  <p class="sub">{{ sizes.total|num }} images read, {{ sizes.distinct|num }} distinct sizes.</p>
  <div class="charts" id="size-histogram">
    {% for h in sizes.charts %}
    <div>
      <h3>{{ h.title }}</h3>
      <svg class="chart histogram" width="{{ h.width }}" height="{{ h.height }}" style="max-width: 100%; height: auto" viewBox="0 0 {{ h.width }} {{ h.height }}"
           role="img" aria-label="histogram of image {{ h.title }}">
        {% for t in h.grid %}
        <line x1="{{ h.left }}" x2="{{ h.right }}" y1="{{ t.y|f1 }}" y2="{{ t.y|f1 }}" stroke="#eaecf0"/>
        <text x="{{ h.left - 6 }}" y="{{ (t.y + 3.5)|f1 }}" font-size="10" fill="#667085" text-anchor="end">{{ t.label }}</text>
        {% endfor %}
        {% for b in h.bars %}
        {% if b.h %}<rect x="{{ b.x|f1 }}" y="{{ b.y|f1 }}" width="{{ b.w|f1 }}" height="{{ b.h|f1 }}" rx="2" fill="#1570ef"><title>{{ b.title }}</title></rect>{% endif %}
        {% if b.count_text %}<text x="{{ b.cx|f1 }}" y="{{ (b.y - 4)|f1 }}" font-size="9.5" fill="#344054" text-anchor="middle">{{ b.count_text }}</text>{% endif %}
        {% endfor %}
        {% for t in h.xlabels %}
        <line x1="{{ t.x|f1 }}" x2="{{ t.x|f1 }}" y1="{{ h.base }}" y2="{{ h.base + 4 }}" stroke="#98a2b3"/>
        <text x="{{ t.x|f1 }}" y="{{ h.base + 15 }}" font-size="10" fill="#475467" text-anchor="middle">{{ t.text }}</text>
        {% endfor %}
        <text x="{{ h.right }}" y="{{ h.base + 30 }}" font-size="10" fill="#667085" text-anchor="end">pixels</text>
        <line x1="{{ h.left }}" x2="{{ h.right }}" y1="{{ h.base }}" y2="{{ h.base }}" stroke="#98a2b3"/>
      </svg>
    </div>
    {% endfor %}
  </div>
  {% endif %}
  <div class="twocol">
    {% if sizes %}
    <div>
      <h3>Sizes (px)</h3>
      <table>
        <thead><tr><th></th><th class="num">min</th><th class="num">p5</th><th class="num">median</th><th class="num">p95</th><th class="num">max</th></tr></thead>
        <tbody>
        {% for s in sizes.stats %}
        <tr><td>{{ s.name }}</td>{% for v in s['values'] %}<td class="num">{{ v|num }}</td>{% endfor %}</tr>
        {% endfor %}
        </tbody>
      </table>
      <h3 style="margin-top: 14px">Most common sizes</h3>
      <table>
        <thead><tr><th>width × height</th><th class="num">images</th><th class="num">share</th></tr></thead>
        <tbody>
        {% for c in sizes.common %}
        <tr><td class="mono">{{ c.w }} × {{ c.h }}</td><td class="num">{{ c.n|num }}</td><td class="num">{{ c.p|pct }}</td></tr>
        {% endfor %}
        </tbody>
      </table>
    </div>
    {% endif %}
    {% if formats %}
    <div id="formats">
      <h3>Formats</h3>
      <table>
        <thead><tr><th>format</th><th class="num">images</th><th class="num">share</th><th style="width: 40%"></th></tr></thead>
        <tbody>
        {% for f in formats %}
        <tr><td class="mono">{{ f.name }}</td><td class="num">{{ f.n|num }}</td><td class="num">{{ f.p|pct }}</td>
          <td><div class="bar"><span style="width: {{ (f.p * 100)|f1 }}%"></span></div></td></tr>
        {% endfor %}
        </tbody>
      </table>
    </div>
    {% endif %}
  </div>
</section>
{% endif %}

{% if sections %}
<section class="card" id="findings">
  <h2>Findings</h2>
  <p class="sub">{{ n_findings|num }} findings, grouped by check. Flagged records are outlined; the records they
    duplicate, conflict with or leak into are shown beside them.</p>
  {% for s in sections %}
  <div class="check" id="{{ s.anchor }}">
    <div class="check-head">
      {{ badge(s.top) }}<h3 class="code">{{ s.code }}</h3>
      <span class="desc">{{ s.desc }}</span>
      <span class="muted" style="margin-left: auto">{{ s.total|num }} finding{{ '' if s.total == 1 else 's' }}</span>
    </div>
    {% if s.cards %}
    {% set multi = s.cards|selectattr('related')|list|length > 0 %}
    <div class="gallery{{ '' if multi else ' grid' }}">
      {% for c in s.cards %}
      {% if c.related or c.related_more %}
      {% set n_pics = 1 + c.related|length %}
      <div class="fcard multi" style="width: max(262px, calc({{ n_pics }} * (var(--px) + 8px) + {{ 48 + (70 if c.related_more else 0) }}px))">
        <div class="pics">
          {{ pic(c.main, 'flagged ' ~ c.row.severity, False) }}
          <span class="link" title="related records">&#8596;</span>
          {% for r in c.related %}{{ pic(r, 'related') }}{% endfor %}
          {% if c.related_more %}<span class="more-rel">+{{ c.related_more|num }} more</span>{% endif %}
        </div>
        {{ fmeta(c, s.top) }}
      </div>
      {% else %}
      <div class="fcard single">
        {{ pic(c.main, 'flagged ' ~ c.row.severity, False) }}
        {{ fmeta(c, s.top) }}
      </div>
      {% endif %}
      {% endfor %}
    </div>
    {% if s.cards_more %}<div class="more">… and {{ s.cards_more|num }} more flagged record{{ '' if s.cards_more == 1 else 's' }} (all listed below).</div>{% endif %}
    {% endif %}
    <details{% if s.rows|length <= 8 and not s.cards %} open{% endif %}>
      <summary>{{ 'All' if not s.rows_more else 'First' }} {{ s.rows|length|num }} finding{{ '' if s.rows|length == 1 else 's' }} as a table</summary>
      <div class="scroll">
      <table class="rows">
        <thead><tr><th>Severity</th><th>Record</th><th>Source</th><th>Field</th><th>Split</th><th>Message</th><th>Related</th></tr></thead>
        <tbody>
        {% for r in s.rows %}
        <tr><td>{{ badge(r.severity) }}</td>
          <td class="mono wrapcell">{% if r.record_id is none %}<span class="muted">{{ 'dataset' if r.source is none else '—' }}</span>{% else %}{{ r.record_id }}{% endif %}</td>
          <td class="mono wrapcell">{{ opt(r.source) }}</td><td class="mono">{{ opt(r.field) }}</td><td>{{ opt(r.split) }}</td>
          <td class="wrapcell">{{ r.message }}</td>
          <td class="mono wrapcell">{{ r.related|join(', ') }}{% if r.related_more %} <span class="muted">+{{ r.related_more|num }}</span>{% endif %}</td></tr>
        {% endfor %}
        </tbody>
      </table>
      </div>
      {% if s.rows_more %}<div class="more">… and {{ s.rows_more|num }} more rows in <code>data_report.json</code>.</div>{% endif %}
    </details>
  </div>
  {% endfor %}
</section>
{% endif %}

{% if dropped_total %}
<section class="card" id="dropped">
  <h2>Dropped records</h2>
  <p class="sub">{{ dropped_total|num }} record{{ '' if dropped_total == 1 else 's' }} left out of training:
    {% for reason, n in dropped_reasons %}<span class="code">{{ reason }}</span> {{ n|num }}{{ ', ' if not loop.last }}{% endfor %}.</p>
  <details{% if dropped|length <= 20 %} open{% endif %}>
    <summary>{{ 'All' if not dropped_more else 'First' }} {{ dropped|length|num }} dropped records</summary>
    <div class="scroll">
    <table class="rows">
      <thead><tr><th>Record</th><th>Source</th><th>Field</th><th>Reason</th><th>What it means</th></tr></thead>
      <tbody>
      {% for d in dropped %}
      <tr><td class="mono wrapcell">{{ opt(d.record_id) }}</td><td class="mono wrapcell">{{ opt(d.source) }}</td>
        <td class="mono">{{ opt(d.field) }}</td>
        <td><a class="code" href="#{{ d.anchor }}">{{ d.reason }}</a></td><td class="muted">{{ d.desc }}</td></tr>
      {% endfor %}
      </tbody>
    </table>
    </div>
    {% if dropped_more %}<div class="more">… and {{ dropped_more|num }} more in <code>data_report.json</code>.</div>{% endif %}
  </details>
</section>
{% endif %}
</main>
<footer>Generated by tuneline{% if fingerprint %} · dataset fingerprint <code>{{ fingerprint }}</code>{% endif %}</footer>
</body>
</html>
"""  # noqa: E501 - markup lines are kept whole for readability
