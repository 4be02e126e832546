"""When every record fails, the verdict says so plainly: no error-fraction threshold comparison
("error fraction 100.00%, allowed 100.00%" read as if 100% were within bounds)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import write_config
from tests.data.test_encodings import CONFIG, _manifest
from tuneline.cli import app


@pytest.mark.parametrize("allowed", [None, "1.0"])
def test_every_image_missing_reads_as_every_record_failed(workdir, allowed):
    path, _ = _manifest(workdir / "data", n=6)
    for png in (workdir / "data").glob("*.png"):
        png.unlink()  # every record points at a file that is not there
    config = write_config(workdir, CONFIG.format(csv=path))
    args = ["data", "validate", str(config), "--set", "data.sources.0.encoding=latin-1"]
    if allowed:
        args += ["--set", f"data.checks.max_error_fraction={allowed}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "verdict: failed: every record failed its checks (image_missing 6)" in text
    assert "allowed" not in text and "max_error_fraction" not in text and "no records left" not in text

    folder = workdir / "runs" / "enc" / "data-validate"
    summary = json.loads((folder / "data_report.json").read_text())["summary"]
    assert summary["passed"] is False
    assert summary["failures"] == [
        "every record failed its checks (image_missing 6): there is nothing to train on"
    ]
    html = (folder / "data_report.html").read_text()
    why = html[html.index('class="why"') : html.index('class="gauge"')]
    assert "every record failed its checks (image_missing 6)" in why
    assert "allowed" not in why and "of records have errors" not in why


def test_some_errors_above_the_threshold_still_name_it(workdir):
    path, _ = _manifest(workdir / "data", n=6)
    (workdir / "data" / "IMG_000.png").unlink()  # one of six missing: 16.7% > 0
    config = write_config(workdir, CONFIG.format(csv=path))
    args = ["data", "validate", str(config), "--set", "data.sources.0.encoding=latin-1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "1 of 6 records have errors (16.7% > data.checks.max_error_fraction=0)" in text
    assert "every record failed" not in text
