"""prepare: validate the data, split it, and write (or reuse) its snapshot; the run reads only that.

    tuneline prepare CONFIG            (as a stage of a run)
    tuneline data validate CONFIG      (checks and reports only)
    tuneline data prepare CONFIG       (checks, reports and the snapshot, no run)

Reports (data_report.json / .html) are written whatever the verdict: they say what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneline.config import Config
from tuneline.data import forget, snapshot
from tuneline.data.records import Record, write_records
from tuneline.data.split import SPLITS
from tuneline.data.validate import Validation, validate, write_report
from tuneline.errors import DataError
from tuneline.evaluation import audit
from tuneline.progress import phases
from tuneline.runs import RunDir, atomic_dir, atomic_write_json, workspace

log = logging.getLogger("tuneline.prepare")


@dataclass(frozen=True)
class PreparedData:
    counts: dict[str, int]
    fingerprint: str
    snapshot: str
    reused: bool


class _TokenCounter:
    """The model processor's token counter, loaded on the first record it counts.

    Token budgets count the model's image tokens, so they need its processor, which imports
    transformers and torch (seconds, and threads). Loading it after the image work lets the image
    and duplicate pools fork from a single-threaded process instead of spawning."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.count: Callable[[Record], int] | None = None

    def __call__(self, record: Record) -> int:
        if self.count is None:
            from tuneline.models.load import load_processor, resolve_base

            self.count = load_processor(resolve_base(self.cfg.model)).token_counter()
        return self.count(record)


def check(cfg: Config, report_dir: Path) -> tuple[Validation, Path, Path]:
    """Validate every source and the split; write the reports into ``report_dir``."""
    with phases() as progress:
        result = validate(cfg, count_tokens=_TokenCounter(cfg), progress=progress)
    result = forget.applied(cfg, result)  # records forgotten with `tuneline data forget` stay out
    fp = snapshot.fingerprint(cfg, result.splits, result.infos) if result.passed else None
    report_json, report_html = write_report(result, report_dir, fp)
    return result, report_json, report_html


def build_snapshot(cfg: Config, report_dir: Path) -> tuple[Validation, snapshot.Snapshot]:
    """check(), then raise if validation failed, else write or reuse the snapshot."""
    result, report_json, report_html = check(cfg, report_dir)
    s = result.summary
    if not result.passed:
        errors = [f for f in result.findings if f.severity == "error"]
        shown = "".join(f"\n  {f.source or '(dataset)'}: [{f.check}] {f.message}" for f in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(
            f"data validation failed: {'; '.join(s['failures'])}{':' if shown else ''}{shown}{more}",
            hint=f"see {report_html}; fix the data, or change data.checks.actions / max_error_fraction",
        )
    with phases() as progress:
        snap = snapshot.build(
            cfg,
            result.splits,
            result.infos,
            root=workspace() / "datasets",
            extra_files={"data_report.json": report_json, "data_report.html": report_html},
            progress=lambda done, total: progress("snapshot images", done, total),
        )
    log.info("snapshot %s (%s)", snap.path, "reused" if snap.reused else "new")
    return result, snap


def run(cfg: Config, run: RunDir) -> PreparedData:
    # 1. Validate, report into the run directory, snapshot (reused when nothing changed).
    result, snap = build_snapshot(cfg, run.path)
    s = result.summary

    # 2. The run's view of the data: split files read back from the snapshot.
    with atomic_dir(run.data_dir) as tmp:
        for name in SPLITS:
            write_records(tmp / f"{name}.jsonl", snap.records(name))
        if cfg.eval.audit.canaries:  # training only, beside the split files (evaluation/audit.py)
            audit.plant(tmp, cfg.eval.audit.canaries, cfg.eval.audit.digits, cfg.run.seed)
        atomic_write_json(
            tmp / "manifest.json",
            {
                "snapshot": str(snap.path),
                "fingerprint": snap.fingerprint,
                "counts": snap.counts,
                "reused": snap.reused,
                "summary": s,
            },
        )

    run.update_provenance(
        data={
            "fingerprint": snap.fingerprint,
            "snapshot": str(snap.path),
            "counts": snap.counts,
            "sources": s["sources"],
        }
    )
    run.update_summary(
        data={
            "counts": snap.counts,
            "fingerprint": snap.fingerprint,
            "snapshot": str(snap.path),
            "canaries": cfg.eval.audit.canaries,
            "validation": {
                k: s[k] for k in ("records_in", "records_out", "errors", "dropped", "warnings", "passed")
            },
        }
    )
    return PreparedData(snap.counts, snap.fingerprint, str(snap.path), snap.reused)
