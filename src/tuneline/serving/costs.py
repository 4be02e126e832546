"""What each request costs, and the daily budget that changes the cascade's routing when crossed.

Prices come from ``serve.costs``: a local variant's request costs its busy time (generation time divided
by the requests that shared its batch) at ``count x price_per_hour``; a remote fallback's request costs
its prompt and completion tokens at ``input_per_1k`` / ``output_per_1k``. Every cost is added to the
Prometheus counter ``tuneline:cost_total{variant}`` and to the spend of the current UTC day.

``serve.budget.per_day``: once today's spend reaches it, :meth:`Budget.fallback_threshold` returns the
stricter bar (``strict``: the lower of the threshold and ``strict_threshold``) or ``None`` (``small_only``:
no fallback), and ``tuneline:budget_exceeded`` reads 1 until the day turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def local_cost(busy_s: float, price_per_hour: float, count: int = 1) -> float:
    """Accelerator cost of ``busy_s`` seconds on ``count`` accelerators."""
    return max(busy_s, 0.0) / 3600.0 * price_per_hour * count


def token_cost(
    prompt_tokens: int, completion_tokens: int, input_per_1k: float, output_per_1k: float
) -> float:
    """A remote call's cost from its token counts."""
    return prompt_tokens / 1000.0 * input_per_1k + completion_tokens / 1000.0 * output_per_1k


def utc_day(ts: float) -> int:
    return int(ts // 86400)


class Budget:
    """Spend per UTC day against ``per_day`` (None: no budget); thread-safe, injectable clock."""

    def __init__(
        self,
        per_day: float | None,
        action: str = "strict",
        strict_threshold: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_day = per_day
        self.action = action
        self.strict_threshold = strict_threshold
        self.clock = clock
        self._day = utc_day(clock())
        self.spent = 0.0
        self._lock = threading.Lock()

    def _roll(self) -> None:
        day = utc_day(self.clock())
        if day != self._day:
            self._day, self.spent = day, 0.0

    def add(self, cost: float) -> None:
        with self._lock:
            self._roll()
            self.spent += cost

    def today(self) -> float:
        with self._lock:
            self._roll()
            return self.spent

    @property
    def exceeded(self) -> bool:
        return self.per_day is not None and self.today() >= self.per_day

    def fallback_threshold(self, threshold: float) -> float | None:
        """The confidence below which a request falls back now: ``threshold`` within budget; over it, the
        stricter bar (strict) or None (small_only: never)."""
        if not self.exceeded:
            return threshold
        if self.action == "small_only":
            return None
        return min(threshold, self.strict_threshold)


# ------------------------------------------------------------------ the server's cost book
COSTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS request_costs (
  response_id TEXT PRIMARY KEY, ts REAL, variant TEXT, route TEXT, cost REAL, small_cost REAL,
  fallback_cost REAL, confidence REAL, degraded TEXT);
"""


class CostTracker:
    """Prices each answered request, counts it (``tuneline:cost_total{variant}``), adds it to today's
    spend (``tuneline:spend_today``, ``tuneline:budget_exceeded``) and writes one ``request_costs`` row
    into the A/B database (read by ``tuneline serve report``)."""

    def __init__(self, serve_cfg, metrics, store) -> None:
        from prometheus_client import Gauge

        self.prices = serve_cfg.costs
        b = serve_cfg.budget
        self.budget = Budget(b.per_day, b.action, b.strict_threshold)
        self.metrics = metrics
        self.store = store
        if store is not None:
            import sqlite3

            with sqlite3.connect(store.path) as db:
                db.executescript(COSTS_SCHEMA)
        r = metrics.registry
        self.spend_today = Gauge(
            "tuneline:spend_today", "Spend since 00:00 UTC (serve.costs units).", registry=r
        )
        self.budget_limit = Gauge(
            "tuneline:budget_per_day", "serve.budget.per_day (0: no budget).", registry=r
        )
        self.exceeded = Gauge(
            "tuneline:budget_exceeded",
            "1 while today's spend is at or above serve.budget.per_day (the cascade then falls back less).",
            registry=r,
        )
        self.budget_limit.set(b.per_day or 0.0)
        # read at scrape time, so a new UTC day shows without waiting for the next request
        self.spend_today.set_function(self.budget.today)
        self.exceeded.set_function(lambda: 1.0 if self.budget.exceeded else 0.0)

    def local(self, busy_s: float) -> float:
        return local_cost(busy_s, self.prices.price_per_hour, self.prices.count)

    def remote(self, prompt_tokens: int, completion_tokens: int) -> float:
        return token_cost(
            prompt_tokens, completion_tokens, self.prices.input_per_1k, self.prices.output_per_1k
        )

    def spend(self, variant: str, cost: float) -> None:
        self.metrics.cost.labels(variant).inc(cost)
        self.budget.add(cost)

    def log(self, response_id: str, variant: str, route: str, small: float, fallback: float, **extra) -> None:
        if self.store is None:
            return
        row = {
            "response_id": response_id,
            "ts": time.time(),
            "variant": variant,
            "route": route,
            "cost": small + fallback,
            "small_cost": small,
            "fallback_cost": fallback,
            "confidence": extra.get("confidence"),
            "degraded": extra.get("degraded"),
        }
        self.store.write("request_costs", row)

    def finished(self, call, status: int, latency_s: float, fields: dict) -> None:
        """A request answered outside the cascade: its variant's busy time at the accelerator price."""
        if getattr(call, "cascaded", False) or call.alias is None or status >= 400:
            return
        busy = 0.0 if fields.get("cached") else latency_s / max(int(fields.get("batch_size") or 1), 1)
        cost = self.local(busy)
        self.spend(call.alias, cost)
        self.log(call.rid, call.alias, "direct", cost, 0.0)


def report(db_path, since: float | None = None) -> dict:
    """Per variant (the one a request was routed to first): requests priced, cost per 1,000, the share the
    cascade sent to the fallback, degraded answers, and accuracy by route where feedback exists."""
    import sqlite3
    from pathlib import Path

    path = Path(db_path)
    if not path.is_file():
        return {}
    with sqlite3.connect(path) as db:
        has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'request_costs'").fetchone()
        if not has:
            return {}
        rows = db.execute(
            "SELECT c.variant, c.route, c.cost, c.degraded, f.outcome FROM request_costs c LEFT JOIN "
            "(SELECT response_id, MAX(ts) ts, outcome FROM feedback GROUP BY response_id) f "
            "ON f.response_id = c.response_id WHERE c.ts >= ?",
            (since or 0.0,),
        ).fetchall()
    by: dict[str, dict] = {}
    for variant, route, cost, degraded, outcome in rows:
        d = by.setdefault(
            variant, {"n": 0, "cost": 0.0, "cascade": 0, "fallback": 0, "degraded": 0, "acc": {}}
        )
        d["n"] += 1
        d["cost"] += cost or 0.0
        if route in ("small", "fallback"):
            d["cascade"] += 1
            d["fallback"] += route == "fallback"
            d["degraded"] += bool(degraded)
        if outcome in ("correct", "incorrect"):
            d["acc"].setdefault(route, []).append(outcome == "correct")
    out = {}
    for variant, d in by.items():
        out[variant] = {
            "requests": d["n"],
            "cost_total": d["cost"],
            "cost_per_1k": d["cost"] / d["n"] * 1000 if d["n"] else None,
            "cascade_requests": d["cascade"],
            "share_fallback": d["fallback"] / d["cascade"] if d["cascade"] else None,
            "degraded": d["degraded"],
            "accuracy_by_route": {
                r: {"accuracy": sum(v) / len(v), "n": len(v)} for r, v in sorted(d["acc"].items())
            },
        }
    return out
