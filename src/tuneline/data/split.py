"""Deterministic train/val/test splits: random, stratified, stratified_group, or predefined.

Records linked as duplicates always travel together, and with ``stratified_group`` so do records
of one group (e.g. a patient): these are the units that are assigned. Units are placed largest
first (ties in a seeded random order) into the split where they bring the per-label counts and
the split sizes closest to their targets. scikit-learn's StratifiedGroupKFold does this for k
equal folds only; splits of unequal fractions need our own assignment.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from tuneline.config.schema import SplitConfig
from tuneline.data.records import Record
from tuneline.errors import DataError

SPLITS = ("train", "val", "test")


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # deterministic root


def group_key(cfg: SplitConfig):
    def key(rec: Record) -> str | None:
        if cfg.group_by is not None:
            value = rec.metadata.get(cfg.group_by)
            return None if value in (None, "") else str(value)
        return rec.group

    return key


def stratum_key(cfg: SplitConfig):
    def key(rec: Record) -> str:
        return str(rec.metadata.get(cfg.stratify_by)) if cfg.stratify_by else rec.target

    return key


def split_records(
    records: list[Record], cfg: SplitConfig, seed: int, links: Sequence[tuple[str, str]] = ()
) -> dict[str, list[Record]]:
    if cfg.strategy == "predefined":
        return _predefined(records, cfg)
    fractions = {"train": cfg.train, "val": cfg.val, "test": cfg.test}
    uf = UnionFind()
    for rec in records:
        uf.find(rec.id)
    ids = {r.id for r in records}
    for a, b in links:
        if a in ids and b in ids:
            uf.union(a, b)
    if cfg.strategy == "stratified_group":
        gkey = group_key(cfg)
        first_of_group: dict[str, str] = {}
        for rec in records:
            g = gkey(rec)
            if g is not None:
                uf.union(first_of_group.setdefault(g, rec.id), rec.id)
    units: dict[str, list[Record]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: r.id):
        units[uf.find(rec.id)].append(rec)
    order = sorted(units)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda u: -len(units[u]))  # stable: ties keep the seeded order

    skey = stratum_key(cfg) if cfg.strategy != "random" else (lambda r: "")
    totals = Counter(skey(r) for r in records)
    n = len(records)
    target = {s: {label: fractions[s] * c for label, c in totals.items()} for s in SPLITS}
    size_target = {s: fractions[s] * n for s in SPLITS}
    have: dict[str, Counter] = {s: Counter() for s in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}

    def cost(s: str, unit: Counter, k: int) -> float:
        # Squared shortfall/excess of each label (relative to its total) and of the split size.
        c = sum(
            (
                (have[s][label] + unit[label] - target[s][label]) ** 2
                - (have[s][label] - target[s][label]) ** 2
            )
            / max(totals[label], 1) ** 2
            for label in unit
        )
        return c + ((size[s] + k - size_target[s]) ** 2 - (size[s] - size_target[s]) ** 2) / max(n, 1) ** 2

    for u in order:
        members = units[u]
        unit = Counter(skey(r) for r in members)
        candidates = [s for s in SPLITS if fractions[s] > 0]
        best = min(candidates, key=lambda s: (cost(s, unit, len(members)), SPLITS.index(s)))
        out[best].extend(members)
        have[best].update(unit)
        size[best] += len(members)
    # Few, large units can leave a split empty: give it train's smallest unit while train keeps one.
    split_of = {r.id: s for s in SPLITS for r in out[s]}
    placed = {s: [u for u in order if split_of[units[u][0].id] == s] for s in SPLITS}
    for s in ("test", "val"):
        if fractions[s] > 0 and not out[s] and len(placed["train"]) > 1:
            u = min(placed["train"], key=lambda x: (len(units[x]), x))
            placed["train"].remove(u)
            moved = {r.id for r in units[u]}
            out["train"] = [r for r in out["train"] if r.id not in moved]
            out[s] = list(units[u])
    for s in SPLITS:
        out[s].sort(key=lambda r: r.id)
    if not out["train"] or not out["test"]:
        raise DataError(
            f"{n} record(s) in {len(units)} unit(s) are too few for the split "
            f"{cfg.train}/{cfg.val}/{cfg.test}",
            hint="add data or change data.split",
        )
    return out


def _predefined(records: list[Record], cfg: SplitConfig) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    missing = [r for r in records if r.metadata.get(cfg.column) not in SPLITS]
    if missing:
        r = missing[0]
        raise DataError(
            f"{len(missing)} record(s) have no valid {cfg.column!r} for strategy predefined, first "
            f"{r.id} ({r.source}): {r.metadata.get(cfg.column)!r}",
            hint=f"give every record a {cfg.column} of train, val or test, or use another strategy",
        )
    for r in records:
        out[r.metadata[cfg.column]].append(r)
    return out


def proportions(splits: dict[str, list[Record]], key) -> dict[str, dict[str, float]]:
    out = {}
    for s, recs in splits.items():
        counts = Counter(key(r) for r in recs)
        out[s] = {label: c / max(len(recs), 1) for label, c in counts.items()}
    return out
