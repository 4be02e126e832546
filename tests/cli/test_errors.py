"""The CLI's one error mapping (tuneline.cli._common.cli_errors) and its import structure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tuneline import errors
from tuneline.cli import _common

EXIT_CODES = {
    errors.TunelineError: 1,
    errors.ConfigError: 2,
    errors.DataError: 3,
    errors.ModelError: 4,
    errors.RegistryError: 5,
    errors.RunDirError: 6,
    errors.GateFailed: 7,
    errors.DriftAlert: 8,
    errors.OfflineViolation: 9,
    errors.SweepError: 10,
    errors.TrainingInterrupted: 75,
}


def _raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @_common.cli_errors
    def boom(name: str = "x") -> None:
        """A command that fails."""
        raise exc

    return app


def _instance(cls):
    if cls is errors.ConfigError:
        return cls(["a.b: wrong"], source="c.yaml")
    return cls("it broke", hint="do this")


@pytest.mark.parametrize("cls", list(EXIT_CODES), ids=lambda c: c.__name__)
def test_each_error_exits_with_its_code_and_says_what_to_do(cls):
    result = CliRunner().invoke(_raising(_instance(cls)), [])
    assert result.exit_code == EXIT_CODES[cls]
    assert "error:" in result.output
    if cls is not errors.ConfigError:
        assert "it broke" in result.output and "hint: do this" in result.output


def test_every_error_class_has_its_code_here():
    classes = [c for c in vars(errors).values() if isinstance(c, type)]
    defined = {c for c in classes if issubclass(c, errors.TunelineError)}
    assert defined == set(EXIT_CODES)


def test_other_exceptions_exit_1_with_their_type_and_exits_pass_through():
    result = CliRunner().invoke(_raising(ValueError("bad value")), [])
    assert result.exit_code == 1 and "ValueError: bad value" in result.output
    assert CliRunner().invoke(_raising(typer.Exit(3)), []).exit_code == 3
    usage = CliRunner().invoke(_raising(typer.BadParameter("no")), [])
    assert usage.exit_code == 2 and "Invalid value" in usage.output


def test_the_decorated_command_keeps_its_options_and_help():
    result = CliRunner().invoke(_raising(ValueError()), ["--help"])
    assert result.exit_code == 0 and "--name" in result.output and "A command that fails." in result.output


def test_command_modules_import_only_common_from_the_cli():
    folder = Path(_common.__file__).parent
    for path in folder.glob("*.py"):
        if path.name in ("__init__.py", "__main__.py", "app.py", "_common.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tuneline.cli"):
                assert node.module == "tuneline.cli._common", f"{path.name} imports {node.module}"
            if isinstance(node, ast.ImportFrom) and node.module == "tuneline" and node.level == 0:
                assert "cli" not in {a.name for a in node.names}, path.name
