"""``tuneline data validate | prepare | forget | synth``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuneline.cli._common import ConfigArg, SetOpt, cli_errors, load, out
from tuneline.errors import TunelineError
from tuneline.sections import DataSummary

data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)


def print_validation(summary: DataSummary | Mapping[str, Any], report_html: Path | None) -> None:
    """The validation verdict (data_report.json's ``summary``, typed or as the dict it holds)."""
    if not isinstance(summary, DataSummary):
        summary = DataSummary.model_validate(summary)
    table = Table(title="data validation", header_style="bold")
    for col in ("check", "errors", "warnings", "info"):
        table.add_column(col, justify="left" if col == "check" else "right")
    for code, counts in (summary.by_check or {}).items():
        table.add_row(code, *(str(n or "") for n in (counts.error, counts.warning, counts.info)))
    out.print(table)
    out.print(
        "records: {} in, {} kept ({}), {} with errors, {} dropped".format(
            summary.records_in,
            summary.records_out,
            ", ".join(f"{s} {v.records}" for s, v in summary.splits.items()),
            summary.errors,
            summary.dropped,
        )
    )
    if summary.passed:
        out.print(
            f"verdict: [green]passed[/] (error fraction {summary.error_fraction or 0.0:.2%}, "
            f"allowed {summary.max_error_fraction or 0.0:.2%})"
        )
    else:
        out.print(f"verdict: [bold red]failed[/]: {escape('; '.join(summary.failures))}")
    if report_html:
        out.print(f"report: {report_html}")


@data_app.command("validate")
@cli_errors
def data_validate(
    config: ConfigArg,
    set_: SetOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Folder for data_report.json/.html (default: <output_dir>/<name>/data-validate)."
        ),
    ] = None,
) -> None:
    """Run every data check; write data_report.json and .html; exit 3 when validation fails."""
    from tuneline.stages.prepare import check

    cfg = load(config, set_)
    folder = out_dir or cfg.run.output_dir / cfg.run.name / "data-validate"
    result, _, html = check(cfg, folder)
    print_validation(result.summary, html)
    if not result.passed:
        raise typer.Exit(3)


@data_app.command("prepare")
@cli_errors
def data_prepare(config: ConfigArg, set_: SetOpt = None) -> None:
    """Validate, split and write (or reuse) the content-addressed snapshot that training reads."""
    from tuneline.runs import workspace
    from tuneline.stages.prepare import build_snapshot

    cfg = load(config, set_)
    folder = workspace() / "reports" / cfg.run.name
    result, snap = build_snapshot(cfg, folder)
    print_validation(result.summary, snap.path / "data_report.html")
    out.print(f"snapshot: {snap.path} ({'reused' if snap.reused else 'new'}), fingerprint {snap.fingerprint}")


@data_app.command("forget")
@cli_errors
def data_forget(
    config: ConfigArg,
    record: Annotated[
        list[str] | None, typer.Option("--record", help="Id of a record to forget (repeatable).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group (e.g. a patient id) to forget (repeatable).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Write a new dataset version without these records, their groups and their near-duplicates; every
    later prepare of the same sources leaves them out."""
    from tuneline.stages.forget import forget

    cfg = load(config, set_)
    done = forget(cfg, record or [], group or [])
    req = done.request
    copies = f" ({len(req.duplicates)} as copies: {', '.join(req.duplicates)})" if req.duplicates else ""
    out.print(f"forgotten: {len(req.removed)} record(s){escape(copies)}", soft_wrap=True)
    out.print(f"new snapshot: {done.snapshot_path}, fingerprint {req.snapshot}")
    if done.previous:
        out.print(
            f"held by {len(done.previous)} earlier snapshot(s): {', '.join(fp[:16] for fp in done.previous)}"
        )
    named = " ".join([f"--record {r}" for r in req.records] + [f"--group {g}" for g in req.groups])
    out.print(f"registered versions trained on them: tuneline models affected {escape(named)}")


@data_app.command("synth")
@cli_errors
def data_synth(
    kind: Annotated[str, typer.Argument(help="Dataset to generate: shapes, dermoscopy, digits or reviews.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write into.")],
    n: Annotated[
        int | None,
        typer.Option(
            help="Records (shapes, digits, reviews) or patients (dermoscopy: 1200, with --defects 150)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    prevalence: Annotated[
        float | None, typer.Option(help="dermoscopy: fraction of malignant lesions (default 0.05).")
    ] = None,
    size: Annotated[int | None, typer.Option(help="Image side in pixels.")] = None,
    question: Annotated[
        str,
        typer.Option(
            help="shapes: question kind(s), comma-separated, taken in turn: left (two shapes, the colour "
            "of the one on the left: the quickstart's task), colour or shape (one shape)."
        ),
    ] = "left",
    defects: Annotated[
        bool,
        typer.Option(
            "--defects", help="dermoscopy: plant every kind of data defect, with the truth in defects.json."
        ),
    ] = False,
) -> None:
    """Generate a synthetic dataset (deterministic for a seed)."""
    from tuneline_synth import dermoscopy, digits, reviews, shapes

    if kind == "shapes":
        kinds = tuple(q.strip() for q in question.split(",") if q.strip())
        path = shapes.generate(
            out_dir, n=n or 800, seed=seed, questions=kinds, **({"size": size} if size else {})
        )
    elif kind == "digits":
        path = digits.generate(out_dir, seed=seed, n=n, **({"size": size} if size else {}))
    elif kind == "reviews":
        path = reviews.generate(out_dir, n=n or 2000, seed=seed)
    elif kind == "dermoscopy":
        sized: dict[str, Any] = {"size": size} if size else {}  # the generator's own default otherwise
        path = dermoscopy.generate(
            out_dir,
            n_patients=n or (150 if defects else dermoscopy.N_PATIENTS),
            prevalence=dermoscopy.PREVALENCE if prevalence is None else prevalence,
            seed=seed,
            defects=defects,
            **sized,
        )
        if defects:
            _write_defects_config(out_dir)
    else:
        raise TunelineError(
            f"unknown synthetic dataset {kind!r}", hint="choose shapes, dermoscopy, digits or reviews"
        )
    out.print(f"wrote {path}")
    if defects:
        out.print(
            f"planted defects: {out_dir / 'defects.json'}; check them with "
            f"`tuneline data validate {out_dir / 'tuneline.yaml'}`"
        )


def _write_defects_config(folder: Path) -> None:
    """A config beside planted-defect data: its user-supplied split and both sources."""
    (folder / "tuneline.yaml").write_text(DEFECTS_CONFIG)


DEFECTS_CONFIG = """\
# Written by `tuneline data synth dermoscopy --defects`: validates the planted defects.
run: {name: dermoscopy-defects}
model: {base: "tiny:gemma3"}
data:
  sources:
    - type: manifest
      path: train.csv
      image_dir: jpeg/train
      image_extension: .jpg
      label_column: target
      labels: {"0": benign, "1": malignant}
      group_column: patient_id
      split_column: split
      prompt: "Is this lesion benign or malignant?"
    - type: jsonl
      path: extra.jsonl
  split: {strategy: predefined}
  max_seq_length: 256
"""
