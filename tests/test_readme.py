"""The README's first two lines are the commands a fresh machine runs; CI must run the second."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command(line: str) -> str:
    return line.split("`")[1]


def test_ci_runs_the_readme_test_command():
    quickstart, _, tests = ROOT.joinpath("README.md").read_text().splitlines()[:3]
    assert "tuneline run examples/quickstart/config.yaml" in _command(quickstart)
    assert _command(tests) in ROOT.joinpath(".ci", "run").read_text()
    assert "pytest" in _command(tests)
