"""CLI commands of the closed loop (tuneline/loop/).

tuneline loop collect CONFIG [--since UNIX_TIME]          the candidate pool from the serving log
tuneline loop select CONFIG [--budget N] [--strategy S]   the requests to label; Label Studio/CSV/JSONL tasks
tuneline loop import CONFIG FILE                          completed labels (all or nothing, file:line errors)
tuneline loop retrain CONFIG                              new dataset version -> challenger gated vs champion
tuneline loop decide CONFIG [--dry-run]                   promote / roll back / wait on the online A/B report
tuneline loop run CONFIG                                  all of the above, idempotently (for a scheduler)
tuneline loop schedule CONFIG [--cron EXPR] [--out DIR]   CronJob, Cloud Scheduler job, crontab, alert rule
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneline.cli._common import cli_errors, load, out

loop_app = typer.Typer(
    help="The closed loop: production traffic and feedback become the next dataset version.",
    no_args_is_help=True,
)

Config_ = Annotated[Path, typer.Argument(help="The YAML config.")]
Set_ = Annotated[list[str] | None, typer.Option("--set", help="Override a key (repeatable).")]


def _print(obj) -> None:
    out.print_json(json.dumps(obj, default=str))


@loop_app.command("collect")
@cli_errors
def collect(
    config: Config_,
    set_: Set_ = None,
    since: Annotated[float | None, typer.Option(help="Only requests after this Unix time.")] = None,
) -> None:
    """Build this round's candidate pool from the A/B log and the kept inputs."""
    from tuneline.loop import cycle

    cfg = load(config, set_)
    st = cycle.state_of(cfg)
    pool = cycle.do_collect(cfg, st, since)
    out.print(f"{len(pool)} candidates in {st.round_dir / 'pool.jsonl'}")


@loop_app.command("select")
@cli_errors
def select(
    config: Config_,
    set_: Set_ = None,
    budget: Annotated[int | None, typer.Option(help="Requests to select (default: loop.budget).")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="uncertainty | margin | entropy | disagreement | drift | random (default: loop.strategy)."
        ),
    ] = None,
) -> None:
    """Pick the requests worth labelling and export the labelling task."""
    from tuneline.loop import cycle

    cfg = load(config, set_)
    _print(cycle.do_select(cfg, cycle.state_of(cfg), budget, strategy))


@loop_app.command("import")
@cli_errors
def import_(
    config: Config_,
    file: Annotated[
        Path, typer.Argument(help="Label Studio JSON export, CSV or JSONL with response_id, label.")
    ],
    set_: Set_ = None,
) -> None:
    """Read completed labels back; any bad row fails the whole import."""
    from tuneline.loop import cycle

    cfg = load(config, set_)
    n = cycle.do_import(cfg, cycle.state_of(cfg), file)
    out.print(f"imported {n} labels")


@loop_app.command("retrain")
@cli_errors
def retrain(config: Config_, set_: Set_ = None) -> None:
    """Champion snapshot + new labels -> a new dataset version and a challenger gated against the champion."""
    from tuneline.loop import cycle

    cfg = load(config, set_)
    _print(cycle.do_retrain(cfg, cycle.state_of(cfg)))


@loop_app.command("decide")
@cli_errors
def decide(
    config: Config_,
    set_: Set_ = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what it would do; change nothing.")] = False,
) -> None:
    """Promote, roll back or wait on the online A/B report of the canary; prints why."""
    from tuneline.loop.decide import decide as run_decide

    d = run_decide(load(config, set_), apply=not dry_run)
    out.print(f"{d.action}" + (f" version {d.version}" if d.version else "") + f": {d.reason}")


@loop_app.command("run")
@cli_errors
def run(config: Config_, set_: Set_ = None) -> None:
    """collect -> select -> (labels?) -> retrain -> canary -> decide, skipping finished steps."""
    from tuneline.loop import cycle

    out.print(str(cycle.run(load(config, set_))))


@loop_app.command("schedule")
@cli_errors
def schedule(
    config: Config_,
    set_: Set_ = None,
    cron: Annotated[str, typer.Option(help="Cron expression (UTC).")] = "0 3 * * *",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the rendered files.")] = Path(
        "loop-schedule"
    ),
) -> None:
    """Render the CronJob, the Cloud Scheduler job, a crontab line and the drift alert rule."""
    from tuneline.loop.schedule import render_all

    _print(render_all(load(config, set_), str(config), out_dir, cron))
