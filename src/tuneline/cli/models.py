"""``tuneline models ...`` and ``tuneline export``: the registry from the command line.

    tuneline models register RUN_DIR
    tuneline models promote NAME [VERSION] [--force --reason TEXT]
    tuneline models rollback NAME
    tuneline models list NAME
    tuneline models show NAME[@ALIAS|/VERSION]
    tuneline models affected --record ID | --group G
    tuneline export NAME@ALIAS --format merged|adapter [--dtype bf16|fp16|fp32] OUT

Each takes ``--tracking-uri`` (default: the SQLite store under .tuneline/ in the working directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuneline.cli._common import cli_errors, out

models_app = typer.Typer(
    help="The model registry: register, promote, roll back, list and show versions.", no_args_is_help=True
)

UriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (sqlite:///..., http://host:5000). Default: .tuneline/mlflow.db here.",
    ),
]
NameArg = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]


def _client(uri: str | None, *, must_exist: bool = True):
    from tuneline.registry import store

    return store.client(uri, must_exist=must_exist)


def _when(ms: int | None) -> str:
    return "-" if not ms else time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def _gate(tags: dict[str, str]) -> str:
    g = tags.get("tuneline.gate_passed")
    forced = " (forced)" if tags.get("tuneline.forced_promotion") == "true" else ""
    return {"true": "[green]passed[/]", "false": "[red]FAILED[/]"}.get(g or "", "-") + forced


# ------------------------------------------------------------------------- register
@models_app.command("register")
@cli_errors
def register(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose evaluation completed.")],
    tracking_uri: UriOpt = None,
) -> None:
    """Register a run's adapter as a new version (alias challenger); a run registers only once."""
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    rd = RunDir.open(run_dir)
    overrides = [f"registry.tracking_uri={tracking_uri}"] if tracking_uri else []
    cfg = load_config(rd.config_file, overrides)
    reg = run_stage("register", cfg, rd)
    c = _client(tracking_uri or cfg.registry.tracking_uri)
    aliases = c.get_model_version(reg.model_name, reg.version).aliases
    shown = f" ({', '.join(sorted(aliases))})" if aliases else ""
    out.print(f"registered [bold]{escape(reg.model_name)}[/] version {reg.version}{escape(shown)}")


# ------------------------------------------------------------------------- promote / rollback
@models_app.command("promote")
@cli_errors
def promote(
    name: NameArg,
    version: Annotated[
        str | None, typer.Argument(help="Version to promote (default: the challenger).", show_default=False)
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even though the gate did not pass.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required with --force); recorded on the version.")
    ] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Move the champion alias to VERSION, only if its evaluation gate passed (or --force --reason)."""
    from tuneline.registry import aliases

    change = aliases.promote(_client(tracking_uri), name, version, force=force, reason=reason)
    if change.action == "unchanged":
        out.print(f"{escape(name)}: version {change.champion} is already the champion")
        return
    forced = f" [yellow](forced: {escape(change.reason or '')})[/]" if change.forced else ""
    prev = change.previous_champion or "none"
    out.print(f"{escape(name)}: champion → version {change.champion} (previous-champion: {prev}){forced}")


@models_app.command("rollback")
@cli_errors
def rollback(
    name: NameArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; recorded on the version.")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Move the champion back to the previous champion; repeat to walk further back."""
    from tuneline.registry import aliases

    change = aliases.rollback(_client(tracking_uri), name, reason=reason)
    prev = change.previous_champion or "none"
    out.print(f"{escape(name)}: champion → version {change.champion} (previous-champion: {prev})")


# ------------------------------------------------------------------------- list / show
@models_app.command("list")
@cli_errors
def list_versions(name: NameArg, tracking_uri: UriOpt = None) -> None:
    """A table of versions: aliases, gate, headline metrics, data fingerprint, creation time."""
    from tuneline.registry import aliases
    from tuneline.registry.lineage import metrics_from_tags

    c = _client(tracking_uri)
    state = aliases.read_state(c, name)
    versions = sorted(c.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    by_version: dict[str, list[str]] = {}
    for alias, v in state.aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    table = Table(title=f"{name}: registered versions", header_style="bold")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("gate", no_wrap=True)
    table.add_column("metrics (tuned)", overflow="fold")
    table.add_column("data", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for mv in versions:
        tags = dict(mv.tags or {})
        metrics = metrics_from_tags(tags)
        primary = tags.get("tuneline.gate_primary")
        keys = ([primary] if primary in metrics else []) + [k for k in metrics if k != primary][:1]
        table.add_row(
            str(mv.version),
            "\n".join(sorted(by_version.get(str(mv.version), []))) or "-",
            _gate(tags),
            "\n".join(f"{k} {metrics[k]:.3f}" for k in keys) or "-",
            tags.get("tuneline.data_fingerprint", "-")[:12],
            _when(mv.creation_timestamp),
        )
    out.print(table)
    if state.history:
        chain = " → ".join(h["version"] for h in state.history)
        out.print(f"champion history (oldest first): {chain}")


@models_app.command("affected")
@cli_errors
def affected_versions(
    record: Annotated[list[str] | None, typer.Option("--record", help="Record id (repeatable).")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Group (repeatable).")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Every registered version whose data snapshot held the records (retrain these, archive the old)."""
    from tuneline.data.forget import affected

    found = affected(_client(tracking_uri), record or [], group or [])
    if not found:
        out.print("no registered version was made from a snapshot that held them")
        return
    table = Table(title="registered versions whose data held the records", header_style="bold")
    for col in ("model", "version", "aliases", "held (record: split)", "data snapshot", "run"):
        table.add_column(col, overflow="fold")
    for a in found:
        table.add_row(
            a.model,
            a.version,
            ", ".join(a.aliases) or "-",
            "\n".join(f"{k}: {v}" for k, v in sorted(a.held.items())),
            a.fingerprint[:16],
            a.run_id or "-",
        )
    out.print(table)
    trained = sum(a.trained_on for a in found)
    out.print(f"{len(found)} version(s), {trained} trained on them (train split)")


@models_app.command("show")
@cli_errors
def show(
    ref: Annotated[
        str, typer.Argument(help="NAME (its champion), NAME@ALIAS or NAME/VERSION.", show_default=False)
    ],
    tracking_uri: UriOpt = None,
    card: Annotated[bool, typer.Option("--card/--no-card", help="Print the model card.")] = True,
) -> None:
    """The lineage of a version (data snapshot, config, base model, code, gate) and its model card."""
    from tuneline.registry.export import card_text
    from tuneline.registry.lineage import lineage_rows, metrics_from_tags
    from tuneline.registry.resolve import model_version

    c = _client(tracking_uri)
    mv = model_version(c, ref)
    text = card_text(c, mv.run_id) if card else None
    tags = dict(mv.tags or {})
    aliases = ", ".join(sorted(mv.aliases or [])) or "-"
    out.print(f"[bold]{escape(mv.name)}[/] version {mv.version}  aliases: {escape(aliases)}", soft_wrap=True)
    rows = [
        ("created", _when(mv.creation_timestamp)),
        ("source", mv.source),
        ("mlflow run", mv.run_id or "-"),
        *lineage_rows(tags),
    ]
    if mv.run_id:  # the registry's own copies of what the version was made from
        rows.insert(3, ("config (registered copy)", f"runs:/{mv.run_id}/config.resolved.yaml"))
        rows.insert(4, ("data manifest (registered copy)", f"runs:/{mv.run_id}/manifest.json"))
    for key in ("promoted_by", "promoted_at", "forced_by", "forced_at", "forced_reason", "rolled_back_by"):
        if f"tuneline.{key}" in tags:
            rows.append((key.replace("_", " "), tags[f"tuneline.{key}"]))
    out.print("\n[bold]lineage[/]")
    for label, value in rows:
        out.print(f"  {label}: {escape(str(value))}", soft_wrap=True, highlight=False)
    metrics = metrics_from_tags(tags)
    if metrics:
        text_metrics = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        out.print(f"  metrics: {text_metrics}", highlight=False, soft_wrap=True)
    if text:
        out.print("\n[bold]model card[/]")
        out.print(text, markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------- export
@cli_errors
def export_command(
    ref: Annotated[
        str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS.", metavar="REF")
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="Folder to write (must not exist, or be empty).", metavar="OUT")
    ],
    fmt: Annotated[
        str,
        typer.Option("--format", help="merged (base + adapter, one model) or adapter (adapter + pointer)."),
    ] = "merged",
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="bf16, fp16 or fp32 (default: fp32 merged, as trained adapter)."),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Load pickled (.bin) weights; only for files you trust."),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT folder.")] = False,
    tracking_uri: UriOpt = None,
) -> None:
    """Export a registered version to a folder that from_pretrained and vLLM load without tuneline."""
    from tuneline.registry.export import export

    path = export(
        ref,
        out_dir,
        fmt=fmt,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        tracking_uri=tracking_uri,
        allow_pickle=allow_pickle,
        overwrite=overwrite,
    )
    out.print(f"exported {escape(ref)} ({fmt}) to {escape(str(path))}")
