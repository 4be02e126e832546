"""The ``tuneline`` command line: parse, load the config, call a stage, map errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuneline.errors import TunelineError

app = typer.Typer(
    help="Fine-tune, evaluate, register and serve models from one YAML config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Validate, show and describe configurations.", no_args_is_help=True)
data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

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


def _fail(exc: BaseException) -> typer.Exit:
    if isinstance(exc, TunelineError):
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False, markup=True, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
        return typer.Exit(exc.exit_code)
    err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _load(config: Path, overrides: list[str] | None):
    from tuneline.config import load_config

    return load_config(config, overrides or [])


def _report(stage: str, event: str, seconds: float) -> None:
    if event == "start":
        err.print(f"[bold cyan]▶ {stage}[/]")
    else:
        err.print(f"[green]✓ {stage}[/] ({seconds:.1f} s)")


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def print_summary(summary: dict) -> None:
    table = Table(title="tuneline run summary", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("tuned", justify="right", overflow="fold")
    data = summary.get("data") or {}
    counts = data.get("counts") or {}
    train = summary.get("train") or {}
    ev = summary.get("eval") or {}
    base, tuned = ev.get("base") or {}, ev.get("tuned") or {}
    reg = summary.get("registry") or {}
    table.add_row(
        "data (train/val/test)", "", "/".join(str(counts.get(s, "-")) for s in ("train", "val", "test"))
    )
    table.add_row("train final loss", "", _fmt(train.get("final_loss")))
    table.add_row(f"eval loss ({ev.get('split', '-')})", _fmt(base.get("loss")), _fmt(tuned.get("loss")))
    table.add_row("eval accuracy", _fmt(base.get("accuracy"), ".3f"), _fmt(tuned.get("accuracy"), ".3f"))
    table.add_row(
        "registered model", "", f"{reg.get('model_name', '-')} v{reg.get('version', '-')}" if reg else "-"
    )
    table.add_row("run directory", "", summary.get("run_dir", "-"))
    out.print(table)


# ------------------------------------------------------------------------- pipeline verbs
@app.command()
def run(config: ConfigArg, set_: SetOpt = None) -> None:
    """Run prepare → train → evaluate → register in a new run directory."""
    try:
        from tuneline.stages.pipeline import run_all

        cfg = _load(config, set_)
        rd = run_all(cfg, config, report=_report)
        print_summary(rd.summary())
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


def _stage_command(stage: str, config: Path, set_: list[str] | None, run_dir: Path | None) -> None:
    from tuneline.runs import STAGES, RunDir
    from tuneline.stages.pipeline import preflight, run_stage

    cfg = _load(config, set_)
    if stage == "prepare":
        preflight(cfg)
        rd = RunDir.open(run_dir) if run_dir else RunDir.create(cfg, config)
    else:
        previous = STAGES[STAGES.index(stage) - 1]
        rd = RunDir.open(run_dir) if run_dir else RunDir.latest(cfg, with_stage=previous)
    run_stage(stage, cfg, rd, report=_report)
    err.print(f"run directory: {rd.path}")
    if stage == "register" or stage == "evaluate":
        print_summary(rd.summary())


@app.command()
def prepare(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Read, split and fingerprint the data into a new run directory."""
    try:
        _stage_command("prepare", config, set_, run_dir)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Fine-tune the base model with LoRA on a prepared run directory."""
    try:
        _stage_command("train", config, set_, run_dir)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


@app.command()
def evaluate(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Score the base and tuned models side by side on the held-out split."""
    try:
        _stage_command("evaluate", config, set_, run_dir)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


@app.command()
def register(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Log the run to MLflow and register the adapter as a new model version."""
    try:
        _stage_command("register", config, set_, run_dir)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


# ------------------------------------------------------------------------- config
@config_app.command("validate")
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config; print every problem (exit 2) or 'valid'."""
    try:
        _load(config, set_)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    out.print(f"[green]valid:[/] {config}")


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config (extends merged, overrides applied, secrets as written)."""
    from tuneline.config import to_yaml

    try:
        cfg = _load(config, set_)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    sys.stdout.write(to_yaml(cfg))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config, every field described."""
    from tuneline.config import Config

    sys.stdout.write(json.dumps(Config.model_json_schema(), indent=2) + "\n")


# ------------------------------------------------------------------------- data
@data_app.command("synth")
def data_synth(
    kind: Annotated[str, typer.Argument(help="Dataset to generate: shapes.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write into.")],
    n: Annotated[int, typer.Option(help="Number of records.")] = 800,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a synthetic dataset (deterministic for a seed)."""
    from tuneline.data.synth import shapes

    generators = {"shapes": shapes.generate}
    if kind not in generators:
        raise _fail(
            TunelineError(
                f"unknown synthetic dataset {kind!r}", hint=f"choose one of {', '.join(generators)}"
            )
        )
    path = generators[kind](out_dir, n=n, seed=seed)
    out.print(f"wrote {n} records to {path}")


def _quiet_libraries() -> None:
    """Our own progress bars and summaries replace the libraries' chatter on the console."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*")
    for name in ("mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    _quiet_libraries()
    app()


if __name__ == "__main__":
    main()
