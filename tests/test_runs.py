from __future__ import annotations

import json

import pytest

from tuneline.config import load_config
from tuneline.errors import DataError, RunDirError
from tuneline.runs import RunDir, atomic_dir, atomic_write_json


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "ok.bin").write_bytes(b"x")
    assert (target / "ok.bin").read_bytes() == b"x" and len(list(tmp_path.iterdir())) == 1


def test_failed_stage_writes_failed_and_never_looks_complete(tiny_config):
    cfg = load_config(tiny_config)
    run = RunDir.create(cfg, tiny_config)
    with pytest.raises(DataError):
        with run.stage("prepare"):
            raise DataError("bad line 3")
    failed = run.failed_file.read_text()
    assert "stage: prepare" in failed and "bad line 3" in failed and "Traceback" in failed
    summary = run.summary()
    assert summary["complete"] is False and summary["failed_stage"] == "prepare" and summary["stages"] == []
    with pytest.raises(RunDirError, match="prepare stage has not completed"):
        run.require("prepare")
    with run.stage("prepare"):  # a retry that succeeds clears FAILED
        pass
    assert not run.failed_file.exists() and run.summary()["stages"] == ["prepare"]


def test_provenance_is_complete_at_creation(tiny_config):
    cfg = load_config(tiny_config)
    run = RunDir.create(cfg, tiny_config)
    prov = json.loads(run.provenance_file.read_text())
    assert prov["tuneline_version"] and len(prov["config_hash"]) == 64
    assert set(prov["git"]) == {"commit", "dirty", "repository"}
    env = prov["environment"]
    assert (
        env["python"]
        and env["packages"]["torch"]
        and env["packages"]["transformers"]
        and env["packages"]["peft"]
    )
    assert len(env["packages_hash"]) == 64
    assert run.config_file.read_text().startswith("run:")


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2} and [p.name for p in tmp_path.iterdir()] == ["x.json"]
