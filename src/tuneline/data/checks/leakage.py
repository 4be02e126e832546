"""Split leakage: a group, an exact or a near duplicate on both sides of a split.

Checked on every split, the user's own included. The copy in the later split (val after train,
test after both) is the one flagged, so the evaluation side is what gets cleaned.
"""

from __future__ import annotations

from collections import defaultdict

from tuneline.data.findings import Finding
from tuneline.data.records import Record

ORDER = {"train": 0, "val": 1, "test": 2}


def check(splits: dict[str, list[Record]], links: list[tuple[str, str]], group_of) -> list[Finding]:
    where = {r.id: (name, r) for name, recs in splits.items() for r in recs}
    flagged: dict[str, set[str]] = defaultdict(set)
    why: dict[str, str] = {}
    groups: dict[str, list[tuple[str, Record]]] = defaultdict(list)
    for name, recs in splits.items():
        for r in recs:
            g = group_of(r)
            if g is not None:
                groups[g].append((name, r))
    for g, members in groups.items():
        first = min(ORDER[n] for n, _ in members)
        earlier = [r.id for n, r in members if ORDER[n] == first]
        for n, r in members:
            if ORDER[n] > first:
                flagged[r.id].update(earlier)
                why[r.id] = (
                    f"group {g!r} is also in the {[k for k, v in ORDER.items() if v == first][0]} split"
                )
    for a, b in links:
        if a in where and b in where and where[a][0] != where[b][0]:
            late, early = (a, b) if ORDER[where[a][0]] > ORDER[where[b][0]] else (b, a)
            flagged[late].add(early)
            why.setdefault(late, f"a duplicate of {early} is in the {where[early][0]} split")
    return [
        Finding(
            "split_leakage",
            "error",
            f"{why[rid]}",
            rid,
            where[rid][1].source,
            "split",
            tuple(sorted(related)),
            where[rid][0],
        )
        for rid, related in flagged.items()
    ]
