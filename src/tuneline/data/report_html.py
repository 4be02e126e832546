"""``data_report.html``: the data report as a self-contained page a person would rather read.

The page is one file with no network references: CSS is inline, charts are inline SVG, and images
are small JPEG thumbnails embedded as ``data:`` URIs (:mod:`tuneline.data.thumbnails`). The page
is the template ``tuneline/templates/data_report.html.j2`` (package data); everything the report
says is escaped by Jinja2's autoescape. The size histograms are matplotlib figures drawn by
:mod:`tuneline.plots` (text as glyph paths); the class-balance chart is one SVG ``<rect>`` per bar
laid out there too, each with a hover title, so labels from the data are escaped like any text.

Huge datasets still give a page of reasonable size: thumbnails are capped per check (``and N
more``), related records per finding are capped, finding and dropped tables are capped at
``max_rows`` rows (the JSON report keeps every one), and image sizes are binned in Python.
"""

from __future__ import annotations

import math
import os  # noqa: F401 - the page is replaced with os.replace (runs.atomic_write_text); tests spy on it
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from tuneline import plots
from tuneline.artifacts import DataReport
from tuneline.data.findings import CHECKS
from tuneline.data.thumbnails import Thumb, _Thumbs, make_thumbnail
from tuneline.runs import atomic_write_text
from tuneline.sections import DataSummary, Finding, ImageStats

__all__ = ["Thumb", "make_thumbnail", "render_html", "render_html_string"]

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
_SIZE_LADDER: tuple[int, ...] = (
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
)
_SIZE_LADDER += (6144, 8192, 12288, 16384, 24576, 32768, 65536)


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


def _ordered_splits(names: Iterable[str]) -> list[str]:
    names = list(names)
    known = [s for s in SPLIT_ORDER if s in names]
    return known + sorted(n for n in names if n not in known)


# --------------------------------------------------------------------------------------------------
# checks, findings, dropped


def _severity_counts(report: DataReport) -> dict[str, dict[str, int]]:
    by_check = report.summary.by_check
    if by_check:
        return {
            code: {"error": c.error or 0, "warning": c.warning or 0, "info": c.info or 0}
            for code, c in by_check.items()
        }
    counts: dict[str, dict[str, int]] = {}
    for f in report.findings:
        if f.severity in SEVERITIES:
            counts.setdefault(str(f.check), dict.fromkeys(SEVERITIES, 0))[f.severity] += 1
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


def _finding_row(f: Finding) -> dict[str, Any]:
    related = [str(r) for r in f.related]
    return {
        "severity": f.severity if f.severity in SEVERITIES else "info",
        "record_id": None if f.record_id is None else str(f.record_id),
        "source": f.source,
        "field": f.field,
        "split": f.split,
        "message": str(f.message or ""),
        "related": related[:5],
        "related_more": max(0, len(related) - 5),
    }


def _checks_context(
    report: DataReport, thumbs: _Thumbs, max_thumbs: int, max_rows: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    counts = _severity_counts(report)
    by_code: dict[str, list[Finding]] = {}
    for f in report.findings:
        by_code.setdefault(str(f.check), []).append(f)
    for code, items in by_code.items():  # findings without a by_check entry still get a section
        if code not in counts:
            counts[code] = dict.fromkeys(SEVERITIES, 0)
            for f in items:
                if f.severity in SEVERITIES:
                    counts[code][f.severity] += 1
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
        with_record = [f for f in items if f.record_id is not None]
        gallery_wanted = code in _BROKEN_IMAGE_CHECKS or any(
            thumbs.has(str(f.record_id)) or f.related for f in with_record[:max_thumbs]
        )
        cards = []
        if gallery_wanted:
            for f in with_record[:max_thumbs]:
                related = [str(r) for r in f.related]
                cards.append(
                    {
                        "row": _finding_row(f),
                        "main": thumbs.get(str(f.record_id)),
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


def _balance_context(summary: DataSummary) -> dict[str, Any] | None:
    splits_in = summary.splits
    split_names = _ordered_splits(splits_in)
    # label -> count per split: maps by nature (typed dict[str, int])
    split_labels = {s: dict(splits_in[s].labels) for s in split_names}
    overall = dict(summary.labels)
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

    series: list[dict[str, Any]] = [{"name": "all kept", "colour": OVERALL_COLOUR, "counts": overall}]
    for i, s in enumerate(split_names):
        series.append({"name": s, "colour": SPLIT_COLOURS[i % len(SPLIT_COLOURS)], "counts": split_labels[s]})
    for ser in series:
        ser["total"] = sum(ser["counts"].values())

    def share(counts: Mapping[str, int], keys: list[str], total: int) -> tuple[int, float | None]:
        n = sum(counts.get(k, 0) for k in keys)
        return n, (n / total if total else None)

    groups: list[tuple[str, list[str]]] = [(k, [k]) for k in top]
    if rest:
        groups.append((f"other ({len(rest):,} labels)", rest))
    rows: list[dict[str, Any]] = []
    for name, keys in groups:
        cells: list[dict[str, Any]] = []
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

    bar_groups = [
        (
            r["label"],
            [
                {"value": c["p"], "n": c["n"], "fill": ser["colour"], "flag": c["flag"]}
                | {"title": f"{r['label']} · {ser['name']}: {c['n']:,} ({_pct(c['p'])})"}
                | {"text": _pct(c["p"]) if c["p"] is not None else ""}
                for ser, c in zip(series, r["cells"], strict=True)
            ],
        )
        for r in rows
    ]
    return {
        "series": [{"name": s["name"], "colour": s["colour"], "total": s["total"]} for s in series],
        "splits": [
            {
                "name": s,
                "records": splits_in[s].records,
                "groups": splits_in[s].groups,
                "colour": SPLIT_COLOURS[i % len(SPLIT_COLOURS)],
            }
            for i, s in enumerate(split_names)
        ],
        "rows": rows,
        "n_labels": len(labels),
        "svg": plots.grouped_bars(bar_groups, lambda v: _pct(v, 0)),
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
        step = max(1.0, float(math.ceil(plots.nice_step(hi - lo, 12)))) if hi > lo else 1.0
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
    if single:
        labels = [_edge_label(e) for e in edges[:-1]]
    else:
        labels = [_edge_label(e) or "+" for e in edges]
    name = "size-" + re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
    with plots.style():
        svg = plots.histogram(counts, labels, name=name, single=single, xlabel="pixels")
    return {"title": title, "svg": svg}


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


def _sizes_context(images: ImageStats) -> dict[str, Any] | None:
    pairs: Counter[tuple[int, int]] = Counter()
    for s in images.sizes:
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


def _formats_context(images: ImageStats) -> list[dict[str, Any]]:
    formats = {k: v or 0 for k, v in images.formats.items()}
    total = sum(formats.values())
    return [
        {"name": k, "n": v, "p": (v / total if total else 0.0)}
        for k, v in sorted(formats.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


# --------------------------------------------------------------------------------------------------
# page


def _context(
    report: DataReport,
    thumbnails: Mapping[str, str | Path],
    title: str,
    thumb_px: int,
    max_thumbs: int,
    max_rows: int,
) -> dict[str, Any]:
    summary = report.summary
    splits_of: dict[str, str] = {}
    for f in report.findings:
        rid, split = f.record_id, f.split
        if rid is not None and split and str(rid) not in splits_of:
            splits_of[str(rid)] = str(split)
    thumbs = _Thumbs(thumbnails, thumb_px, splits_of)
    check_table, sections = _checks_context(report, thumbs, max_thumbs, max_rows)

    error_fraction = float(summary.error_fraction or 0.0)
    allowed = None if summary.max_error_fraction is None else float(summary.max_error_fraction)
    passed = summary.passed
    if passed is None:  # an older report without its verdict: the fraction against the allowance
        passed = error_fraction <= (allowed if allowed is not None else 0.0)
    scale = max(error_fraction * 1.15, (allowed or 0.0) * 2, 1e-9)
    gauge = {
        "w": 260,
        "fill": 260 * min(error_fraction / scale, 1.0),
        "mark": None if allowed is None else 260 * min(allowed / scale, 1.0),
    }

    dropped = report.dropped
    dropped_reasons = Counter(str(d.reason) for d in dropped)
    images = report.images
    return {
        "title": title,
        "px": thumb_px,
        "summary": summary,
        "passed": passed,
        "error_fraction": error_fraction,
        "allowed": allowed,
        "gauge": gauge,
        "cards": [
            ("Records in", summary.records_in, ""),
            ("Kept", summary.records_out, "ok"),
            (
                "Dropped",
                len(dropped) if summary.dropped is None else summary.dropped,
                "warning" if summary.dropped else "",
            ),
            ("Errors", summary.errors, "error" if summary.errors else ""),
            ("Warnings", summary.warnings, "warning" if summary.warnings else ""),
            ("Info", summary.info, ""),
        ],
        "sources": summary.sources,
        "fingerprint": summary.fingerprint,
        "check_table": check_table,
        "sections": sections,
        "n_findings": len(report.findings),
        "balance": _balance_context(summary),
        "sizes": _sizes_context(images),
        "formats": _formats_context(images),
        "dropped": [
            {
                "record_id": None if d.record_id is None else str(d.record_id),
                "source": d.source,
                "field": d.field,
                "reason": str(d.reason),
                "anchor": _anchor(str(d.reason)),
                "desc": CHECKS.get(str(d.reason), ("", ""))[1],
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
    env = Environment(
        loader=PackageLoader("tuneline", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["wbr"] = _wbr
    env.filters["f1"] = lambda v: f"{float(v):.1f}"
    return env


def render_html_string(
    report: DataReport | Mapping[str, Any],
    thumbnails: Mapping[str, str | Path],
    *,
    title: str = "tuneline data report",
    thumb_px: int = 96,
    max_thumbs_per_check: int = 50,
    max_rows: int = 2000,
) -> str:
    """The page as a string (see :func:`render_html`)."""
    if not isinstance(report, DataReport):
        report = DataReport.model_validate(report)
    ctx = _context(report, thumbnails, title, thumb_px, max_thumbs_per_check, max_rows)
    return _environment().get_template("data_report.html.j2").render(**ctx)


def render_html(
    report: DataReport | Mapping[str, Any],
    thumbnails: Mapping[str, str | Path],
    out: Path,
    *,
    title: str = "tuneline data report",
    thumb_px: int = 96,
    max_thumbs_per_check: int = 50,
    max_rows: int = 2000,
) -> None:
    """Write ``report`` (``data_report.json``, typed or as the dict it holds) to ``out`` as a
    self-contained HTML page.

    ``thumbnails`` maps record id → image path on disk; flagged records and their related records
    are shown as embedded thumbnails of at most ``thumb_px`` pixels, and records whose image is
    absent from the mapping, missing on disk or unreadable get a placeholder box. At most
    ``max_thumbs_per_check`` flagged records per check are drawn as thumbnails and at most
    ``max_rows`` rows per table are listed (the JSON report has all of them). The file is written
    atomically (:func:`tuneline.runs.atomic_write_text`: a temporary file in the same folder, then
    ``os.replace``).
    """
    html = render_html_string(
        report,
        thumbnails,
        title=title,
        thumb_px=thumb_px,
        max_thumbs_per_check=max_thumbs_per_check,
        max_rows=max_rows,
    )
    atomic_write_text(Path(out), html)
