"""ConfigError takes the problems as a list and, like every TunelineError, an optional hint."""

from tuneline.errors import ConfigError


def test_config_error_with_hint():
    exc = ConfigError(["train.teacher: not a run directory"], hint="give a run directory with adapter/")
    assert exc.problems == ["train.teacher: not a run directory"]
    assert exc.hint == "give a run directory with adapter/"
    text = str(exc)
    assert "1 problem(s)" in text
    assert "  - train.teacher: not a run directory" in text
    assert text.endswith("hint: give a run directory with adapter/")


def test_config_error_without_hint_unchanged():
    exc = ConfigError(["a: b", "c: d"], source="x.yaml")
    assert exc.hint is None
    assert str(exc) == "invalid configuration x.yaml: 2 problem(s)\n  - a: b\n  - c: d"
