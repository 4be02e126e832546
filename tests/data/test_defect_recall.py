"""Acceptance: every planted defect is found (100% recall) and no clean record is flagged."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tuneline.cli import app


def _matches(planted: dict, finding: dict, root) -> bool:
    if finding["check"] != planted["code"]:
        return False
    if planted["record_id"] is not None and finding["record_id"] == planted["record_id"]:
        return True
    if planted["source"] is not None and finding["source"]:
        return (
            finding["source"]
            == str(root / planted["source"].rsplit(":", 1)[0]) + ":" + planted["source"].rsplit(":", 1)[1]
        )
    return planted["record_id"] is None and planted["source"] is None and finding["record_id"] is None


def test_validate_finds_every_planted_defect_and_nothing_else(workdir):
    data = workdir / "derm"
    runner = CliRunner()
    synth = runner.invoke(
        app,
        ["data", "synth", "dermoscopy", str(data), "--n", "40", "--size", "128", "--seed", "5", "--defects"],
    )
    assert synth.exit_code == 0, synth.output
    result = runner.invoke(
        app, ["data", "validate", str(data / "tuneline.yaml"), "--out", str(workdir / "rep")]
    )
    assert result.exit_code == 3, result.output  # the planted errors fail validation
    report = json.loads((workdir / "rep" / "data_report.json").read_text())
    planted = json.loads((data / "defects.json").read_text())
    findings = report["findings"]

    missed = [p for p in planted if not any(_matches(p, f, data) for f in findings)]
    assert not missed, missed
    planted_codes = {p["code"] for p in planted}
    from tuneline.data.findings import CHECKS

    assert planted_codes == set(CHECKS)  # every kind of defect was planted

    flagged_clean = [f for f in findings if not any(_matches(p, f, data) for p in planted)]
    assert not flagged_clean, flagged_clean
    assert (workdir / "rep" / "data_report.html").is_file()
