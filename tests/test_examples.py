"""The shipped examples run end to end through `tuneline run`, on smaller generated data (~20 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneline.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "example,synth",
    [
        ("quickstart", ["shapes", "--n", "400"]),
        ("digits", ["digits", "--n", "600"]),
        ("melanoma", ["dermoscopy", "--n", "60", "--size", "128", "--prevalence", "0.1"]),
    ],
)
def test_example_runs_end_to_end(example, synth, workdir):
    folder = workdir / example
    shutil.copytree(ROOT / "examples" / example, folder, ignore=shutil.ignore_patterns("data"))
    runner = CliRunner()
    made = runner.invoke(app, ["data", "synth", synth[0], str(folder / "data"), *synth[1:]])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["run", str(folder / "config.yaml"), "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / example).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["eval"]["tuned"]["loss"] < summary["eval"]["base"]["loss"]
    assert (run_dir / "data_report.html").is_file()
