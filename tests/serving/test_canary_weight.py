"""A canary's traffic share from the registry: the version tag the loop sets, applied by the alias watcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneline.serving import ab
from tuneline.serving.engine import Variant
from tuneline.serving.metrics import Metrics
from tuneline.serving.sources import ModelVersionRef
from tuneline.serving.watcher import CANARY_WEIGHT_TAG, Routes, Watcher, canary_traffic, canary_weight


def test_canary_traffic_gives_the_alias_its_share_and_the_others_the_rest():
    base = {"champion": 100.0, "challenger": 0.0}
    assert canary_traffic(base, "challenger", 10.0) == {"champion": 90.0, "challenger": 10.0}
    assert list(canary_traffic(base, "challenger", 10.0)) == ["champion", "challenger"]  # order kept
    assert canary_traffic(base, "challenger", None) == base  # no tag: the configured split
    three = {"champion": 60.0, "challenger": 20.0, "old": 20.0}
    got = canary_traffic(three, "challenger", 50.0)
    assert got["challenger"] == 50.0
    assert got["champion"] == pytest.approx(37.5) and got["old"] == pytest.approx(12.5)  # 3:1 as before
    assert sum(got.values()) == pytest.approx(100.0)
    assert canary_traffic({"champion": 0.0, "challenger": 100.0}, "champion", 20.0) == {
        "champion": 20.0,
        "challenger": 80.0,
    }
    assert canary_traffic(base, "small", 10.0) == base  # not an A/B alias: nothing to shift
    assert canary_traffic({"champion": 100.0}, "champion", 10.0) == {"champion": 100.0}
    # the split routes users: about the canary's share go to the challenger
    split = canary_traffic(base, "challenger", 10.0)
    n = sum(ab.assign(split, "s", f"user-{i}") == "challenger" for i in range(4000))
    assert 0.08 < n / 4000 < 0.12


def test_canary_weight_reads_the_tag_and_ignores_garbage():
    assert canary_weight({}) is None
    assert canary_weight({CANARY_WEIGHT_TAG: "10"}) == 10.0
    assert canary_weight({CANARY_WEIGHT_TAG: "12.5"}) == 12.5
    assert canary_weight({CANARY_WEIGHT_TAG: "lots"}) is None
    assert canary_weight({CANARY_WEIGHT_TAG: "150"}) is None


class FakeHost:
    def unload(self, variant) -> None:
        pass


class FakeSource:
    model_name = "shapes"

    def __init__(self) -> None:
        self.versions = {"champion": ("1", {}), "challenger": ("1", {})}

    def resolve(self, alias: str) -> ModelVersionRef:
        version, tags = self.versions[alias]
        return ModelVersionRef("shapes", alias, version, f"mem://{version}", None, dict(tags))

    def download(self, ref: ModelVersionRef) -> Path:
        return Path(f"/nowhere/{ref.version}")


def test_the_watcher_applies_the_weight_once_the_tagged_version_serves(tmp_path):
    source = FakeSource()
    fail = {"2"}

    def load(ref, path):
        if ref.version in fail:
            raise RuntimeError("broken weights")
        return Variant(ref, path, FakeHost(), None)

    routes = Routes(["champion", "challenger"])
    seen: list[tuple[str, float | None]] = []
    traffic = {"now": {"champion": 100.0, "challenger": 0.0}}

    def on_weight(alias, w):
        seen.append((alias, w))
        traffic["now"] = canary_traffic({"champion": 100.0, "challenger": 0.0}, alias, w)

    w = Watcher(source, load, routes, Metrics(), 0.0, on_weight=on_weight)  # type: ignore[arg-type]
    w.poll()
    assert seen == []  # no tag anywhere: the configured split stands
    # the loop's canary: the challenger alias moves to version 2, tagged 10; 2 fails to load
    source.versions["challenger"] = ("2", {CANARY_WEIGHT_TAG: "10"})
    w.poll()
    assert seen == [] and routes.get("challenger").ref.version == "1"  # never the share for version 1
    fail.clear()
    source.versions["challenger"] = ("3", {CANARY_WEIGHT_TAG: "10"})
    w.poll()
    assert routes.get("challenger").ref.version == "3"
    assert seen == [("challenger", 10.0)]
    assert traffic["now"] == {"champion": 90.0, "challenger": 10.0}
    w.poll()
    assert len(seen) == 1  # unchanged: not applied again
    # the weight changed on the version already served (no reload)
    source.versions["challenger"] = ("3", {CANARY_WEIGHT_TAG: "25"})
    w.poll()
    assert seen[-1] == ("challenger", 25.0) and traffic["now"]["challenger"] == 25.0
    # rollback: the challenger alias back on the untagged champion version
    source.versions["challenger"] = ("1", {})
    w.poll()
    assert seen[-1] == ("challenger", None)
    assert traffic["now"] == {"champion": 100.0, "challenger": 0.0}


def test_loop_canary_tags_the_version_the_server_reads_and_rollback_removes_it(tmp_path, monkeypatch):
    from tuneline.config.schema import Config
    from tuneline.loop import decide as decide_mod
    from tuneline.registry import store
    from tuneline.serving.sources import RegistrySource

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = store.client(uri)
    c.create_registered_model("shapes")
    for _ in range(2):
        c.create_model_version("shapes", source=(tmp_path / "a").as_uri())
    c.set_registered_model_alias("shapes", "champion", "1")
    cfg = Config.model_validate(
        {
            "run": {"name": "shapes"},
            "model": {"base": "tiny:gemma3"},
            "data": {"sources": [{"type": "jsonl", "path": str(tmp_path / "d.jsonl")}]},
            "registry": {"tracking_uri": uri, "model_name": "shapes"},
            "serve": {"state_dir": str(tmp_path / "serve"), "traffic": {"champion": 100, "challenger": 0}},
            "loop": {"canary_weight": 15},
        }
    )
    decide_mod.canary(cfg, "2")
    source = RegistrySource(uri, "shapes", tmp_path / "cache")
    ref = source.resolve("challenger")
    assert ref.version == "2" and canary_weight(ref.tags) == 15.0  # what the watcher will apply
    assert canary_traffic(cfg.serve.traffic, "challenger", 15.0) == {"champion": 85.0, "challenger": 15.0}
    ab.Store(tmp_path / "serve" / "ab.sqlite").close()
    monkeypatch.setattr(decide_mod, "judge", lambda report, rules: ("rollback", "planted: worse"))
    assert decide_mod.decide(cfg).action == "rollback"
    assert CANARY_WEIGHT_TAG not in (c.get_model_version("shapes", "2").tags or {})
    ref = source.resolve("challenger")
    assert ref.version == "1" and canary_weight(ref.tags) is None  # the configured split is back
