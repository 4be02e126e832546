"""What every command module of the CLI shares: the consoles, the common arguments, config loading,
stage progress lines, and the one place where an exception becomes a message and an exit code.

Command modules import this module and lower layers only, never each other; ``tuneline.cli.app``
assembles them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tuneline.errors import TunelineError

out = Console()
err = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a key: --set train.max_steps=50 (repeatable).")
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Run directory of the earlier stage "
        "(default: the newest run of this config's name that has it).",
    ),
]


def exit_code(exc: BaseException) -> int:
    """The exit code of an error: each TunelineError subclass names its own in tuneline.errors
    (ConfigError 2, DataError 3, ModelError 4, RegistryError 5, RunDirError 6, GateFailed 7,
    DriftAlert 8, OfflineViolation 9, SweepError 10, TrainingInterrupted 75); anything else is 1."""
    return exc.exit_code if isinstance(exc, TunelineError) else 1


def fail(exc: BaseException) -> typer.Exit:
    """Print the error (and its hint) on stderr; return the Exit carrying its exit code."""
    if isinstance(exc, TunelineError):
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
    else:
        err.print(
            f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
    return typer.Exit(exit_code(exc))


P = ParamSpec("P")
R = TypeVar("R")


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: an exception it raises is printed and becomes its exit code (``fail``).

    typer's own exits, aborts and usage errors (BadParameter) pass through unchanged."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # exits, usage errors
            raise
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message + code
            raise fail(exc) from exc

    return wrapper


def load(config: Path, overrides: list[str] | None):
    from tuneline.config import load_config

    return load_config(config, overrides or [])


def report(stage: str, event: str, seconds: float) -> None:
    if event == "note":
        err.print(f"[bold cyan]{escape(stage)}[/]")
    elif event == "start":
        err.print(f"[bold cyan]▶ {stage}[/]")
    else:
        err.print(f"[green]✓ {stage}[/] ({seconds:.1f} s)")


def fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)
