"""Validation: read every source, run every check, apply the configured actions, split, check leakage.

    tuneline data validate CONFIG

The result says which records are kept (and in which split), every finding with its severity,
every record that was dropped and why, and whether the dataset passes (errors within
data.checks.max_error_fraction). Nothing bad is passed on and nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneline.artifacts import (
    DataReport as DataReport,  # re-exported: the typed view of what this module writes
)
from tuneline.config import Config
from tuneline.data.checks import duplicates, images, labels, leakage, text
from tuneline.data.findings import CHECKS, SEVERITY_OF_ACTION, Action, Finding
from tuneline.data.images import ImageLimits, inspect_images
from tuneline.data.records import Record
from tuneline.data.sources import read_source
from tuneline.data.split import SPLITS, group_key, split_records
from tuneline.runs import atomic_write_json

log = logging.getLogger("tuneline.data")
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Validation:
    records_in: int
    splits: dict[str, list[Record]]
    findings: list[Finding]
    dropped: list[dict[str, Any]]
    infos: dict[str, Any]
    passed: bool
    summary: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)
    all_records: list[Record] = field(default_factory=list)  # every parsed record, excluded ones too

    @property
    def records(self) -> list[Record]:
        return [r for s in SPLITS for r in self.splits[s]]

    def report(self) -> dict[str, Any]:
        sizes = [[i.width, i.height] for i in self.infos.values() if i.width is not None]
        formats = Counter(i.format for i in self.infos.values() if i.format)
        return {
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "dropped": self.dropped,
            "images": {"sizes": sizes, "formats": dict(formats)},
        }


def _action(actions: Mapping[str, Action], code: str) -> Action:
    return actions.get(code, CHECKS[code][0])


def _apply(cfg: Config, raw: list[Finding]) -> tuple[list[Finding], dict[str, Finding], dict[str, Finding]]:
    """Set each finding's severity from its check's action; return (findings, errors, drops): the
    first failing / dropping finding of each record (keyed by record id, else by its source)."""
    out: list[Finding] = []
    errors: dict[str, Finding] = {}
    drops: dict[str, Finding] = {}
    # data.checks.actions is keyed by the CheckCode literals; findings carry their code as a str
    actions: dict[str, Action] = {code: action for code, action in cfg.data.checks.actions.items()}
    for f in raw:
        action = _action(actions, f.check)
        f = dataclasses.replace(f, severity=SEVERITY_OF_ACTION[action])
        out.append(f)
        key = f.record_id or f.source
        if key is None:
            continue
        if action == "fail":
            errors.setdefault(key, f)
        elif action == "drop":
            drops.setdefault(key, f)
    return out, errors, drops


def _unique_ids(records: list[Record], findings: list[Finding]) -> list[Record]:
    seen: dict[str, str] = {}
    out = []
    for r in records:
        if r.id in seen:
            findings.append(
                Finding(
                    "schema_error",
                    "error",
                    f"id {r.id!r} is also used by {seen[r.id]}; record ids must be unique across sources",
                    r.id + "@" + r.source,
                    r.source,
                    "id",
                )
            )
            continue
        seen[r.id] = r.source
        out.append(r)
    return out


def validate(
    cfg: Config, *, count_tokens: Callable[[Record], int] | None = None, progress: Progress | None = None
) -> Validation:
    dc = cfg.data
    # 1. Sources → canonical records + row-level findings.
    results = [read_source(s) for s in dc.sources]
    rows = sum(r.rows for r in results)
    raw: list[Finding] = [f for r in results for f in r.findings]
    records = _unique_ids([rec for r in results for rec in r.records], raw)

    # 2. Inspect every distinct image once (in parallel with data.workers).
    paths = sorted({p for r in records for p in r.images})
    limits = ImageLimits(
        min_side=dc.images.min_side, max_pixels=dc.images.max_pixels, max_aspect=dc.images.max_aspect
    )
    cb = (lambda done: progress("images", done, len(paths))) if progress else None
    if dc.engine == "ray":
        inspected = inspect_images_ray(paths, limits, progress=cb)
    else:
        inspected = inspect_images(paths, limits, workers=dc.workers, progress=cb)
    infos = dict(zip(paths, inspected, strict=True))

    # 3. Per-record checks.
    raw += images.check(records, infos, dc.images)
    raw += text.empty(records)
    pii_findings, records = text.pii(records, dc.checks.redact_pii)
    raw += pii_findings
    fatal = {
        f.record_id
        for f in raw
        if f.record_id
        and f.check
        in (
            "image_missing",
            "image_unreadable",
            "image_truncated",
            "image_format_unsupported",
            "image_too_large",
        )
    }
    usable = [r for r in records if r.id not in fatal]
    # Duplicates before the token budget: their worker pool then starts before a lazy token
    # counter loads the model's processor (threads from torch/tokenizers force spawn over fork).
    dup_findings, exact_links, near_links = duplicates.check(
        usable, infos, dc.checks.near_duplicate_distance, workers=dc.workers
    )
    if count_tokens is not None:
        raw += text.budget(usable, count_tokens, dc.max_seq_length)
    links = exact_links + near_links
    raw += dup_findings
    raw += labels.conflicts(usable, exact_links, near_links)

    findings, errors, drops = _apply(cfg, raw)
    kept = [r for r in records if r.id not in errors and r.id not in drops]

    # 4. Dataset-level: rare classes.
    imbalance, _, _ = _apply(cfg, labels.imbalance(kept, dc.checks.min_class_fraction))
    findings += imbalance

    # 5. Split, then check the split for leakage (groups, exact and near duplicates).
    kept_ids = {r.id for r in kept}
    kept_links = [(a, b) for a, b in links if a in kept_ids and b in kept_ids]
    splits = split_records(kept, dc.split, cfg.run.seed, kept_links) if kept else {s: [] for s in SPLITS}
    leaks, leak_errors, leak_drops = _apply(cfg, leakage.check(splits, links, group_key(dc.split)))
    findings += leaks
    errors.update(leak_errors)
    drops.update(leak_drops)
    splits = {
        s: [r for r in recs if r.id not in leak_errors and r.id not in leak_drops]
        for s, recs in splits.items()
    }

    # 6. Verdict and summary.
    by_id = {r.id: r for r in records}
    dropped = [
        {
            "record_id": f.record_id,
            "source": by_id[k].source if k in by_id else f.source,
            "field": f.field,
            "reason": f.check,
            "severity": "error" if k in errors else "warning",
        }
        for k, f in {**drops, **errors}.items()
    ]
    error_fraction = len(errors) / max(rows, 1)
    dataset_errors = [
        f for f in findings if f.record_id is None and f.source is None and f.severity == "error"
    ]
    failures = _failures(dc, rows, splits, errors, drops, error_fraction, dataset_errors)
    passed = not failures
    summary = _summary(cfg, results, rows, splits, findings, errors, drops, error_fraction, passed)
    summary["failures"] = failures
    log.info(
        "validated %d rows: %d kept, %d errors, %d dropped, passed=%s",
        rows,
        len(kept),
        len(errors),
        len(drops),
        passed,
    )
    return Validation(rows, splits, findings, dropped, infos, passed, summary, links, records)


RAY_BATCH = 64


def _ray_batch(batch: dict[str, Any], limits: ImageLimits) -> dict[str, Any]:
    """One Ray Data batch of paths -> their inspections (small: hashes, header facts), pickled."""
    import pickle

    from tuneline.data.images import inspect_image

    infos = [pickle.dumps(inspect_image(str(p), limits)) for p in batch["path"]]
    return {"index": batch["index"], "info": infos}


def inspect_images_ray(paths: list[str], limits: ImageLimits, progress: Callable | None = None) -> list:
    """``inspect_images`` as a Ray Data ``map_batches`` over the cluster that ``ray.init()`` joins
    (a local one, or ``RAY_ADDRESS`` / an ``address=`` given before); results in input order.
    The workers must read the same paths (a shared file system or mounted bucket)."""
    import pickle

    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(
            "data.engine: ray needs Ray Data, which is not installed: pip install 'tuneline[ray]' "
            "(or set data.engine: local)"
        ) from exc
    if not paths:
        return []
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    items = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])
    # Ray types ``fn`` as taking the batch alone, ignoring the keyword arguments fn_kwargs passes to it
    ds = items.map_batches(
        _ray_batch,  # type: ignore[arg-type]
        fn_kwargs={"limits": limits},
        batch_size=RAY_BATCH,
        batch_format="numpy",
    )
    out: list = [None] * len(paths)
    done = 0
    for batch in ds.iter_batches(batch_size=RAY_BATCH, batch_format="numpy"):
        for i, blob in zip(batch["index"], batch["info"], strict=True):
            out[int(i)] = pickle.loads(blob)
        done += len(batch["index"])
        if progress:
            progress(done)
    return out


def _failures(dc, rows, splits, errors, drops, error_fraction, dataset_errors) -> list[str]:
    """Why the dataset fails, one sentence each (empty when it passes)."""
    out = []
    reasons = Counter(f.check for f in [*errors.values(), *drops.values()])
    why = ", ".join(f"{code} {n}" for code, n in reasons.most_common())
    if rows and len(errors) >= rows:  # a threshold (even 100%) is no verdict when nothing passed
        out.append(f"every record failed its checks ({why}): there is nothing to train on")
    elif error_fraction > dc.checks.max_error_fraction:
        out.append(
            f"{len(errors)} of {rows} records have errors "
            f"({error_fraction:.1%} > data.checks.max_error_fraction={dc.checks.max_error_fraction:g})"
        )
    if dataset_errors:
        out.append("; ".join(f"[{f.check}] {f.message}" for f in dataset_errors))
    if not rows:
        out.append("no records: the data sources hold no rows")
    elif len(errors) >= rows:
        pass  # said above: every record failed
    elif not any(splits[s] for s in SPLITS):
        out.append(f"no records left after the checks: all {rows} were excluded ({why})")
    elif not splits["train"]:
        out.append("the train split is empty: change data.split or supply train records")
    return out


def _summary(cfg, results, rows, splits, findings, errors, drops, error_fraction, passed) -> dict[str, Any]:
    by_check: dict[str, dict[str, int]] = defaultdict(lambda: {"error": 0, "warning": 0, "info": 0})
    for f in findings:
        by_check[f.check][f.severity] += 1
    gkey = group_key(cfg.data.split)
    kept = [r for s in SPLITS for r in splits[s]]
    return {
        "records_in": rows,
        "records_out": len(kept),
        "dropped": len(drops),
        "errors": len(errors),
        "warnings": sum(1 for f in findings if f.severity == "warning"),
        "info": sum(1 for f in findings if f.severity == "info"),
        "error_fraction": error_fraction,
        "max_error_fraction": cfg.data.checks.max_error_fraction,
        "passed": passed,
        "by_check": {c: by_check[c] for c in CHECKS if c in by_check},
        "labels": dict(Counter(r.target for r in kept).most_common()),
        "splits": {
            s: {
                "records": len(splits[s]),
                "labels": dict(Counter(r.target for r in splits[s]).most_common()),
                "groups": len({gkey(r) for r in splits[s] if gkey(r) is not None}),
            }
            for s in SPLITS
        },
        "split_strategy": cfg.data.split.strategy,
        "sources": [
            {"type": s.type, "path": str(s.path), "rows": res.rows, "records": len(res.records)}
            for s, res in zip(cfg.data.sources, results, strict=True)
        ],
        "fingerprint": None,
    }


def write_report(validation: Validation, folder: Path, fingerprint: str | None = None) -> tuple[Path, Path]:
    """data_report.json and data_report.html (thumbnails of flagged records and their related ones)."""
    from tuneline.data.report_html import render_html

    report = validation.report()
    report["summary"]["fingerprint"] = fingerprint
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "data_report.json", folder / "data_report.html"
    atomic_write_json(json_path, report)
    wanted = {f.record_id for f in validation.findings if f.record_id} | {
        r for f in validation.findings for r in f.related
    }
    thumbnails = {}
    for rec in validation.all_records:
        if rec.id in wanted and rec.images:
            thumbnails[rec.id] = rec.images[0]
    render_html(report, thumbnails, html_path)
    return json_path, html_path
