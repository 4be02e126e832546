"""Keeps the served variants in step with the registry aliases: promote and rollback without downtime.

A background thread polls each alias of ``serve.traffic`` every ``serve.watch.interval_s``. When an
alias points at another version, the version is downloaded and loaded beside the old one (the old one
keeps serving meanwhile); then the routing table is replaced in one assignment. Requests already routed
finish on the old version, which is unloaded when its last request is done. A version that fails to
download or load leaves the old one serving; the failure is logged and counted
(``tuneline:model_load_failures_total``, ``tuneline:model_load_failed``), and that version is not
retried until the alias moves again.

Canary without a config edit: ``tuneline loop`` tags the challenger's version with its traffic share
(``tuneline.canary_weight``, percent). When the version an alias serves carries that tag, the server's
A/B split gives the alias that share and the other aliases of ``serve.traffic`` the rest, in their
configured proportions (:func:`canary_traffic`); when the tag goes (promote, rollback: the alias moves
to an untagged version, or the tag is deleted) the configured split is back. Applied only once the
tagged version is loaded, so the share never goes to the version it replaces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tuneline.serving.engine import Variant
from tuneline.serving.metrics import Metrics
from tuneline.serving.sources import RegistrySource

log = logging.getLogger("tuneline.serve")

CANARY_WEIGHT_TAG = "tuneline.canary_weight"


def canary_weight(tags: dict[str, str]) -> float | None:
    """The canary share (percent) a version's tags ask for; None without one, or when it is unusable."""
    raw = tags.get(CANARY_WEIGHT_TAG)
    if raw is None:
        return None
    try:
        w = float(raw)
    except ValueError:
        w = -1.0
    if not 0.0 <= w <= 100.0:
        log.warning("ignoring %s=%r: not a percentage in [0, 100]", CANARY_WEIGHT_TAG, raw)
        return None
    return w


def canary_traffic(traffic: dict[str, float], alias: str, weight: float | None) -> dict[str, float]:
    """``traffic`` with ``alias`` at ``weight`` percent and the other aliases sharing the rest in their
    configured proportions (evenly when none had any); unchanged when there is no weight, the alias is
    not in ``traffic``, or it is the only alias. Order is kept (sticky assignment walks it)."""
    if weight is None or alias not in traffic or len(traffic) < 2:
        return dict(traffic)
    others = {a: p for a, p in traffic.items() if a != alias}
    total, rest = sum(others.values()), 100.0 - weight
    return {
        a: weight if a == alias else (rest * others[a] / total if total > 0 else rest / len(others))
        for a in traffic
    }


class Routes:
    """alias -> Variant, replaced as a whole (readers see the old table or the new one, never a mix)."""

    def __init__(self, aliases: list[str]) -> None:
        self.aliases = aliases
        self.table: dict[str, Variant] = {}

    @property
    def ready(self) -> bool:
        return all(a in self.table for a in self.aliases)

    def get(self, alias: str) -> Variant | None:
        return self.table.get(alias)

    def swap(self, alias: str, variant: Variant) -> Variant | None:
        table = dict(self.table)
        old = table.get(alias)
        table[alias] = variant
        self.table = table  # one assignment: atomic for readers
        return old


class Watcher:
    def __init__(
        self,
        source: RegistrySource,
        load: Callable,
        routes: Routes,
        metrics: Metrics,
        interval_s: float,
        on_swap: Callable[[str, Variant], None] | None = None,
        on_weight: Callable[[str, float | None], None] | None = None,
    ) -> None:
        self.source = source
        self.load = load
        self.routes = routes
        self.metrics = metrics
        self.interval_s = interval_s
        self.on_swap = on_swap
        self.on_weight = on_weight
        self.weights: dict[str, float | None] = {}  # alias -> the canary share its served version asks for
        self.failed: dict[str, str] = {}  # alias -> version that failed to load
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """One pass over the aliases (also the initial load)."""
        for alias in self.routes.aliases:
            if self._stop.is_set():
                return
            try:
                ref = self.source.resolve(alias)
            except Exception as exc:  # noqa: BLE001 - the registry may be down: keep serving
                self.metrics.registry_errors.inc()
                self.errors[alias] = str(exc)
                log.warning("could not resolve %s@%s: %s", self.source.model_name, alias, exc)
                continue
            current = self.routes.get(alias)
            if current is not None and current.ref.version == ref.version:
                self._weigh(alias, ref.tags)  # a tag set or removed on the version already served
                continue
            if self.failed.get(alias) == ref.version:
                continue
            try:
                path = self.source.download(ref)
                variant = self.load(ref, path)
            except Exception as exc:  # noqa: BLE001 - any failure: the old version keeps serving
                self.failed[alias] = ref.version
                self.errors[alias] = f"version {ref.version}: {exc}"
                self.metrics.load_failures.labels(alias).inc()
                self.metrics.load_failed.labels(alias).set(1)
                kept = f"version {current.ref.version} keeps serving" if current else "nothing is served yet"
                log.error(
                    "could not load %s version %s for %s (%s); %s",
                    ref.name,
                    ref.version,
                    alias,
                    exc,
                    kept,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                continue
            self.failed.pop(alias, None)
            self.errors.pop(alias, None)
            old = self.routes.swap(alias, variant)
            self.metrics.load_failed.labels(alias).set(0)
            self.metrics.model_version.labels(alias).set(float(ref.version))
            self.metrics.model_swaps.labels(alias).inc()
            if self.on_swap:
                self.on_swap(alias, variant)
            self._weigh(alias, ref.tags)
            if old is not None:
                log.info("%s: version %s -> %s", alias, old.ref.version, ref.version)
                old.retire()
            else:
                log.info("%s: serving version %s", alias, ref.version)

    def _weigh(self, alias: str, tags: dict[str, str]) -> None:
        w = canary_weight(tags)
        if self.weights.get(alias) != w:
            self.weights[alias] = w
            if self.on_weight:
                self.on_weight(alias, w)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tuneline-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.poll()
        while self.interval_s > 0 and not self._stop.wait(self.interval_s):
            self.poll()
        while not self.routes.ready and not self._stop.wait(5.0):  # watching off: still finish loading
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
