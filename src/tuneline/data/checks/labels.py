"""Label checks: contradictory labels on the same input, and rare classes."""

from __future__ import annotations

from collections import Counter, defaultdict

from tuneline.data.findings import Finding
from tuneline.data.records import Record
from tuneline.data.split import UnionFind


def _prompt_key(rec: Record) -> str:
    return " ".join(
        " ".join(p["text"] for m in rec.prompt_messages for p in m["content"] if p["type"] == "text")
        .lower()
        .split()
    )


def conflicts(
    records: list[Record], exact: list[tuple[str, str]], near: list[tuple[str, str]]
) -> list[Finding]:
    """Records with the same input but different labels; every record involved is flagged.

    "Same input": byte-identical images (transitive: copies of copies are the same image), a
    near-duplicate pair (pairwise only: chains of look-alikes are not one image), or text-only
    prompts that are identical.
    """
    uf = UnionFind()
    for a, b in exact:
        uf.union(a, b)
    text_only: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        if not rec.images:
            text_only[_prompt_key(rec)].append(rec.id)
    for ids in text_only.values():
        for other in ids[1:]:
            uf.union(ids[0], other)
    by_id = {r.id: r for r in records}
    clusters: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        clusters[uf.find(rec.id)].append(rec.id)
    related: dict[str, set[str]] = defaultdict(set)
    for members in clusters.values():
        if len({by_id[m].target for m in members}) > 1:
            for m in members:
                related[m].update(o for o in members if by_id[o].target != by_id[m].target)
    for a, b in near:
        if a in by_id and b in by_id and by_id[a].target != by_id[b].target:
            related[a].add(b)
            related[b].add(a)
    out = []
    for rid in (r.id for r in records if r.id in related):
        rec, others = by_id[rid], sorted(related[rid])
        labels = Counter(by_id[o].target for o in others)
        desc = ", ".join(f"{label!r}" + (f" ({n}x)" if n > 1 else "") for label, n in labels.most_common(5))
        out.append(
            Finding(
                "label_conflict",
                "error",
                f"label {rec.target!r} but the same input is labelled {desc} elsewhere",
                rid,
                rec.source,
                "label",
                tuple(others),
            )
        )
    return out


def imbalance(records: list[Record], min_fraction: float) -> list[Finding]:
    counts = Counter(r.target for r in records)
    total = sum(counts.values())
    if len(counts) < 2 or total == 0 or len(counts) > 50:  # free-form answers are not classes
        return []
    return [
        Finding(
            "class_imbalance",
            "error",
            f"class {label!r} is {n}/{total} = {n / total:.1%} of the records, "
            f"below data.checks.min_class_fraction={min_fraction:g}: consider train.class_balance and "
            "metrics beyond accuracy",
            None,
            None,
            "label",
        )
        for label, n in sorted(counts.items())
        if n / total < min_fraction
    ]
