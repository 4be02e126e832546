"""The shipped examples run end to end through `tuneline run`, on smaller generated data (~20 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.evaluation.recompute import assert_report_matches
from tuneline.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "example,synth",
    [
        ("quickstart", ["shapes", "--n", "400"]),
        ("digits", ["digits", "--n", "600"]),
        ("melanoma", ["dermoscopy", "--n", "60", "--size", "128", "--prevalence", "0.1"]),
        ("text-classification", ["reviews", "--n", "240"]),  # the real MiniLM encoder (22.7M parameters)
    ],
)
def test_example_runs_end_to_end(example, synth, workdir):
    folder = workdir / example
    shutil.copytree(ROOT / "examples" / example, folder, ignore=shutil.ignore_patterns("data"))
    runner = CliRunner()
    made = runner.invoke(app, ["data", "synth", synth[0], str(folder / "data"), *synth[1:]])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["run", str(folder / "config.yaml"), "--set", "train.epochs=1"])
    (run_dir,) = (workdir / "runs" / example).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    gate = summary["eval"]["gate"]
    # exit 0 when the gate passed, 7 when it refused the model; registered either way
    assert result.exit_code == (0 if gate["passed"] else 7), result.output
    assert summary["complete"] and summary["eval"]["tuned"]["loss"] < summary["eval"]["base"]["loss"]
    assert (run_dir / "data_report.html").is_file()
    # Issue 18: HF_HUB_OFFLINE=1 (conftest) turns run.offline on: every stage ran under the socket guard.
    offline = json.loads((run_dir / "provenance.json").read_text())["offline"]
    assert offline == {"prepare": True, "train": True, "evaluate": True, "register": True}

    # Acceptance (issue 5): report.json's metrics equal a scikit-learn recomputation from predictions.parquet.
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["task"] == "classification" and {"base", "tuned", "embedding_logreg"} <= set(
        report["models"]
    )
    assert_report_matches(report, run_dir / "eval" / "predictions.parquet")
    assert (run_dir / "eval" / "report.html").is_file()
    if example == "melanoma":  # patient-grouped data: CIs resample patients; threshold chosen on val
        assert report["grouped_by"] == "group" and report["models"]["tuned"]["ci_unit"] == "groups"
        assert report["threshold"]["method"] == "sensitivity" and report["slices"]
    if example == "text-classification":  # an encoder family: head probabilities, no generation
        assert report["gate"]["against"] == "embedding_logreg" and report["grouped_by"] == "group"
        assert "untrained classification head" in report["models"]["base"]["note"]
        assert all(report["models"][m]["invalid_label_rate"] is None for m in ("base", "tuned"))
        base_model = json.loads((run_dir / "provenance.json").read_text())["base_model"]
        assert base_model["kind"] == "package" and base_model["package"]["version"] == "0.1.0"
        assert summary["train"]["labels"] == ["negative", "positive"]
