"""Collect: the candidate pool of production requests, from the A/B log and the kept inputs.

    tuneline loop collect CONFIG [--since TIMESTAMP]

Reads ``serve.state_dir/ab.sqlite`` (responses joined with their newest feedback) and the inputs the
server kept (``serve.loop.keep_inputs``, opt-in): each candidate has its images and text, the served
prediction, the variant and version, any feedback, and a labelled correction when feedback carried
``label``. Class probabilities: the served variant's come from the log (the server records them at
serve time when ``keep_inputs`` is on and the model has class labels: the version that answered, not
whichever holds the alias now); every alias still missing (the other of champion/challenger, or an
old log without them) is scored here by the current champion and challenger (label log-probabilities,
evaluation/classify.py), which also gives the disagreement strategy both models' answers. Each
candidate says which: ``probs_source[alias]`` is ``served`` or ``rescored``. Written to
``<round>/pool.jsonl``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneline.config import Config
from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.runs import atomic_write_text

log = logging.getLogger("tuneline.loop")


@dataclass
class Candidate:
    id: str  # the response id (chatcmpl-...)
    ts: float
    variant: str
    version: str | None
    prediction: str | None
    input_id: str
    images: list[str]  # absolute paths of the kept images
    texts: list[str]  # the user's text parts (PII redacted when kept)
    outcome: str | None = None
    label: str | None = None  # a corrected label from /v1/feedback
    probs: dict[str, dict[str, float]] = field(default_factory=dict)  # alias -> {label: probability}
    probs_source: dict[str, str] = field(default_factory=dict)  # alias -> served | rescored

    def record(self, label: str | None = None) -> Record:
        """The candidate as a canonical record: the user turn, answered by ``label`` (empty when None)."""
        content: list[dict[str, Any]] = [{"type": "image", "path": p} for p in self.images]
        content += [{"type": "text", "text": t} for t in self.texts]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        # unlabelled: an empty answer, so that prompt_messages (what scoring reads) is the user turn
        messages.append({"role": "assistant", "content": [{"type": "text", "text": label or ""}]})
        meta = {"loop_response_id": self.id, "loop_variant": self.variant, "loop_version": self.version}
        return Record(
            id=f"prod-{self.id}",
            messages=messages,
            source=f"production:{self.id}",
            metadata=meta,
            label=label,
        )


def read_log(serve_state: Path, since: float = 0.0) -> list[Candidate]:
    """Answered requests with kept inputs, newer than ``since``, oldest first."""
    db_path = serve_state / "ab.sqlite"
    if not db_path.is_file():
        raise DataError(
            f"no serving log at {db_path}",
            hint="serve traffic first (tuneline serve CONFIG), same serve.state_dir",
        )
    with sqlite3.connect(db_path) as db:
        from tuneline.serving.ab import migrate

        migrate(db)  # an older log: the loop's columns read as empty
        rows = db.execute(
            "SELECT r.id, r.ts, r.variant, r.version, r.prediction, r.probs, r.input_id, f.outcome, f.label "
            "FROM responses r LEFT JOIN (SELECT response_id, outcome, label, MAX(ts) ts FROM feedback "
            "GROUP BY response_id) f ON f.response_id = r.id "
            "WHERE r.ts > ? AND r.status = 200 AND r.input_id IS NOT NULL ORDER BY r.ts",
            (since,),
        ).fetchall()
        labels = dict(
            db.execute(
                "SELECT response_id, label FROM feedback WHERE label IS NOT NULL ORDER BY ts"
            ).fetchall()
        )
    inputs = serve_state / "inputs"
    out: list[Candidate] = []
    missing = 0
    for rid, ts, variant, version, prediction, probs, input_id, outcome, label in rows:
        path = inputs / "requests" / f"{input_id}.json"
        if not path.is_file():
            missing += 1  # past its retention, or still being written
            continue
        kept = json.loads(path.read_text())
        cand = Candidate(
            id=rid,
            ts=ts,
            variant=variant,
            version=version,
            prediction=prediction,
            input_id=input_id,
            images=[str(inputs / p) for p in kept["images"]],
            texts=list(kept["texts"]),
            outcome=outcome,
            label=label or labels.get(rid),
        )
        if probs:
            cand.probs[variant] = json.loads(probs)
            cand.probs_source[variant] = "served"
        out.append(cand)
    if missing:
        log.warning("%d logged requests have no kept inputs (retention, or keep_inputs was off)", missing)
    return out


def write_pool(path: Path, pool: list[Candidate]) -> None:
    atomic_write_text(path, "".join(json.dumps(asdict(c), sort_keys=True) + "\n" for c in pool))


def read_pool(path: Path) -> list[Candidate]:
    if not path.is_file():
        raise DataError(f"no candidate pool at {path}", hint="run `tuneline loop collect CONFIG` first")
    return [Candidate(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def score(cfg: Config, pool: list[Candidate], labels: list[str], aliases: tuple[str, ...]) -> None:
    """Fill each candidate's class probabilities for every alias that exists (in place)."""
    from tuneline.evaluation.classify import score_labels
    from tuneline.registry import resolve, store
    from tuneline.training.collate import ChatCollator

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    client = store.client(uri)
    for alias in aliases:
        todo = [c for c in pool if alias not in c.probs]
        if not todo:
            continue
        try:
            model, processor = resolve.load(f"{cfg.model_name}@{alias}", uri, client=client)
        except Exception as exc:  # noqa: BLE001 - no challenger yet: the champion's scores suffice
            log.info("no %s to score the pool with (%s)", alias, exc)
            continue
        log.info("re-scoring %d candidates with the current %s (no served probabilities)", len(todo), alias)
        collator = ChatCollator(processor, cfg.data.max_seq_length)
        s = score_labels(model, collator, [c.record() for c in todo], labels, batch_size=cfg.eval.batch_size)
        for c, row in zip(todo, s.probabilities, strict=True):
            c.probs[alias] = {lab: float(p) for lab, p in zip(labels, row, strict=True)}
            c.probs_source[alias] = "rescored"


def collect(
    cfg: Config, out: Path, since: float | None = None, labels: list[str] | None = None
) -> list[Candidate]:
    """The pool since ``since`` (a Unix time; default loop.since_hours, else everything), scored."""
    if since is None:
        since = time.time() - cfg.loop.since_hours * 3600 if cfg.loop.since_hours else 0.0
    pool = read_log(Path(cfg.serve.state_dir), since)
    if pool and labels:
        score(cfg, pool, labels, ("champion", "challenger"))
    write_pool(out, pool)
    log.info("collected %d candidates into %s", len(pool), out)
    return pool
