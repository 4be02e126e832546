"""CLI commands for serving and monitoring.

tuneline serve CONFIG [--set k=v] [--host H] [--port P]   start the OpenAI-compatible server
tuneline serve report CONFIG [--json]                     compare the A/B variants (CIs), costs, routing
tuneline serve calibrate CONFIG [--json]                  the cascade's threshold from the val split
tuneline monitor drift CONFIG [--url URL] [--fail-on-alert]   the running server's drift report
tuneline monitor profile CONFIG [--run-dir DIR]           (re)compute a run's drift reference profile
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict
from rich.table import Table

from tuneline.cli._common import cli_errors, err, load, out
from tuneline.errors import DriftAlert, TunelineError

monitor_app = typer.Typer(help="Monitoring of a served model.", no_args_is_help=True)


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("tuneline.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    serve_handler = logging.StreamHandler(sys.stderr)
    serve_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    serve_log = logging.getLogger("tuneline.serve")
    serve_log.addHandler(serve_handler)
    serve_log.setLevel(logging.INFO)


@cli_errors
def serve(
    target: Annotated[
        str, typer.Argument(help="The YAML config, or `report` / `calibrate` followed by the config.")
    ],
    config: Annotated[Path | None, typer.Argument(help="With `report` / `calibrate`: the config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set serve.port=9000 (repeatable).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default: serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="report: print JSON.")] = False,
    since_hours: Annotated[
        float | None, typer.Option("--since-hours", help="report: only requests of the last N hours.")
    ] = None,
) -> None:
    """Serve the registered model's aliases (OpenAI-compatible API); `serve report` compares variants."""
    if target == "report":
        if config is None:
            raise TunelineError("tuneline serve report needs the config", hint="tuneline serve report CONFIG")
        _report(load(config, set_), as_json, since_hours)
        return
    if target == "calibrate":
        if config is None:
            raise TunelineError(
                "tuneline serve calibrate needs the config", hint="tuneline serve calibrate CONFIG"
            )
        _calibrate(load(config, set_), as_json)
        return
    if config is not None:
        raise TunelineError(f"unexpected argument {str(config)!r}", hint="tuneline serve CONFIG")
    cfg = load(Path(target), set_)
    import uvicorn

    from tuneline.serving.app import create_app

    _logging()
    # The event loop and the generation thread hand requests to each other all the time: a shorter
    # GIL switch interval (default 5 ms) keeps those hand-offs from adding milliseconds per request.
    sys.setswitchinterval(0.0005)
    app = create_app(cfg)
    h, p = host or cfg.serve.host, port if port is not None else cfg.serve.port
    err.print(f"[bold cyan]tuneline serve[/] {app.state.server.model_name} on http://{h}:{p}/v1")
    uvicorn.run(app, host=h, port=p, log_level="warning", access_log=False)


def _ci(stat: dict, fmt: str) -> str:
    if stat["value"] is None:
        return "-"
    s = format(stat["value"], fmt)
    if stat["ci95"]:
        s += f" [{format(stat['ci95'][0], fmt)}, {format(stat['ci95'][1], fmt)}]"
    return s


def _report(cfg, as_json: bool, since_hours: float | None) -> None:
    import time

    from tuneline.serving.ab import report
    from tuneline.serving.costs import report as costs_report

    since = time.time() - since_hours * 3600 if since_hours else None
    result = report(
        Path(cfg.serve.state_dir) / "ab.sqlite", since=since, baseline=next(iter(cfg.serve.traffic))
    )
    result["costs"] = costs_report(Path(cfg.serve.state_dir) / "ab.sqlite", since=since)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    if not result["variants"]:
        out.print(f"no requests recorded yet in {result['database']}")
        return
    table = Table(title="A/B report (95% bootstrap CIs)", header_style="bold")
    for col in (
        "variant",
        "versions",
        "requests",
        "error rate",
        "p50 s",
        "p95 s",
        "accuracy",
        "score",
        "feedback",
    ):
        table.add_column(col, justify="left" if col in ("variant", "versions") else "right")
    for name, v in result["variants"].items():
        table.add_row(
            name,
            ",".join(v["versions"]),
            str(v["requests"]),
            _ci(v["error_rate"], ".3f"),
            _ci(v["latency_p50_s"], ".3f"),
            _ci(v["latency_p95_s"], ".3f"),
            _ci(v["accuracy"], ".3f"),
            _ci(v["mean_score"], ".3f"),
            str(v["feedback"]),
        )
    out.print(table)
    for name, diffs in result["comparisons"].items():
        shown = ", ".join(
            f"{k} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}"
            for k, ci in diffs.items()
            if ci
            for lo, hi in [ci]
        )
        out.print(f"{name}: {shown or 'not enough data'}  (* the CI excludes 0)")
    if result["costs"]:
        _print_costs(result["costs"], cfg.serve.costs.currency)


def _calibrate(cfg, as_json: bool) -> None:
    from tuneline.stages import calibrate

    result = calibrate.run(cfg)
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=2) + "\n")
        return
    ch, cur = result["chosen"], result["currency"]
    table = Table(title=f"Cascade on val (n={result['n']}, {cur})", header_style="bold")
    for col in ("route", "accuracy", "cost / 1,000", "to fallback"):
        table.add_column(col, justify="left" if col == "route" else "right")
    table.add_row(
        "small only", f"{result['small']['accuracy']:.3f}", f"{result['small']['cost_per_1k']:.4g}", "0%"
    )
    table.add_row(
        "fallback only",
        f"{result['fallback']['accuracy']:.3f}",
        f"{result['fallback']['cost_per_1k']:.4g}",
        "100%",
    )
    table.add_row(
        f"cascade @ {ch['threshold']:.4f}",
        f"{ch['accuracy']:.3f}",
        f"{ch['cost_per_1k']:.4g}",
        f"{ch['share_routed']:.1%}",
    )
    out.print(table)
    if result["ece_after"] is not None:
        out.print(
            f"temperature {result['temperature']:.3f}: "
            f"ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}"
        )
    else:
        out.print(f"ECE of the small model: {result['ece_before']:.4f}")
    if not result["met"]:
        out.print(f"[yellow]no threshold meets the target {result['target']}: the closest is chosen[/]")
    out.print(f"wrote {result['curve_file']} and {result['plot_file']} (threshold: auto reads it)")


def _print_costs(costs: dict, currency: str) -> None:
    table = Table(title=f"Cost and routing ({currency})", header_style="bold")
    for col in ("variant", "requests", "cost / 1,000", "to fallback", "degraded", "accuracy by route"):
        table.add_column(col, justify="left" if col in ("variant", "accuracy by route") else "right")
    for name, c in costs.items():
        share = "-" if c["share_fallback"] is None else f"{c['share_fallback']:.1%}"
        acc = ", ".join(f"{r} {a['accuracy']:.3f} (n={a['n']})" for r, a in c["accuracy_by_route"].items())
        table.add_row(
            name, str(c["requests"]), f"{c['cost_per_1k']:.4g}", share, str(c["degraded"]), acc or "-"
        )
    out.print(table)


@monitor_app.command("drift")
@cli_errors
def monitor_drift(
    config: Annotated[
        Path, typer.Argument(help="The YAML config of the running server.", show_default=False)
    ],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key (repeatable).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Server URL (default: http://serve.host:serve.port).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit 8 when the alert is raised.")
    ] = False,
) -> None:
    """Ask a running server how far live traffic has drifted from the training profile."""
    import httpx

    cfg = load(config, set_)
    base = url or f"http://{cfg.serve.host}:{cfg.serve.port}"
    headers = {}
    for name in cfg.serve.auth.api_key_envs[:1]:
        headers["Authorization"] = f"Bearer {os.environ.get(name, '')}"
    try:
        r = httpx.get(f"{base}/v1/monitoring/drift", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise TunelineError(f"cannot reach {base}: {exc}", hint="is `tuneline serve` running there?") from exc
    if r.status_code != 200:
        raise TunelineError(f"{base} answered {r.status_code}: {r.text[:300]}")
    if as_json:
        sys.stdout.write(json.dumps(r.json(), indent=2) + "\n")
    rep = _Drift.model_validate(r.json())
    if not as_json:
        _print_drift(rep)
    if fail_on_alert and rep.alert:
        raise DriftAlert(f"drift alert: shifted {', '.join(rep.shifted or ['embeddings'])}")


class _DriftFeature(BaseModel):
    psi: float = math.nan
    ks: float = math.nan
    ks_pvalue: float = math.nan
    reference_mean: float = math.nan
    live_mean: float = math.nan
    shifted: bool = False


class _DriftEmbedding(BaseModel):
    kind: str = "?"
    mmd2: float = math.nan
    pvalue: float = math.nan
    shifted: bool = False


class _DriftPredictions(BaseModel):
    psi: float = math.nan


class _Drift(BaseModel):
    """The server's /v1/monitoring/drift answer (built by tuneline.serving.drift), as this command reads
    it; lenient like the run artifacts (extra keys kept, every field defaulted)."""

    model_config = ConfigDict(extra="allow")
    status: str | None = None
    window: int = 0
    min_samples: int | None = None
    score: float | None = None
    alert: bool = False
    shifted: list[str] = []
    features: dict[str, _DriftFeature] = {}  # feature name -> its test: a map by nature
    embedding: _DriftEmbedding | None = None
    predictions: _DriftPredictions | None = None


def _print_drift(rep: _Drift) -> None:
    out.print(
        f"status: {rep.status}, window {rep.window} "
        f"(verdict from {rep.min_samples}), "
        f"score {rep.score}, alert: {'[red]YES[/]' if rep.alert else 'no'}"
    )
    if rep.features:
        table = Table(header_style="bold")
        for col in ("feature", "PSI", "KS", "KS p", "reference mean", "live mean", "shifted"):
            table.add_column(col, justify="left" if col == "feature" else "right")
        for name, f in rep.features.items():
            table.add_row(
                name,
                f"{f.psi:.3f}",
                f"{f.ks:.3f}",
                f"{f.ks_pvalue:.2g}",
                f"{f.reference_mean:.4g}",
                f"{f.live_mean:.4g}",
                "[red]yes[/]" if f.shifted else "",
            )
        out.print(table)
    if rep.embedding:
        e = rep.embedding
        out.print(f"embeddings ({e.kind}): MMD² {e.mmd2:.4g}, p = {e.pvalue:.3g}")
    if rep.predictions:
        out.print(f"prediction rates vs training labels: PSI {rep.predictions.psi:.3f}")


@monitor_app.command("profile")
@cli_errors
def monitor_profile(
    config: Annotated[Path, typer.Argument(help="The YAML config.", show_default=False)],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key (repeatable).")] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: newest trained).")
    ] = None,
) -> None:
    """Compute the drift reference profile of a trained run (training split), into its adapter folder."""
    from tuneline.runs import RunDir
    from tuneline.serving.profile import write_profile

    cfg = load(config, set_)
    rd = RunDir.open(run_dir) if run_dir else RunDir.latest(cfg, with_stage="train")
    path = write_profile(cfg, rd)
    out.print(f"wrote {path}")
