"""The ``tuneline`` typer app: the command modules' commands and groups, in the order ``--help`` lists
them, and the console entry point."""

from __future__ import annotations

import os

import typer

from tuneline.cli import config, data, launch, loop, models, pipeline, serve

app = typer.Typer(
    help="Fine-tune, evaluate, register and serve models from one YAML config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config.config_app, name="config")
app.add_typer(data.data_app, name="data")
for command in (
    pipeline.run,
    pipeline.prepare,
    pipeline.train,
    pipeline.evaluate,
    pipeline.register,
    pipeline.plan,
    pipeline.sweep,
):
    app.command()(command)
app.command("serve")(serve.serve)
app.add_typer(serve.monitor_app, name="monitor")
app.add_typer(models.models_app, name="models")
app.command("export")(models.export_command)
app.command()(launch.launch)
app.command(hidden=True)(launch.node)
app.add_typer(launch.jobs_app, name="jobs")
app.add_typer(loop.loop_app, name="loop")


def _quiet_libraries() -> None:
    """Our own progress bars and summaries replace the libraries' chatter on the console."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*")
    for name in ("mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # bitsandbytes (imported by peft) logs a notice about an optional kernels package on CPU machines.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    _quiet_libraries()
    app()
