"""Issue 18, forgetting: `data forget` writes a dataset version without the records and their
near-duplicates, later prepares keep them out, and `models affected` finds every version they reached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import TINY_RUN, write_config
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.data import forget
from tuneline.errors import DataError
from tuneline.stages import forget as forget_stage
from tuneline.stages.prepare import build_snapshot
from tuneline_synth.shapes import generate

SECRET = "shape-00005"
COPY = "shape-00005-copy"


def _dataset(folder: Path) -> Path:
    """48 shapes plus a re-encoded, resized copy of one record's image under another id."""
    generate(folder, n=48, seed=3)
    lines = (folder / "data.jsonl").read_text().splitlines()
    rec = next(json.loads(line) for line in lines if json.loads(line)["id"] == SECRET)
    with Image.open(folder / rec["messages"][0]["content"][0]["path"]) as im:
        im.convert("RGB").resize((im.width * 9 // 10, im.height * 9 // 10)).save(
            folder / "images" / "copy.jpg", quality=90
        )
    rec["id"] = COPY
    rec["messages"][0]["content"][0]["path"] = "images/copy.jpg"
    (folder / "data.jsonl").write_text("\n".join([*lines, json.dumps(rec)]) + "\n")
    return folder / "data.jsonl"


def _ids(snapshot_path: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    rows = pq.read_table(snapshot_path / "records.parquet", columns=["id", "split"]).to_pylist()
    return {r["id"]: r["split"] for r in rows}


@pytest.fixture
def data(workdir) -> Path:
    return _dataset(workdir / "shapes")


def test_forget_writes_a_version_without_the_record_and_its_near_duplicates(data, workdir):
    cfg = load_config(write_config(workdir, TINY_RUN.format(data=data, steps=2)), [])
    validation, before = build_snapshot(cfg, workdir / "reports")
    assert {SECRET, COPY} <= set(_ids(before.path))  # duplicate_near only warns: the copy is in the data
    assert (SECRET, COPY) in validation.links or (COPY, SECRET) in validation.links

    done = forget_stage.forget(cfg, [SECRET], [])
    req = done.request
    assert done.snapshot_path != before.path and req.snapshot != before.fingerprint
    after = _ids(done.snapshot_path)
    assert SECRET not in after and COPY not in after
    assert {SECRET, COPY} <= set(req.removed) and COPY in req.duplicates and SECRET not in req.duplicates
    # Only the record and copies linked to it are gone.
    linked = {a for link in validation.links for a in link}
    assert set(req.removed) - {SECRET} <= linked
    assert set(after) == set(_ids(before.path)) - set(req.removed)
    assert done.previous == {
        before.fingerprint: {k: v for k, v in _ids(before.path).items() if k in req.removed}
    }

    # Durable: the next prepare of the same sources reuses the new version, without them.
    _, again = build_snapshot(cfg, workdir / "reports")
    assert again.fingerprint == req.snapshot and again.reused

    # The same content under another source file and id stays out too (content hash, then its copies).
    other = workdir / "elsewhere"
    shutil.copytree(data.parent, other)
    text = (other / "data.jsonl").read_text().replace(f'"id": "{SECRET}"', '"id": "renamed"')
    (other / "data.jsonl").write_text(text)
    cfg2 = load_config(
        write_config(workdir, TINY_RUN.format(data=other / "data.jsonl", steps=2), "b.yaml"), []
    )
    validation2, snap2 = build_snapshot(cfg2, workdir / "reports2")
    held = _ids(snap2.path)
    assert "renamed" not in held and COPY not in held and validation2.summary["forgotten"] >= 2


def test_forget_refuses_an_unknown_record_and_writes_nothing(data, workdir):
    cfg = load_config(write_config(workdir, TINY_RUN.format(data=data, steps=2)), [])
    with pytest.raises(DataError, match="no record or group named 'nobody'"):
        forget_stage.forget(cfg, ["nobody"], [])
    assert forget.load().requests == []


def test_affected_finds_versions_whose_snapshot_held_the_record(data, workdir):
    """Versions registered on two snapshots that held the record, and one made after forgetting it."""
    from tuneline.registry import store

    path = write_config(workdir, TINY_RUN.format(data=data, steps=2))
    cfg = load_config(path, [])
    cfg_seed = load_config(path, ["run.seed=1"])
    _, s1 = build_snapshot(cfg, workdir / "r")
    _, s2 = build_snapshot(cfg_seed, workdir / "r")
    done = forget_stage.forget(cfg, [SECRET], [])
    client = store.client(None)
    for name, folder in (("a", s1.path), ("a", s2.path), ("b", s2.path), ("a", done.snapshot_path)):
        if name not in {m.name for m in client.search_registered_models()}:
            client.create_registered_model(name)
        fp = json.loads((folder / "manifest.json").read_text())["fingerprint"]
        client.create_model_version(  # the lineage tags `register` writes
            name,
            source="file:///nowhere",
            tags={"tuneline.data_fingerprint": fp, "tuneline.data_snapshot": str(folder)},
        )
    found = forget.affected(client, [SECRET], [])
    assert [(a.model, a.version) for a in found] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert found[0].held[SECRET] == _ids(s1.path)[SECRET] and found[1].held[SECRET] == _ids(s2.path)[SECRET]
    assert found[0].trained_on == (_ids(s1.path)[SECRET] == "train")

    # Still found when the old snapshot folders are gone (the ledger kept their fingerprints).
    shutil.rmtree(s1.path)
    shutil.rmtree(s2.path)
    assert [(a.model, a.version) for a in forget.affected(client, [SECRET], [])] == [
        ("a", "1"),
        ("a", "2"),
        ("b", "1"),
    ]
    result = CliRunner().invoke(app, ["models", "affected", "--record", SECRET])
    assert result.exit_code == 0, result.output
    assert "3 version(s)" in result.output


@pytest.mark.slow
def test_forget_then_affected_through_real_runs(data, workdir):
    """Acceptance 5: two runs trained with the record, `data forget`, a third run; `models affected`
    lists exactly the first two, and the third's snapshot excludes the record and its copy."""
    config = write_config(workdir, TINY_RUN.format(data=data, steps=2))
    runner = CliRunner()
    for seed in (0, 1):
        result = runner.invoke(app, ["run", str(config), "--new", "--set", f"run.seed={seed}"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "forget", str(config), "--record", SECRET])
    assert result.exit_code == 0, result.output
    assert COPY in result.output
    result = runner.invoke(app, ["run", str(config), "--new"])
    assert result.exit_code == 0, result.output

    from tuneline.registry import store

    client = store.client(None)
    versions = {str(mv.version): dict(mv.tags) for mv in client.search_model_versions("name = 'tiny'")}
    assert len(versions) == 3
    fps = {v: t["tuneline.data_fingerprint"] for v, t in versions.items()}
    assert len(set(fps.values())) == 3
    third = _ids(Path(versions["3"]["tuneline.data_snapshot"]))
    assert SECRET not in third and COPY not in third
    found = forget.affected(client, [SECRET], [])
    assert [a.version for a in found] == ["1", "2"]
    result = runner.invoke(app, ["models", "affected", "--record", SECRET])
    assert result.exit_code == 0 and "2 version(s)" in result.output
