"""``tuneline config validate | show | schema``."""

from __future__ import annotations

import json
import sys

import typer

from tuneline.cli._common import ConfigArg, SetOpt, cli_errors, load, out

config_app = typer.Typer(help="Validate, show and describe configurations.", no_args_is_help=True)


@config_app.command("validate")
@cli_errors
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config; print every problem (exit 2) or 'valid'."""
    load(config, set_)
    out.print(f"[green]valid:[/] {config}")


@config_app.command("show")
@cli_errors
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config (extends merged, overrides applied, secrets as written)."""
    from tuneline.config import to_yaml

    cfg = load(config, set_)
    sys.stdout.write(to_yaml(cfg))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config, every field described."""
    from tuneline.config import Config

    sys.stdout.write(json.dumps(Config.model_json_schema(), indent=2) + "\n")
