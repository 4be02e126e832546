from __future__ import annotations

import random
from collections import Counter

import pytest

from tuneline.config.schema import SplitConfig
from tuneline.data.records import Record
from tuneline.data.split import SPLITS, split_records
from tuneline.errors import DataError


def _records(n_groups=300, seed=0, prevalence=0.05) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for g in range(n_groups):
        for k in range(rng.randint(1, 6)):
            label = "malignant" if rng.random() < prevalence else "benign"
            out.append(
                Record(
                    id=f"r{g}-{k}",
                    messages=[],
                    source="t",
                    label=label,
                    group=f"p{g}",
                    metadata={"site": rng.choice("abc")},
                )
            )
    return out


def _ids(splits):
    return {s: [r.id for r in v] for s, v in splits.items()}


def test_stratified_group_keeps_groups_together_and_proportions_close():
    records = _records()
    splits = split_records(records, SplitConfig(strategy="stratified_group"), seed=7)
    groups = {s: {r.group for r in v} for s, v in splits.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert sum(len(v) for v in splits.values()) == len(records)
    overall = Counter(r.label for r in records)["malignant"] / len(records)
    for s in SPLITS:
        share = Counter(r.label for r in splits[s])["malignant"] / len(splits[s])
        assert abs(share - overall) <= 0.02, (s, share, overall)
        assert abs(len(splits[s]) / len(records) - {"train": 0.8, "val": 0.1, "test": 0.1}[s]) < 0.02


def test_same_seed_same_split_other_seed_other_split():
    records = _records()
    cfg = SplitConfig(strategy="stratified_group")
    assert _ids(split_records(records, cfg, 1)) == _ids(split_records(list(reversed(records)), cfg, 1))
    assert _ids(split_records(records, cfg, 1)) != _ids(split_records(records, cfg, 2))


def test_duplicate_links_never_straddle_splits():
    records = _records(100)
    links = [(records[i].id, records[-i - 1].id) for i in range(0, 40, 3)]
    splits = split_records(records, SplitConfig(strategy="stratified"), 3, links)
    where = {r.id: s for s, v in splits.items() for r in v}
    assert all(where[a] == where[b] for a, b in links)


def test_group_by_metadata_key_and_stratify_by():
    records = _records(200)
    splits = split_records(
        records,
        SplitConfig(
            strategy="stratified_group", group_by="site", stratify_by="site", train=0.34, val=0.33, test=0.33
        ),
        0,
    )
    sites = {s: {r.metadata["site"] for r in v} for s, v in splits.items()}
    assert all(len(v) == 1 for v in sites.values())  # three sites, three splits


def test_random_and_predefined():
    records = _records(50)
    splits = split_records(records, SplitConfig(strategy="random"), 0)
    assert sum(len(v) for v in splits.values()) == len(records) and splits["val"] and splits["test"]
    pre = [
        Record(id=str(i), messages=[], source="t", metadata={"split": s})
        for i, s in enumerate(["train", "train", "test", "val"])
    ]
    assert _ids(split_records(pre, SplitConfig(strategy="predefined"), 0)) == {
        "train": ["0", "1"],
        "val": ["3"],
        "test": ["2"],
    }
    with pytest.raises(DataError, match="no valid 'split'"):
        split_records(
            [*pre, Record(id="x", messages=[], source="f:9")], SplitConfig(strategy="predefined"), 0
        )
