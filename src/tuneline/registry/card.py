"""The model card: one Markdown page per registered version, generated from its run directory.

Intended use, base model, data (counts, fingerprint, split, class balance, validation summary),
training settings, the evaluation table with 95% CIs and the paired comparisons, slices, the gate
result, limitations and the lineage. Logged with the version (artifact ``model_card.md`` of its
MLflow run), printed by ``tuneline models show`` and written as README.md by ``tuneline export``.
"""

from __future__ import annotations

import math
from typing import Any

from tuneline.artifacts import DataReport, EvalReport
from tuneline.config.schema import METRICS
from tuneline.runs import RunDir

CARD_ARTIFACT = "model_card.md"
# Metrics shown in the evaluation table: the gate's metric names in their order, less the synonyms
# (recall is sensitivity) and the answer loss, which the report keeps apart.
TABLE_METRICS = tuple(m for m in METRICS if m not in ("recall", "loss"))


def _num(v: Any, spec: str = ".3f") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return "–"
    return format(v, spec)


def _ci(ci: Any) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or not all(_num(x) != "–" for x in ci):
        return ""
    return f" [{_num(ci[0])}, {_num(ci[1])}]"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def render_card(run: RunDir, *, name: str, version: str, tags: dict[str, str]) -> str:
    return card_heading(name, version) + card_body(run, tags)


def card_heading(name: str, version: str) -> str:
    return f"# {name} — version {version}\n\n"


def card_body(run: RunDir, tags: dict[str, str]) -> str:
    """Everything but the heading (which needs the version number the registry assigns)."""
    summary = run.summary_model()
    prov = run.provenance_model()
    cfg = run.config()
    data_report = (DataReport.read_or_none(run) or DataReport()).summary
    report = EvalReport.read_or_none(run) or EvalReport()
    base = prov.base_model or {}
    data = prov.data or summary.data or {}
    ev = summary.eval or {}
    train_cfg = cfg.train
    train = summary.train or {}
    gate = ev.get("gate")
    task = report.task or ev.get("task") or "unknown"
    labels = report.labels

    lines: list[str] = []
    # The red lines of the run summary open the card: a reader who stops here knows.
    for beaten in report.beaten_by or ev.get("beaten_by") or []:
        lines += [f"> **{beaten['sentence']}.**", ">"]
    if lines:
        lines[-1] = ""
    verdict = "no gate was configured" if gate is None else ("passed" if gate["passed"] else "**FAILED**")
    if gate is not None and gate.get("against"):
        c = gate.get("comparison") or {}
        ci = c.get("ci") or [None, None]
        verdict += f" (against {gate['against']}" + (
            f": {gate.get('primary')} {c['delta']:+.3f}, 95% CI {ci[0]:+.3f} to {ci[1]:+.3f})"
            if c.get("delta") is not None and None not in ci
            else ")"
        )
    lines += [
        f"Fine-tuned from `{base.get('id', '?')}` with tuneline ({train_cfg.method}) in run "
        f"`{run.run_id}`. Evaluation gate: {verdict}.",
        "",
        "## Intended use",
        "",
    ]
    if task == "classification" and labels:
        lines.append(
            f"Classification of inputs like those in the training data into {len(labels)} classes "
            f"({', '.join(f'`{x}`' for x in labels)}), by the probability the model gives each answer."
        )
    else:
        lines.append("Answering prompts like those in the training data (free-text generation).")
    lines += [
        "It was evaluated only on a held-out split of the same data source (see Data and Limitations): "
        "use outside that distribution needs its own evaluation. Serve it only once promoted to "
        "`champion` through the gate.",
        "",
        "## Base model",
        "",
        *_table(
            ["field", "value"],
            [
                ["id", f"`{base.get('id', '?')}`"],
                ["kind", base.get("kind", "?")],
                ["family", base.get("family", "?")],
                ["hub revision", base.get("revision") or "–"],
                ["content hash (sha256)", f"`{base.get('content_hash', '?')}`"],
                ["dtype", cfg.model.dtype],
            ],
        ),
        "",
        "## Data",
        "",
        f"- Snapshot fingerprint: `{data.get('fingerprint', '?')}`",
        f"- Snapshot folder: `{data.get('snapshot', '?')}`",
    ]
    counts = data.get("counts") or {}
    if counts:
        lines.append("- Records per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    split_cfg = cfg.data.split
    if split_cfg:
        lines.append(
            f"- Split: {split_cfg.strategy} (train {split_cfg.train}, "
            f"val {split_cfg.val}, test {split_cfg.test}; "
            f"seed {cfg.run.seed})"
        )
    for src in data.get("sources") or []:
        lines.append(f"- Source: {src.get('type')} `{src.get('path')}` ({src.get('records', '?')} records)")
    if data_report:
        lines.append(
            f"- Validation: {data_report.get('records_in', '?')} records in, "
            f"{data_report.get('records_out', '?')} kept, {data_report.get('errors', 0)} with errors, "
            f"{data_report.get('dropped', 0)} dropped, {data_report.get('warnings', 0)} warnings "
            f"({'passed' if data_report.get('passed') else 'failed'})"
        )
    splits = data_report.get("splits") or {}
    classes = sorted({c for s in splits.values() for c in (s.get("labels") or {})})
    if classes:
        lines += ["", "Class balance:", ""]
        lines += _table(
            ["class", *splits.keys()],
            [[c, *((splits[s].get("labels") or {}).get(c, 0) for s in splits)] for c in classes],
        )
    lines += ["", "## Training", ""]
    lora = train_cfg.lora
    settings: list[list[Any]] = [
        ["method", train_cfg.method],
        ["LoRA r / alpha / dropout", f"{lora.r} / {lora.alpha} / {lora.dropout}"],
        ["learning rate", train_cfg.learning_rate],
        ["schedule", train_cfg.lr_scheduler],
        [
            "batch size × accumulation",
            f"{train_cfg.batch_size} × {train_cfg.gradient_accumulation_steps}",
        ],
        ["steps", train.get("steps", train_cfg.max_steps)],
        ["final training loss", _num(train.get("final_loss"), ".4f")],
        ["trainable parameters", train.get("trainable_parameters", "?")],
        [
            "projector / vision tower trained",
            f"{train_cfg.train_projector} / {train_cfg.train_vision_tower}",
        ],
        ["accelerator-hours", _num((train.get("cost") or {}).get("accelerator_hours"), ".4f")],
        ["differential privacy", _dp_line((train.get("privacy") or {}).get("dp"))],
    ]
    if train_cfg.method == "full":
        settings = [s for s in settings if not s[0].startswith("LoRA")]
    lines += _table(["setting", "value"], settings)

    lines += ["", "## Evaluation", ""]
    models = report.models
    if models:
        lines.append(
            f"On the {report.split or ev.get('split', '?')} split "
            f"({report.n if report.n is not None else '?'} records); "
            "95% bootstrap CIs in brackets"
            + (f", resampled by {report.grouped_by}." if report.grouped_by else ".")
        )
        lines.append("")
        names: list[str] = [
            m for m in ("tuned", "base", "few_shot", "embedding_logreg", "prior") if m in models
        ]
        names += [m for m in models if m not in names]
        shown = [m for m in TABLE_METRICS if any(m in (models[n].get("metrics") or {}) for n in names)]
        rows = []
        for metric in shown:
            row: list[Any] = [metric]
            for n in names:
                entry = models[n]
                value = (entry.get("metrics") or {}).get(metric)
                row.append(_num(value) + _ci((entry.get("ci") or {}).get(metric)))
            rows.append(row)
        lines += _table(["metric", *names], rows)
        th = report.threshold or {}
        tuned_t = (th.get("per_model") or {}).get("tuned")
        if tuned_t is not None:
            lines += [
                "",
                f"Decision threshold of the tuned model: {_num(tuned_t, '.4g')} (chosen on the "
                f"{th.get('split') or 'val'} split by {th.get('method')}; positive class "
                f"`{report.positive}`).",
            ]
        comps = [c for c in report.comparisons if c.get("metric") == report.primary]
        if comps:
            lines += ["", f"Paired comparisons on {report.primary} (tuned − other):", ""]
            lines += _table(
                ["other", "delta", "95% CI", "p", "method"],
                [
                    [
                        c["a"],
                        _num(c.get("delta"), "+.3f"),
                        _ci(c.get("ci")).strip(),
                        _num(c.get("p_value")),
                        c.get("method"),
                    ]
                    for c in comps
                ],
            )
    else:
        tuned = ev.get("tuned") or {}
        lines += _table(["metric", "tuned"], [[k, _num(v)] for k, v in tuned.items() if k != "n"])
    slices = report.slices
    if slices:
        lines += ["", "### Slices", ""]
        primary = report.primary or "accuracy"
        for column, entry in slices.items():
            rows = []
            for value, per_model in (entry.get("values") or {}).items():
                tuned = per_model.get("tuned") or {}
                other = per_model.get("base") or {}
                rows.append([value, tuned.get("n", "?"), _num(tuned.get(primary)), _num(other.get(primary))])
            lines += [f"By `{column}` ({primary}):", ""]
            if rows:
                lines += [*_table(["value", "n", "tuned", "base"], rows), ""]
            if entry.get("too_small"):
                small = ", ".join(f"{k} (n={v})" for k, v in entry["too_small"].items())
                lines += [f"Too small to score: {small}."]
            lines.append("")

    audit = report.audit
    if audit:
        lines += ["", "## Memorisation audit", ""]
        lines.append(
            f"{audit['canaries']} secret-sharer canaries ({audit['digits']}-digit secrets) were planted in "
            f"training only; each secret ranked against {audit['candidates']} random candidates. "
            f"Mean exposure: {audit['exposure_mean']:.2f} bits for the planted canaries, "
            f"{audit['control_exposure_mean']:.2f} for never-trained controls "
            f"(at most {audit['max_exposure']:.2f})."
        )
    lines += ["", "## Gate", ""]
    if gate is None:
        lines.append("No gate was configured: this version can only be promoted with --force and a reason.")
    else:
        lines.append(
            f"Result: {'passed' if gate['passed'] else '**FAILED**'} "
            f"(primary {gate.get('primary')} against {gate.get('against')})."
        )
        lines.append("")
        lines += _table(
            ["rule", "result", "detail"],
            [
                [r["rule"], "pass" if r["passed"] else "FAIL", r.get("detail", "")]
                for r in gate.get("rules") or []
            ],
        )

    lines += ["", "## Limitations", ""]
    n_records = report.n or ev.get("n")
    lines.append(
        f"- Evaluated on {n_records if n_records is not None else 'an unknown number of'} held-out records "
        "from the same source as the training data; the CIs above show how much that sample can say."
    )
    if not report.slices:
        lines.append("- No slices were evaluated: performance on subgroups is unknown.")
    if isinstance(n_records, int) and n_records < 100:
        lines.append("- Fewer than 100 evaluation records: estimates are imprecise.")
    if report.not_beaten:
        lines.append(f"- Did not beat on {report.primary}: {', '.join(report.not_beaten)}.")
    if gate is not None and not gate["passed"]:
        lines.append(
            "- The evaluation gate failed: not fit for promotion without an explicit, recorded reason."
        )
    lines.append("- The model inherits the limitations and biases of its base model.")

    lines += ["", "## Lineage", ""]
    from tuneline.registry.lineage import lineage_rows

    lines += _table(["field", "value"], [[k, f"`{v}`"] for k, v in lineage_rows(tags)])
    return "\n".join(lines) + "\n"


def _dp_line(dp: dict | None) -> str:
    if not dp:
        return "off"
    return (
        f"ε = {dp['epsilon']:.3g} at δ = {dp['delta']:.2g} (Opacus, RDP accountant; noise multiplier "
        f"{dp['noise_multiplier']:.3g}, per-sample clip {dp['max_grad_norm']:g}, Poisson sampling q = "
        f"{dp['sample_rate']:.3g}, {dp['steps']} steps)"
    )
