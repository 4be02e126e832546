"""A run directory written by the previous main (tests/fixtures/run_prev_main: a tiny prepare → train →
evaluate run with its weights, checkpoints and HTML stripped) still loads through the typed artifacts,
and the readers that ``register`` and ``models show`` go through (model card, lineage tags) render it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneline.artifacts import DataReport, EvalReport
from tuneline.config import Config
from tuneline.registry.card import render_card
from tuneline.registry.lineage import lineage_rows, lineage_tags, metrics_from_tags
from tuneline.runs import Provenance, RunDir, Summary

FIXTURE = Path(__file__).parent / "fixtures" / "run_prev_main"


@pytest.fixture
def run(tmp_path) -> RunDir:
    dst = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, dst)
    return RunDir.open(dst)


def test_all_four_artifacts_and_the_config_load(run):
    summary = run.summary_model()
    assert isinstance(summary, Summary)
    assert summary.stages == ["prepare", "train", "evaluate"]
    assert summary.eval is not None and summary.eval.gate is not None and summary.eval.gate.passed is True
    assert summary.eval.scores("tuned")["roc_auc"] == pytest.approx(0.7916666666666667)
    assert summary.train is not None and summary.train.steps == 6
    prov = run.provenance_model()
    assert isinstance(prov, Provenance)
    assert prov.config_hash and len(prov.config_hash) == 64
    assert prov.base_model is not None and prov.base_model.id == "tiny:gemma3"
    report = EvalReport.read(run)
    assert report.task == "classification" and report.labels
    assert "tuned" in report.models and report.gate is not None
    data = DataReport.read(run)
    assert data.summary.records_in == 48 and isinstance(data.findings, list)
    assert data.summary.splits["train"].labels["green"] == 14
    cfg = run.config()
    assert isinstance(cfg, Config)
    assert cfg.run.name == "tiny" and cfg.train.learning_rate == pytest.approx(2.0e-3)


def test_round_trip_keeps_fields_the_models_do_not_name(run):
    before = json.loads(run.summary_file.read_text())
    Summary.read(run).write(run)
    assert json.loads(run.summary_file.read_text()) == before
    report_before = json.loads((run.eval_dir / "report.json").read_text())
    EvalReport.read(run).write(run)
    assert json.loads((run.eval_dir / "report.json").read_text()) == report_before


def test_env_placeholders_stay_unresolved(run, monkeypatch):
    # config.resolved.yaml stores secrets as their ${ENV} templates; reading it back must not resolve them.
    placeholder = "tracking_uri: ${TUNELINE_FIXTURE_URI}"
    text = run.config_file.read_text().replace("tracking_uri: null", placeholder, 1)
    run.config_file.write_text(text)
    monkeypatch.delenv("TUNELINE_FIXTURE_URI", raising=False)
    assert run.config().registry.tracking_uri == "${TUNELINE_FIXTURE_URI}"


def test_register_and_models_show_readers_render_the_old_run(run):
    tags = lineage_tags(run)
    assert tags["tuneline.run_id"] == run.run_id
    assert tags["tuneline.base_model"] == "tiny:gemma3"
    assert metrics_from_tags(tags)
    assert dict(lineage_rows(tags))
    card = render_card(run, name="tiny", version="1", tags=tags)
    assert "# tiny — version 1" in card
    assert "learning rate" in card and "0.002" in card
    assert "Evaluation gate: passed" in card
