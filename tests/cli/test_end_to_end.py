"""The whole line through the CLI on tiny data: prepare → train → evaluate → register."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_RUN, write_config
from tuneline.cli import app

RUN_FILES = {
    "config.resolved.yaml",
    "provenance.json",
    "data",
    "checkpoints",
    "adapter",
    "metrics.jsonl",
    "eval.json",
    "summary.json",
    "run.log",
}


def _only_run_dir(workdir: Path, name: str = "tiny") -> Path:
    (run_dir,) = (workdir / "runs" / name).iterdir()
    return run_dir


def test_run_end_to_end(tiny_config, workdir):
    # Well under a minute on an idle CPU: timed by benchmarks/bench_speed.py (tuneline-run-tiny), not here.
    result = CliRunner().invoke(app, ["run", str(tiny_config)])
    assert result.exit_code == 0, result.output
    assert "tuneline run summary" in result.output and "accuracy" in result.output
    assert "answer-token loss" in result.output and "prior" in result.output

    run_dir = _only_run_dir(workdir)
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "FAILED").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is True and summary["run_dir"] == str(run_dir)
    assert sum(summary["data"]["counts"].values()) == 48
    assert summary["train"]["final_loss"] > 0
    for who in ("base", "tuned"):
        assert set(summary["eval"][who]) >= {"loss", "accuracy"}
    assert summary["eval"]["tuned"]["loss"] < summary["eval"]["base"]["loss"]
    assert summary["registry"] == {**summary["registry"], "model_name": "tiny", "version": "1"}

    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["data"]["fingerprint"] == summary["data"]["fingerprint"]
    assert prov["base_model"]["id"] == "tiny:gemma3" and len(prov["base_model"]["content_hash"]) == 64

    # The MLflow store (SQLite under .tuneline/) holds the run and a version with lineage tags.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (version,) = client.search_model_versions("name = 'tiny'")
    tags = version.tags
    assert tags["tuneline.data_fingerprint"] == summary["data"]["fingerprint"]
    assert tags["tuneline.config_hash"] == prov["config_hash"]
    assert tags["tuneline.base_model"] == "tiny:gemma3"
    assert tags["tuneline.base_model_revision"] == prov["base_model"]["content_hash"]
    assert "tuneline.environment_hash" in tags and "tuneline.run_id" in tags
    mlrun = client.get_run(version.run_id)
    assert mlrun.data.metrics["eval_tuned_accuracy"] == summary["eval"]["tuned"]["accuracy"]
    assert mlrun.data.params["train.max_steps"] == "6"
    artifacts = {a.path for a in client.list_artifacts(version.run_id)}
    assert {"adapter", "eval.json", "provenance.json", "config.resolved.yaml"} <= artifacts
    assert version.source.endswith("/adapter")

    # Registering the same run directory again returns the same version.
    again = CliRunner().invoke(app, ["register", str(tiny_config), "--run-dir", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert len(client.search_model_versions("name = 'tiny'")) == 1


def test_stages_one_by_one_pick_up_the_previous_run(tiny_config, workdir):
    runner = CliRunner()
    assert runner.invoke(app, ["prepare", str(tiny_config), "--set", "registry.enabled=false"]).exit_code == 0
    out = runner.invoke(app, ["evaluate", str(tiny_config)])
    assert out.exit_code != 0 and "train stage" in out.output
    result = runner.invoke(app, ["train", str(tiny_config), "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    run_dir = _only_run_dir(workdir)
    assert json.loads((run_dir / "summary.json").read_text())["stages"] == ["prepare", "train"]


def test_bad_jsonl_line_fails_clearly_without_a_complete_looking_run(workdir, shapes_dir):
    data = workdir / "data"
    shutil.copytree(shapes_dir, data)
    lines = (data / "data.jsonl").read_text().splitlines()
    lines[4] = "{oops"
    (data / "data.jsonl").write_text("\n".join(lines) + "\n")
    cfg = write_config(workdir, TINY_RUN.format(data="data/data.jsonl", steps=2))
    result = CliRunner().invoke(app, ["run", str(cfg)])
    assert result.exit_code == 3
    assert f"{data / 'data.jsonl'}:5: [malformed_row] not valid JSON" in result.output
    run_dir = _only_run_dir(workdir)
    assert (run_dir / "FAILED").is_file()
    report = json.loads((run_dir / "data_report.json").read_text())
    assert (
        report["summary"]["passed"] is False and report["summary"]["by_check"]["malformed_row"]["error"] == 1
    )
    assert (run_dir / "data_report.html").is_file()
    assert not (run_dir / "data").exists() and not (run_dir / "adapter").exists()
    assert json.loads((run_dir / "summary.json").read_text())["complete"] is False


def test_unknown_family_fails_before_creating_a_run(workdir, shapes_dir):
    cfg = write_config(
        workdir,
        TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=2).replace("tiny:gemma3", "tiny:gemmma3"),
    )
    result = CliRunner().invoke(app, ["run", str(cfg)])
    assert result.exit_code == 4 and "did you mean 'gemma3'" in result.output
    assert not (workdir / "runs").exists()


@pytest.mark.integration
def test_console_script_reports_config_errors_with_exit_2(tmp_path):
    exe = Path(sys.executable).with_name("tuneline")
    cfg = write_config(tmp_path, "model: {bsae: x}\ndata: {sources: [{type: jsonl, path: d.jsonl}]}\n")
    proc = subprocess.run(
        [str(exe), "config", "validate", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "did you mean 'base'" in proc.stderr and "model.base: required key is missing" in proc.stderr
    missing = subprocess.run(
        [str(exe), "run", str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr
