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
