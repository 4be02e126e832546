"""Acceptance 1, 2 and the no-duplicate rule, through the CLI on the default store of a fresh directory:
register two runs, promote through the gate, refuse, force with a recorded reason, roll back (and walk back
through the history), with the aliases checked at every step; `models show` leads back to the run's exact
data snapshot and config."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.registry.conftest import aliases, mlflow_client
from tuneline.cli import app

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def test_register_promote_refuse_force_rollback(two_runs, workdir):
    uri = f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"

    # Register both runs: each new version becomes the challenger.
    assert "tiny version 1 (challenger)" in ok("models", "register", str(two_runs.passed))
    c = mlflow_client(uri)
    assert aliases(c) == {"challenger": "1"}
    assert "tiny version 2 (challenger)" in ok("models", "register", str(two_runs.failed))
    assert aliases(c) == {"challenger": "2"}
    v1, v2 = c.get_model_version("tiny", "1"), c.get_model_version("tiny", "2")
    assert v1.tags["tuneline.gate_passed"] == "true" and v2.tags["tuneline.gate_passed"] == "false"

    # The challenger (v2) failed its gate: promoting it is refused (exit 7) and nothing moves.
    refused = cli("models", "promote", "tiny")
    assert refused.exit_code == 7, refused.output
    assert "refusing to promote tiny version 2" in refused.output and "--force --reason" in refused.output
    assert aliases(c) == {"challenger": "2"}

    # v1 passed: it becomes the champion.
    assert "champion → version 1 (previous-champion: none)" in ok("models", "promote", "tiny", "1")
    assert aliases(c) == {"challenger": "2", "champion": "1"}
    assert c.get_model_version("tiny", "1").tags["tuneline.promoted_by"] == getpass.getuser()

    # v2 by name: still refused; --force without a reason: refused too; the aliases stay.
    assert cli("models", "promote", "tiny", "2").exit_code == 7
    no_reason = cli("models", "promote", "tiny", "2", "--force")
    assert no_reason.exit_code == 5 and "needs a reason" in no_reason.output
    assert aliases(c) == {"challenger": "2", "champion": "1"}
    assert "tuneline.forced_reason" not in c.get_model_version("tiny", "2").tags

    # Forced with a reason: v2 is champion, v1 previous; who / why / when are on the version.
    forced = ok("models", "promote", "tiny", "2", "--force", "--reason", "hotfix for ticket 42")
    assert "champion → version 2 (previous-champion: 1)" in forced and "forced" in forced
    assert aliases(c) == {"champion": "2", "previous-champion": "1"}  # no longer a challenger
    tags = c.get_model_version("tiny", "2").tags
    assert tags["tuneline.forced_promotion"] == "true"
    assert tags["tuneline.forced_reason"] == "hotfix for ticket 42"
    assert tags["tuneline.forced_by"] == getpass.getuser() and tags["tuneline.forced_at"][:4].isdigit()
    history = json.loads(c.get_registered_model("tiny").tags["tuneline.champion_history"])
    assert [h["version"] for h in history] == ["1", "2"]
    assert history[-1]["action"] == "forced" and history[-1]["reason"] == "hotfix for ticket 42"

    # Roll back: champion returns to v1.
    assert "champion → version 1 (previous-champion: none)" in ok("models", "rollback", "tiny")
    assert aliases(c) == {"champion": "1"}
    assert c.get_model_version("tiny", "2").tags["tuneline.rolled_back_by"] == getpass.getuser()
    # Nothing earlier than the first champion: a clear error, nothing moves.
    nothing = cli("models", "rollback", "tiny")
    assert nothing.exit_code == 5 and "no earlier one" in nothing.output
    assert aliases(c) == {"champion": "1"}

    # Repeated rollbacks walk back through the history: 1 → 2 (forced) → 1, then back twice.
    ok("models", "promote", "tiny", "2", "--force", "--reason", "second try")
    assert ok("models", "promote", "tiny", "1").count("champion → version 1 (previous-champion: 2)") == 1
    assert aliases(c) == {"champion": "1", "previous-champion": "2"}
    ok("models", "rollback", "tiny")
    assert aliases(c) == {"champion": "2", "previous-champion": "1"}
    ok("models", "rollback", "tiny")
    assert aliases(c) == {"champion": "1"}
    assert c.get_registered_model("tiny").tags["tuneline.alias_seq"] == "7"  # seven changes

    # `models list` shows both versions with their aliases and gates.
    listed = ok("models", "list", "tiny")
    assert "champion" in listed and "passed" in listed and "FAILED" in listed
    assert "champion history (oldest first): 1" in listed


def test_registering_a_run_twice_returns_the_same_version(two_runs, workdir):
    uri = f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"
    assert "tiny version 1" in ok("models", "register", str(two_runs.passed))
    assert "tiny version 1" in ok("models", "register", str(two_runs.passed))
    c = mlflow_client(uri)
    assert [str(v.version) for v in c.search_model_versions("name = 'tiny'")] == ["1"]
    assert "tiny version 2" in ok("models", "register", str(two_runs.failed))
    assert sorted(int(v.version) for v in c.search_model_versions("name = 'tiny'")) == [1, 2]


def test_show_leads_back_to_the_exact_data_snapshot_and_config(two_runs, workdir):
    from tuneline.config import config_hash, load_config
    from tuneline.runs import RunDir

    ok("models", "register", str(two_runs.passed))
    run = RunDir(two_runs.passed)
    fingerprint = run.summary()["data"]["fingerprint"]
    chash = run.provenance()["config_hash"]

    shown = ok("models", "show", "tiny/1")
    assert f"data snapshot fingerprint: {fingerprint}" in shown
    assert f"config hash: {chash}" in shown
    assert f"run directory: {run.path}" in shown
    snapshot = Path(run.provenance()["data"]["snapshot"])
    assert f"data snapshot folder: {snapshot}" in shown
    # The model card is printed with the lineage: data, evaluation with CIs, slices, gate, limitations.
    for section in (
        "# tiny — version 1",
        "## Data",
        "Class balance",
        "## Evaluation",
        "### Slices",
        "## Gate",
        "## Limitations",
    ):
        assert section in shown, section
    assert "[" in shown.split("## Evaluation")[1].split("## Gate")[0]  # CIs in the table

    # The trail holds: the snapshot folder carries that fingerprint, and the config copy kept in the
    # registry (not the run directory, which could be edited) hashes to the recorded config hash.
    assert json.loads((snapshot / "manifest.json").read_text())["fingerprint"] == fingerprint
    c = mlflow_client(f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}")
    mv = c.get_model_version("tiny", "1")
    assert f"config (registered copy): runs:/{mv.run_id}/config.resolved.yaml" in shown
    copy = Path(c.download_artifacts(mv.run_id, "config.resolved.yaml", str(workdir)))
    assert config_hash(load_config(copy)) == chash == mv.tags["tuneline.config_hash"]
    manifest = json.loads(Path(c.download_artifacts(mv.run_id, "manifest.json", str(workdir))).read_text())
    assert manifest["fingerprint"] == fingerprint
    assert yaml.safe_load(copy.read_text())["eval"]["gate"]["min_improvement"] == 0.0

    # Aliases resolve the same way; a bare name is the champion, which does not exist yet.
    assert "tiny version 1  aliases: challenger" in ok("models", "show", "tiny@challenger", "--no-card")
    missing = cli("models", "show", "tiny")
    assert missing.exit_code == 5 and "no alias 'champion'" in missing.output
