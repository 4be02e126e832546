"""A/B traffic: sticky assignment of users to variants, the request/feedback log, and the report.

Assignment: ``sha256(salt + user)`` read as a number in [0, 100) picks the variant whose cumulative
percentage range holds it, so a user lands on the same variant on every request (and every replica)
for as long as the salt and the split stay the same. Requests without a user id are assigned by their
response id (random, not sticky).

Every answered request is written to a SQLite database (a writer thread, so requests never wait on
the disk): response id, variant, version, hashed user, status, latency, tokens. ``POST /v1/feedback``
adds an outcome (correct / incorrect), a score and/or a corrected label against a response id.
``tuneline serve report`` compares the variants with bootstrap confidence intervals.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuneline.stats import bootstrap_ci, two_sample_bootstrap

log = logging.getLogger("tuneline.serve")

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  id TEXT PRIMARY KEY, ts REAL, variant TEXT, version TEXT, user_hash TEXT, status INTEGER,
  latency_s REAL, ttft_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, cached INTEGER);
CREATE TABLE IF NOT EXISTS feedback (
  response_id TEXT, ts REAL, outcome TEXT, score REAL);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""

# Columns added later (tuneline loop): added to an older database on open, so old logs stay readable.
# prediction: the answer text; probs: JSON {label: probability} when the backend reports them; input_id:
# the content address of the kept inputs (serve.loop.keep_inputs); label: a corrected label from feedback.
ADDED_COLUMNS = {
    "responses": (("prediction", "TEXT"), ("probs", "TEXT"), ("input_id", "TEXT")),
    "feedback": (("label", "TEXT"),),
}


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns of ADDED_COLUMNS that an older database lacks (idempotent)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def bucket(salt: str, user: str) -> float:
    """The user's position in [0, 100): uniform over users, fixed for a salt."""
    digest = hashlib.sha256(f"{salt}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def assign(traffic: dict[str, float], salt: str, user: str) -> str:
    """The variant (alias) a user is sent to."""
    point = bucket(salt, user)
    upto = 0.0
    last = None
    for alias, percent in traffic.items():
        if percent <= 0:
            continue
        upto += percent
        last = alias
        if point < upto:
            return alias
    if last is None:  # ServeConfig requires percentages summing to 100
        raise ValueError(f"serve.traffic gives no alias any traffic: {traffic}")
    return last  # rounding at the top end


def user_hash(user: str | None) -> str | None:
    """What the log keeps of a user id: a short hash, never the id."""
    return None if not user else hashlib.sha256(user.encode()).hexdigest()[:16]


class Store:
    """The request and feedback log (SQLite, WAL). Writes go through a queue to one writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            migrate(db)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._writer, name="tuneline-ab-store", daemon=True)
        self._thread.start()

    def record(self, **row: Any) -> None:
        self._queue.put(("responses", row))

    def write(self, table: str, row: dict[str, Any]) -> None:
        """A row for another table of this database (e.g. request_costs), through the same writer."""
        self._queue.put((table, row))

    def feedback(
        self, response_id: str, outcome: str | None, score: float | None, label: str | None = None
    ) -> None:
        row = {"response_id": response_id, "ts": time.time(), "outcome": outcome, "score": score}
        self._queue.put(("feedback", row | ({"label": label} if label is not None else {})))

    def known(self, response_id: str) -> bool:
        self.flush()
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT 1 FROM responses WHERE id = ?", (response_id,)).fetchone() is not None

    def flush(self, timeout: float = 10.0) -> None:
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _writer(self) -> None:
        db = sqlite3.connect(self.path)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                while True:  # write what has queued up in one transaction
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = False
                flushes = []
                with db:
                    for entry in batch:
                        if entry is None:
                            stop = True
                            continue
                        table, row = entry
                        if table == "flush":
                            flushes.append(row)
                            continue
                        cols = ", ".join(row)
                        marks = ", ".join("?" for _ in row)
                        try:
                            db.execute(
                                f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})",
                                tuple(row.values()),
                            )
                        except sqlite3.Error:
                            log.exception("could not record a %s row", table)
                for ev in flushes:
                    ev.set()
                if stop:
                    return
        finally:
            db.close()


# ------------------------------------------------------------------ the report
def _ci(values: np.ndarray, stat, resamples: int, seed: int) -> tuple[float, float] | None:
    if values.size < 2:
        return None
    ci = bootstrap_ci(stat, values, n_resamples=resamples, seed=seed)
    return ci.low, ci.high


def _diff_ci(a: np.ndarray, b: np.ndarray, stat, resamples: int, seed: int) -> tuple[float, float] | None:
    if a.size < 2 or b.size < 2:
        return None
    ci = two_sample_bootstrap(stat, a, b, n_resamples=resamples, seed=seed)
    return ci.low, ci.high


def report(
    db_path: Path,
    *,
    resamples: int = 1000,
    seed: int = 0,
    since: float | None = None,
    baseline: str | None = None,
) -> dict:
    """Per-variant latency, error rate and feedback with 95% bootstrap CIs, and each variant against the
    baseline (default: champion, else the first seen): an interval of the difference that excludes 0 is a
    difference the data supports."""
    if not db_path.is_file():
        return {"variants": {}, "comparisons": {}, "database": str(db_path)}
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT r.variant, r.version, r.status, r.latency_s, r.cached, f.outcome, f.score "
            "FROM responses r LEFT JOIN "
            "(SELECT response_id, MAX(ts) ts, outcome, score FROM feedback GROUP BY response_id) f "
            "ON f.response_id = r.id WHERE r.ts >= ? AND r.variant IS NOT NULL ORDER BY r.ts",
            (since or 0.0,),
        ).fetchall()
    by: dict[str, dict[str, Any]] = {}  # variant -> versions (set), n (int), per-request value lists
    for variant, version, status, latency, cached, outcome, score in rows:
        d = by.setdefault(
            variant, {"versions": set(), "error": [], "latency": [], "correct": [], "score": [], "n": 0}
        )
        d["n"] += 1
        d["versions"].add(version)
        d["error"].append(1.0 if status >= 500 else 0.0)
        if status < 400 and latency is not None and not cached:
            d["latency"].append(latency)
        if outcome in ("correct", "incorrect"):
            d["correct"].append(1.0 if outcome == "correct" else 0.0)
        if score is not None:
            d["score"].append(float(score))

    def p50(x: np.ndarray) -> float:
        return float(np.median(x))

    def p95(x: np.ndarray) -> float:
        return float(np.percentile(x, 95))

    stats: dict[str, tuple[str, Callable[[np.ndarray], Any]]] = {
        "latency_p50_s": ("latency", p50),
        "latency_p95_s": ("latency", p95),
        "error_rate": ("error", np.mean),
        "accuracy": ("correct", np.mean),
        "mean_score": ("score", np.mean),
    }
    variants: dict[str, Any] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for variant, d in by.items():
        arrays[variant] = {
            k: np.asarray(d[k], dtype=np.float64) for k in ("error", "latency", "correct", "score")
        }
        entry: dict[str, Any] = {
            "requests": d["n"],
            "versions": sorted(v for v in d["versions"] if v),
            "feedback": len(d["correct"]) + len(d["score"]),
        }
        for name, (key, fn) in stats.items():
            values = arrays[variant][key]
            entry[name] = {
                "value": float(fn(values)) if values.size else None,
                "ci95": _ci(values, fn, resamples, seed),
                "n": int(values.size),
            }
        variants[variant] = entry
    comparisons: dict[str, Any] = {}
    names = list(variants)
    if len(names) > 1:
        base = baseline if baseline in variants else "champion" if "champion" in variants else names[0]
        for other in (n for n in names if n != base):
            comparisons[f"{other} - {base}"] = {
                name: _diff_ci(arrays[base][key], arrays[other][key], fn, resamples, seed)
                for name, (key, fn) in stats.items()
            }
    return {"database": str(db_path), "variants": variants, "comparisons": comparisons}
