"""Pipeline verbs: ``run``, ``prepare``, ``train``, ``evaluate``, ``register``, ``plan``, ``sweep``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict
from rich.markup import escape
from rich.table import Table

from tuneline.cli._common import ConfigArg, RunDirOpt, SetOpt, cli_errors, err, fmt, load, out, report
from tuneline.runs import Summary

SUMMARY_ORDER = ("prior", "base", "few_shot", "embedding_logreg", "tuned")


def print_summary(summary: Summary | Mapping[str, Any]) -> None:
    """One column per model scored (prior, base, each baseline, tuned), the gate row naming what it
    compared against with the margin and its CI, and a red line for every model that beats the
    fine-tune. ``summary`` is the run's summary.json (typed, or as the dict it holds)."""
    from tuneline.sections import Comparison, DataSection, EvalSection, TrainSection

    if not isinstance(summary, Summary):
        summary = Summary.model_validate(summary)
    counts = (summary.data or DataSection()).counts
    train = summary.train or TrainSection()
    ev = summary.eval or EvalSection()
    reg = summary.registry
    listed = ev.models or [m for m in SUMMARY_ORDER if m in ev.scored()]
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

    def row(label: str, values: dict[str, str] | None = None, text: str | None = None) -> None:
        if text is not None:  # a fact of the run, in the tuned column
            table.add_row(label, *([""] * (width - 1)), text)
        else:
            table.add_row(label, *((values or {}).get(n, "") for n in names))

    def metric_row(label: str, key: str, spec: str = ".3f") -> None:
        row(label, {n: fmt(ev.scores(n).get(key), spec) for n in names})

    row("data (train/val/test)", text="/".join(str(counts.get(s, "-")) for s in ("train", "val", "test")))
    row("train final loss", text=fmt(train.final_loss))
    primary = ev.primary
    if names:
        if primary:
            metric_row(f"[bold]{primary}[/] (gate metric, {ev.split or '-'})", primary)
        if ev.task == "classification" and primary != "roc_auc":
            metric_row("roc_auc", "roc_auc")
        if primary != "accuracy":
            metric_row("accuracy", "accuracy")
        loss = {n: fmt(ev.scores(n).get("loss"), ".4f") for n in names if n in ("base", "tuned")}
        if any(v != "-" for v in loss.values()):
            row("answer-token loss (not the gate metric)", loss)
        perm = ev.permutation
        if perm and perm.p_value is not None:
            row("label-permutation p (chance)", text=f"{perm.p_value:.4f}")
    gate = ev.gate
    if gate is not None:
        c = gate.comparison or Comparison()
        against = gate.against or "-"
        how = " (strongest scored)" if gate.against_rule == "strongest" else ""
        margin = ""
        if c.delta is not None:
            ci = c.ci or [None, None]
            ci_text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if None not in ci else "[CI undefined]"
            margin = f" Δ {c.delta:+.3f} {ci_text}"
        verdict = "[green]passed[/]" if gate.passed else "[red]FAILED[/]"
        row(f"gate vs {against}{how}", text=f"{verdict}{margin}")
    row("registered model", text=f"{reg.model_name or '-'} v{reg.version or '-'}" if reg else "-")
    row("run directory", text=summary.run_dir or "-")
    out.print(table)
    for beaten in ev.beaten_by:
        out.print(f"[bold red]✗ {escape(beaten.sentence)}[/]")


class _VsBest(BaseModel):
    model_config = ConfigDict(extra="allow")
    delta: float | None = None


class _Trial(BaseModel):
    """One row of sweep/frontier.json (tuneline.sweep.frontier.build); its costs sit under their names."""

    model_config = ConfigDict(extra="allow")
    key: str
    state: str = "-"
    metric: float | None = None
    ci: list[float | None] = []
    pareto: bool = False
    non_inferior: bool | None = None
    vs_best: _VsBest | None = None


class _Frontier(BaseModel):
    model_config = ConfigDict(extra="allow")
    study: str = "-"
    metric: str = "-"
    cost_metric: str = "-"
    recommended: str | None = None
    trials: list[_Trial] = []


# ------------------------------------------------------------------------- pipeline verbs
@cli_errors
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a new run even if an unfinished one of this config exists.")
    ] = False,
) -> None:
    """Run prepare → train → evaluate → register; an unfinished run of the same config is resumed."""
    from tuneline.stages.pipeline import run_all

    cfg = load(config, set_)
    rd = run_all(cfg, config, report=report, new=new)
    print_summary(rd.summary_model())
    _check_gate(rd.summary_model())


def _stage_command(stage: str, config: Path, set_: list[str] | None, run_dir: Path | None) -> None:
    from tuneline.runs import STAGES, RunDir, is_main_process
    from tuneline.stages.pipeline import preflight, run_stage

    cfg = load(config, set_)
    if stage == "prepare":
        preflight(cfg)
        rd = RunDir.open(run_dir) if run_dir else RunDir.create(cfg, config)
    else:
        previous = STAGES[STAGES.index(stage) - 1]
        rd = RunDir.open(run_dir) if run_dir else RunDir.latest(cfg, with_stage=previous)
    run_stage(stage, cfg, rd, report=report)
    if not is_main_process():
        return  # a distributed worker: rank 0 reports
    err.print(f"run directory: {rd.path}")
    if stage == "register" or stage == "evaluate":
        print_summary(rd.summary_model())
    if stage == "evaluate":
        _check_gate(rd.summary_model())


def _check_gate(summary: Summary) -> None:
    """Exit 7 (GateFailed) when the evaluation's gate failed: the evaluation itself is complete."""
    from tuneline.errors import GateFailed

    gate = summary.eval.gate if summary.eval else None
    if gate is not None and not gate.passed:
        failed = "; ".join(f"{r.rule}: {r.detail}" for r in gate.rules if not r.passed)
        raise GateFailed(
            f"the tuned model did not pass the gate ({failed})",
            hint="see eval/report.html in the run directory; the registry will refuse to promote this model",
        )


@cli_errors
def prepare(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Read, split and fingerprint the data into a new run directory."""
    _stage_command("prepare", config, set_, run_dir)


@cli_errors
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

    if (nproc_per_node > 1 or nnodes > 1) and not in_torchrun():
        from tuneline.runs import RunDir

        cfg = load(config, set_)
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


@cli_errors
def evaluate(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Score the base and tuned models side by side on the held-out split."""
    _stage_command("evaluate", config, set_, run_dir)


@cli_errors
def register(config: ConfigArg, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Log the run to MLflow and register the adapter as a new model version."""
    _stage_command("register", config, set_, run_dir)


@cli_errors
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
    from tuneline.training.plan import make_plan, plan_json, render

    cfg = load(config, set_)
    result = make_plan(
        cfg, accelerator=accelerator, answer_tokens=answer_tokens, images_per_sample=images_per_sample
    )
    if as_json:
        sys.stdout.write(json.dumps(plan_json(result), indent=2) + "\n")
    else:
        out.print(render(result))


# ------------------------------------------------------------------------- sweep
@cli_errors
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
    from tuneline.stages import sweep as sweep_stage

    if config == "promote":
        if promote_config is None:
            raise typer.BadParameter("tuneline sweep promote CONFIG")
        reg, change = sweep_stage.promote(load(promote_config, set_), report=report)
        out.print(f"{escape(reg.model_name)}: version {reg.version} registered; champion → {change.champion}")
        return
    result = sweep_stage.run(load(Path(config), set_), Path(config), worker=worker, report=report)
    if result.frontier is None:
        err.print(f"worker done: ran {len(result.ran)} trial(s)")
        return
    f = _Frontier.model_validate(result.frontier)
    table = Table(title=f"sweep {f.study}: {f.metric} vs {f.cost_metric}", header_style="bold")
    for col in ("trial", "state", f.metric, "95% CI", "vs best", f.cost_metric, "Pareto", "non-inferior"):
        table.add_column(col)
    for t in f.trials:
        ci = t.ci if len(t.ci) == 2 else [None, None]
        table.add_row(
            t.key + (" (recommended)" if t.key == f.recommended else ""),
            t.state,
            fmt(t.metric),
            f"[{fmt(ci[0])}, {fmt(ci[1])}]",
            fmt(t.vs_best.delta if t.vs_best else None, "+.4f"),
            fmt(getattr(t, f.cost_metric, None), ".6g"),  # each trial row names its costs (SWEEP_COSTS)
            "*" if t.pareto else "",
            "-" if t.non_inferior is None else ("yes" if t.non_inferior else "no"),
        )
    out.print(table)
    err.print(f"frontier: {result.root / 'frontier.json'}\nreport: {result.root / 'report.html'}")
