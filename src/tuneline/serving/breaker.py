"""A circuit breaker on the cascade's fallback: closed -> open after repeated failures -> half-open -> closed.

Closed: every call goes through; ``failures`` consecutive failures open the circuit. Open: no call goes
through (the small model answers, flagged ``circuit_open``) until ``reset_s`` have passed. Half-open: one
trial call goes through; its success closes the circuit, its failure opens it again for ``reset_s``.
Thread-safe; the clock is injectable so tests need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False  # a half-open trial call is in flight
        self._lock = threading.Lock()
        self.on_change: Callable[[str], None] | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.reset_s else OPEN

    def allow(self) -> bool:
        """May a call go to the fallback now? In half-open, only one trial at a time."""
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            changed = self.opened_at is not None
            self.failures, self.opened_at, self._trial = 0, None, False
        if changed and self.on_change:
            self.on_change(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            was_trial, self._trial = self._trial, False
            opens = was_trial or (self.opened_at is None and self.failures >= self.threshold)
            if opens:
                self.opened_at = self.clock()
        if opens and self.on_change:
            self.on_change(OPEN)
