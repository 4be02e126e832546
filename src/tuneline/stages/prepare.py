"""prepare: read the chat JSONL, split it deterministically, fingerprint it, write data/.

tuneline prepare CONFIG
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tuneline.config import Config
from tuneline.data.fingerprint import fingerprint
from tuneline.data.records import write_records
from tuneline.data.sources.jsonl import read_jsonl
from tuneline.data.split import SPLITS, split_records
from tuneline.runs import RunDir, atomic_dir, atomic_write_json

log = logging.getLogger("tuneline.prepare")


@dataclass(frozen=True)
class PreparedData:
    counts: dict[str, int]
    fingerprint: str


def run(cfg: Config, run: RunDir) -> PreparedData:
    # 1. Read every record; any bad line stops here with file:line and what to fix.
    records = read_jsonl(cfg.data.path)
    log.info("read %d records from %s", len(records), cfg.data.path)

    # 2. Split deterministically for the seed.
    splits = split_records(records, cfg.data.split, cfg.run.seed)
    counts = {name: len(splits[name]) for name in SPLITS}

    # 3. Fingerprint records + image bytes + split settings.
    settings = {"split": cfg.data.split.model_dump(), "seed": cfg.run.seed, "source": "jsonl"}
    fp = fingerprint(splits, settings)

    # 4. Write data/ in one rename: split files and the manifest.
    with atomic_dir(run.data_dir) as tmp:
        for name in SPLITS:
            write_records(tmp / f"{name}.jsonl", splits[name])
        atomic_write_json(
            tmp / "manifest.json",
            {
                "source": str(cfg.data.path),
                "counts": counts,
                "fingerprint": fp,
                "settings": settings,
            },
        )

    run.update_provenance(data={"fingerprint": fp, "source": str(cfg.data.path), "counts": counts})
    run.update_summary(data={"counts": counts, "fingerprint": fp})
    log.info("prepared %s, fingerprint %s", counts, fp[:12])
    return PreparedData(counts=counts, fingerprint=fp)
