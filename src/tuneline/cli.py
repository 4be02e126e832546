"""The ``tuneline`` command line: parse, load the config, call a stage, map errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
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
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        return typer.Exit(exc.exit_code)
    err.print(
        f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True
    )
    return typer.Exit(1)


def _load(config: Path, overrides: list[str] | None):
    from tuneline.config import load_config

    return load_config(config, overrides or [])


def _report(stage: str, event: str, seconds: float) -> None:
    if event == "note":
        err.print(f"[bold cyan]{escape(stage)}[/]")
    elif event == "start":
        err.print(f"[bold cyan]▶ {stage}[/]")
    else:
        err.print(f"[green]✓ {stage}[/] ({seconds:.1f} s)")


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


SUMMARY_ORDER = ("prior", "base", "few_shot", "embedding_logreg", "tuned")


def print_summary(summary: dict) -> None:
    """One column per model scored (prior, base, each baseline, tuned), the gate row naming what it
    compared against with the margin and its CI, and a red line for every model that beats the
    fine-tune."""
    data = summary.get("data") or {}
    counts = data.get("counts") or {}
    train = summary.get("train") or {}
    ev = summary.get("eval") or {}
    reg = summary.get("registry") or {}
    listed = ev.get("models") or [m for m in SUMMARY_ORDER if isinstance(ev.get(m), dict)]
    names = [m for m in SUMMARY_ORDER if m in listed] + [m for m in listed if m not in SUMMARY_ORDER]
    table = Table(title="tuneline run summary", show_header=True, header_style="bold")
    table.add_column("")
    for name in names:
        table.add_column(
            f"[bold blue]{name}[/]" if name == "tuned" else name, justify="right", overflow="fold"
        )
    if not names:  # evaluation has not run: one column for the run's own facts
        table.add_column("tuned", justify="right", overflow="fold")
    width = max(len(names), 1)

    def row(label: str, values: dict | None = None, text: str | None = None) -> None:
        if text is not None:  # a fact of the run, in the tuned column
            table.add_row(label, *([""] * (width - 1)), text)
        else:
            table.add_row(label, *(values.get(n, "") for n in names))

    def metric_row(label: str, key: str, spec: str = ".3f") -> None:
        row(label, {n: _fmt((ev.get(n) or {}).get(key), spec) for n in names})

    row("data (train/val/test)", text="/".join(str(counts.get(s, "-")) for s in ("train", "val", "test")))
    row("train final loss", text=_fmt(train.get("final_loss")))
    primary = ev.get("primary")
    if names:
        if primary:
            metric_row(f"[bold]{primary}[/] (gate metric, {ev.get('split', '-')})", primary)
        if ev.get("task") == "classification" and primary != "roc_auc":
            metric_row("roc_auc", "roc_auc")
        if primary != "accuracy":
            metric_row("accuracy", "accuracy")
        loss = {n: _fmt((ev.get(n) or {}).get("loss"), ".4f") for n in names if n in ("base", "tuned")}
        if any(v != "-" for v in loss.values()):
            row("answer-token loss (not the gate metric)", loss)
        perm = ev.get("permutation")
        if perm and perm.get("p_value") is not None:
            row("label-permutation p (chance)", text=f"{perm['p_value']:.4f}")
    gate = ev.get("gate")
    if gate is not None:
        c = gate.get("comparison") or {}
        against = gate.get("against", "-")
        how = " (strongest scored)" if gate.get("against_rule") == "strongest" else ""
        margin = ""
        if c.get("delta") is not None:
            ci = c.get("ci") or [None, None]
            ci_text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if None not in ci else "[CI undefined]"
            margin = f" Δ {c['delta']:+.3f} {ci_text}"
        verdict = "[green]passed[/]" if gate["passed"] else "[red]FAILED[/]"
        row(f"gate vs {against}{how}", text=f"{verdict}{margin}")
    row("registered model", text=f"{reg.get('model_name', '-')} v{reg.get('version', '-')}" if reg else "-")
    row("run directory", text=summary.get("run_dir", "-"))
    out.print(table)
    for beaten in ev.get("beaten_by") or []:
        out.print(f"[bold red]✗ {escape(beaten['sentence'])}[/]")


# ------------------------------------------------------------------------- pipeline verbs
@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a new run even if an unfinished one of this config exists.")
    ] = False,
) -> None:
    """Run prepare → train → evaluate → register; an unfinished run of the same config is resumed."""
    try:
        from tuneline.stages.pipeline import run_all

        cfg = _load(config, set_)
        rd = run_all(cfg, config, report=_report, new=new)
        print_summary(rd.summary())
        _check_gate(rd.summary())
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


def _stage_command(stage: str, config: Path, set_: list[str] | None, run_dir: Path | None) -> None:
    from tuneline.runs import STAGES, RunDir, is_main_process
    from tuneline.stages.pipeline import preflight, run_stage

    cfg = _load(config, set_)
    if stage == "prepare":
        preflight(cfg)
        rd = RunDir.open(run_dir) if run_dir else RunDir.create(cfg, config)
    else:
        previous = STAGES[STAGES.index(stage) - 1]
        rd = RunDir.open(run_dir) if run_dir else RunDir.latest(cfg, with_stage=previous)
    run_stage(stage, cfg, rd, report=_report)
    if not is_main_process():
        return  # a distributed worker: rank 0 reports
    err.print(f"run directory: {rd.path}")
    if stage == "register" or stage == "evaluate":
        print_summary(rd.summary())
    if stage == "evaluate":
        _check_gate(rd.summary())


def _check_gate(summary: dict) -> None:
    """Exit 7 (GateFailed) when the evaluation's gate failed: the evaluation itself is complete."""
    from tuneline.errors import GateFailed

    gate = (summary.get("eval") or {}).get("gate")
    if gate is not None and not gate["passed"]:
        failed = "; ".join(f"{r['rule']}: {r['detail']}" for r in gate["rules"] if not r["passed"])
        raise GateFailed(
            f"the tuned model did not pass the gate ({failed})",
            hint="see eval/report.html in the run directory; the registry will refuse to promote this model",
        )


@app.command()
def prepare(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Read, split and fingerprint the data into a new run directory."""
    try:
        _stage_command("prepare", config, set_, run_dir)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


@app.command()
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    nproc_per_node: Annotated[
        int, typer.Option("--nproc-per-node", help="Processes per node (torchrun).")
    ] = 1,
    nnodes: Annotated[int, typer.Option(help="Number of nodes (torchrun).")] = 1,
    node_rank: Annotated[int, typer.Option(help="This node's rank (multi-node).")] = 0,
    master_addr: Annotated[str, typer.Option(help="Rendezvous host (multi-node).")] = "127.0.0.1",
    master_port: Annotated[int, typer.Option(help="Rendezvous port.")] = 29500,
) -> None:
    """Fine-tune the base model on a prepared run directory (distributed with --nproc-per-node / --nnodes)."""
    from tuneline.training.distributed import in_torchrun, launch, torchrun_command

    try:
        if (nproc_per_node > 1 or nnodes > 1) and not in_torchrun():
            from tuneline.runs import RunDir

            cfg = _load(config, set_)
            rd = RunDir.open(run_dir) if run_dir else RunDir.latest(cfg, with_stage="prepare")
            cmd = torchrun_command(
                config,
                rd.path,
                set_ or [],
                nproc_per_node=nproc_per_node,
                nnodes=nnodes,
                node_rank=node_rank,
                master_addr=master_addr,
                master_port=master_port,
            )
            err.print(f"[bold cyan]torchrun[/] {escape(' '.join(cmd[2:]))}")
            code = launch(cmd)
            if code != 0:
                raise typer.Exit(code)
            err.print(f"run directory: {rd.path}")
            return
        _stage_command("train", config, set_, run_dir)
    except typer.Exit:
        raise
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


@app.command()
def plan(
    config: ConfigArg,
    set_: SetOpt = None,
    accelerator: Annotated[
        str | None,
        typer.Option(
            "--accelerator",
            help="H100-80GB, H200-141GB, A100-40GB, A100-80GB, L4-24GB, A10G-24GB, T4-16GB, V100-16GB, "
            "V100-32GB or cpu (this machine's RAM). Default: train.cost.accelerator.",
        ),
    ] = None,
    answer_tokens: Annotated[
        int | None,
        typer.Option(
            "--answer-tokens", help="Label tokens per sample (default: a quarter of data.max_seq_length)."
        ),
    ] = None,
    images_per_sample: Annotated[
        int | None, typer.Option("--images-per-sample", help="Images per sample (default: 1 for VLMs).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (bytes).")] = False,
) -> None:
    """Estimate peak training memory by component and the largest micro-batch that fits an accelerator."""
    try:
        from tuneline.training.plan import make_plan, plan_json, render

        cfg = _load(config, set_)
        result = make_plan(
            cfg, accelerator=accelerator, answer_tokens=answer_tokens, images_per_sample=images_per_sample
        )
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(plan_json(result), indent=2) + "\n")
    else:
        out.print(render(result))


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
def print_validation(summary: dict, report_html: Path | None) -> None:
    table = Table(title="data validation", header_style="bold")
    for col in ("check", "errors", "warnings", "info"):
        table.add_column(col, justify="left" if col == "check" else "right")
    for code, counts in summary["by_check"].items():
        table.add_row(code, *(str(counts[k] or "") for k in ("error", "warning", "info")))
    out.print(table)
    splits = summary.get("splits") or {}
    out.print(
        "records: {} in, {} kept ({}), {} with errors, {} dropped".format(
            summary["records_in"],
            summary["records_out"],
            ", ".join(f"{s} {v['records']}" for s, v in splits.items()),
            summary["errors"],
            summary["dropped"],
        )
    )
    if summary["passed"]:
        out.print(
            f"verdict: [green]passed[/] (error fraction {summary['error_fraction']:.2%}, "
            f"allowed {summary['max_error_fraction']:.2%})"
        )
    else:
        out.print(f"verdict: [bold red]failed[/]: {escape('; '.join(summary['failures']))}")
    if report_html:
        out.print(f"report: {report_html}")


@data_app.command("validate")
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
    try:
        from tuneline.stages.prepare import check

        cfg = _load(config, set_)
        folder = out_dir or cfg.run.output_dir / cfg.run.name / "data-validate"
        result, _, html = check(cfg, folder)
        print_validation(result.summary, html)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    if not result.passed:
        raise typer.Exit(3)


@data_app.command("prepare")
def data_prepare(config: ConfigArg, set_: SetOpt = None) -> None:
    """Validate, split and write (or reuse) the content-addressed snapshot that training reads."""
    try:
        from tuneline.runs import workspace
        from tuneline.stages.prepare import build_snapshot

        cfg = _load(config, set_)
        folder = workspace() / "reports" / cfg.run.name
        result, snap = build_snapshot(cfg, folder)
        print_validation(result.summary, snap.path / "data_report.html")
        out.print(
            f"snapshot: {snap.path} ({'reused' if snap.reused else 'new'}), fingerprint {snap.fingerprint}"
        )
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


@data_app.command("forget")
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
    try:
        from tuneline.data.forget import forget

        cfg = _load(config, set_)
        done = forget(cfg, record or [], group or [])
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
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

    try:
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
            path = dermoscopy.generate(
                out_dir,
                n_patients=n or (150 if defects else dermoscopy.N_PATIENTS),
                prevalence=dermoscopy.PREVALENCE if prevalence is None else prevalence,
                seed=seed,
                defects=defects,
                **({"size": size} if size else {}),
            )
            if defects:
                _write_defects_config(out_dir)
        else:
            raise TunelineError(
                f"unknown synthetic dataset {kind!r}", hint="choose shapes, dermoscopy, digits or reviews"
            )
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
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


# ------------------------------------------------------------------------- sweep
@app.command()
def sweep(
    config: Annotated[
        str,
        typer.Argument(
            help="The YAML config with a sweep: section, or `promote CONFIG`.", show_default=False
        ),
    ],
    promote_config: Annotated[
        Path | None, typer.Argument(help="With promote: the config.", show_default=False)
    ] = None,
    set_: SetOpt = None,
    worker: Annotated[
        bool, typer.Option("--worker", help="Only run trials of the shared study (no frontier at the end).")
    ] = False,
) -> None:
    """Run the sweep's trials (Optuna) and write sweep/frontier.json and report.html with a recommendation;
    `tuneline sweep promote CONFIG` registers the recommended trial and promotes it if its gate passed."""
    try:
        from tuneline.stages import sweep as sweep_stage

        if config == "promote":
            if promote_config is None:
                raise typer.BadParameter("tuneline sweep promote CONFIG")
            reg, change = sweep_stage.promote(_load(promote_config, set_), report=_report)
            out.print(
                f"{escape(reg.model_name)}: version {reg.version} registered; champion → {change.champion}"
            )
            return
        result = sweep_stage.run(_load(Path(config), set_), Path(config), worker=worker, report=_report)
    except typer.BadParameter:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    if result.frontier is None:
        err.print(f"worker done: ran {len(result.ran)} trial(s)")
        return
    f = result.frontier
    table = Table(title=f"sweep {f['study']}: {f['metric']} vs {f['cost_metric']}", header_style="bold")
    for col in (
        "trial",
        "state",
        f["metric"],
        "95% CI",
        "vs best",
        f["cost_metric"],
        "Pareto",
        "non-inferior",
    ):
        table.add_column(col)
    for t in f["trials"]:
        vs = t["vs_best"] or {}
        table.add_row(
            t["key"] + (" (recommended)" if t["key"] == f["recommended"] else ""),
            t["state"],
            _fmt(t["metric"]),
            f"[{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}]",
            _fmt(vs.get("delta"), "+.4f"),
            _fmt(t.get(f["cost_metric"]), ".6g"),
            "*" if t["pareto"] else "",
            {True: "yes", False: "no"}.get(t["non_inferior"], "-"),
        )
    out.print(table)
    err.print(f"frontier: {result.root / 'frontier.json'}\nreport: {result.root / 'report.html'}")


# serve, serve report, monitor drift / profile (tuneline.cli_serve)
__import__("tuneline.cli_serve", fromlist=["register"]).register(app)

from tuneline.cli_models import export_command, models_app  # noqa: E402 - registry commands

app.add_typer(models_app, name="models")
app.command("export")(export_command)


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


from tuneline import cli_launch  # noqa: E402  (launch, jobs, node: their own module)

app.command()(cli_launch.launch)
app.command(hidden=True)(cli_launch.node)
app.add_typer(cli_launch.jobs_app, name="jobs")


def main() -> None:
    _quiet_libraries()
    app()


if __name__ == "__main__":
    main()
