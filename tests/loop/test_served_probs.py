"""loop collect keeps the probabilities the server recorded at serve time, and re-scores only the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tuneline.loop import collect as collect_mod

LABELS = ["red", "green", "blue"]


def _cfg(tmp_path: Path):
    from tuneline.config.schema import Config

    return Config.model_validate(
        {
            "run": {"name": "shapes"},
            "model": {"base": "tiny:gemma3"},
            "data": {"sources": [{"type": "jsonl", "path": str(tmp_path / "d.jsonl")}]},
            "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "model_name": "shapes"},
            "serve": {"state_dir": str(tmp_path / "state")},
        }
    )


def _served_log(state: Path) -> None:
    """Two answered requests with kept inputs: one logged with its probabilities, one from an old log."""
    from tuneline.serving import ab

    (state / "inputs" / "requests").mkdir(parents=True)
    for iid in ("in-new", "in-old"):
        body = {"texts": [f"what colour? {iid}"], "images": []}
        (state / "inputs" / "requests" / f"{iid}.json").write_text(json.dumps(body))
    store = ab.Store(state / "ab.sqlite")
    served = {"red": 0.7, "green": 0.2, "blue": 0.1}
    store.record(
        id="new", ts=2.0, variant="champion", version="1", status=200, prediction="red",
        probs=json.dumps(served), input_id="in-new",
    )  # fmt: skip
    store.record(
        id="old", ts=1.0, variant="champion", version="1", status=200, prediction="blue", input_id="in-old"
    )
    store.flush()
    store.close()


def test_collect_uses_served_probabilities_and_rescores_only_where_absent(tmp_path, monkeypatch):
    import tuneline.evaluation.classify as classify
    import tuneline.registry.resolve as resolve
    import tuneline.training.collate as collate

    cfg = _cfg(tmp_path)
    _served_log(Path(cfg.serve.state_dir))
    scored: dict[str, list[str]] = {}

    def fake_load(ref, uri, client=None):
        alias = ref.partition("@")[2]
        if alias == "challenger":
            raise LookupError("no challenger registered")
        return alias, None

    class FakeScores:
        def __init__(self, n: int) -> None:
            self.probabilities = np.tile([0.1, 0.1, 0.8], (n, 1))

    def fake_score(model, collator, records, labels, batch_size=8):
        scored.setdefault(model, []).extend(r.metadata["loop_response_id"] for r in records)
        return FakeScores(len(records))

    monkeypatch.setattr(resolve, "load", fake_load)
    monkeypatch.setattr(collate, "ChatCollator", lambda *a, **k: None)
    monkeypatch.setattr(classify, "score_labels", fake_score)
    out = tmp_path / "pool.jsonl"
    pool = {c.id: c for c in collect_mod.collect(cfg, out, since=0.0, labels=LABELS)}

    assert scored == {"champion": ["old"]}  # the served request is not scored again
    new, old = pool["new"], pool["old"]
    assert new.probs["champion"] == {"red": 0.7, "green": 0.2, "blue": 0.1}
    assert new.probs_source == {"champion": "served"}
    assert old.probs["champion"] == {"red": 0.1, "green": 0.1, "blue": 0.8}
    assert old.probs_source == {"champion": "rescored"}
    again = {c.id: c for c in collect_mod.read_pool(out)}  # the pool file says so too
    assert again["new"].probs_source == {"champion": "served"}
    assert again["old"].probs_source == {"champion": "rescored"}


def test_a_pool_written_before_probs_source_still_reads(tmp_path):
    row = {
        "id": "x", "ts": 1.0, "variant": "champion", "version": "1", "prediction": "red",
        "input_id": "i", "images": [], "texts": ["t"], "outcome": None, "label": None, "probs": {},
    }  # fmt: skip
    (tmp_path / "pool.jsonl").write_text(json.dumps(row) + "\n")
    (c,) = collect_mod.read_pool(tmp_path / "pool.jsonl")
    assert c.probs_source == {}
