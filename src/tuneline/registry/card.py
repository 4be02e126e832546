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
from tuneline.sections import (
    BaseModelInfo,
    Comparison,
    DataProvenance,
    DPReport,
    EvalSection,
    ThresholdSection,
    TrainSection,
)

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
    data_report = DataReport.read_or_none(run)
    report = EvalReport.read_or_none(run) or EvalReport()
    base = prov.base_model or BaseModelInfo()
    data = prov.data or (
        DataProvenance.model_validate(summary.data.model_dump()) if summary.data else DataProvenance()
    )
    ev = summary.eval or EvalSection()
    train_cfg = cfg.train
    train = summary.train or TrainSection()
    gate = ev.gate
    task = report.task or ev.task or "unknown"
    labels = report.labels

    lines: list[str] = []
    # The red lines of the run summary open the card: a reader who stops here knows.
    for beaten in report.beaten_by or ev.beaten_by:
        lines += [f"> **{beaten.sentence}.**", ">"]
    if lines:
        lines[-1] = ""
    verdict = "no gate was configured" if gate is None else ("passed" if gate.passed else "**FAILED**")
    if gate is not None and gate.against:
        c = gate.comparison or Comparison()
        ci = c.ci or [None, None]
        low, high = (ci[0], ci[1]) if len(ci) == 2 else (None, None)
        verdict += f" (against {gate.against}" + (
            f": {gate.primary} {c.delta:+.3f}, 95% CI {low:+.3f} to {high:+.3f})"
            if c.delta is not None and low is not None and high is not None
            else ")"
        )
    lines += [
        f"Fine-tuned from `{base.id or '?'}` with tuneline ({train_cfg.method}) in run "
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
                ["id", f"`{base.id or '?'}`"],
                ["kind", base.kind or "?"],
                ["family", base.family or "?"],
                ["hub revision", base.revision or "–"],
                ["content hash (sha256)", f"`{base.content_hash or '?'}`"],
                ["dtype", cfg.model.dtype],
            ],
        ),
        "",
        "## Data",
        "",
        f"- Snapshot fingerprint: `{data.fingerprint or '?'}`",
        f"- Snapshot folder: `{data.snapshot or '?'}`",
    ]
    counts = data.counts
    if counts:
        lines.append("- Records per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    split_cfg = cfg.data.split
    if split_cfg:
        lines.append(
            f"- Split: {split_cfg.strategy} (train {split_cfg.train}, "
            f"val {split_cfg.val}, test {split_cfg.test}; "
            f"seed {cfg.run.seed})"
        )
    for src in data.sources:
        records = "?" if src.records is None else src.records
        lines.append(f"- Source: {src.type} `{src.path}` ({records} records)")
    vs = data_report.summary if data_report is not None else None
    if vs is not None:
        lines.append(
            f"- Validation: {_or(vs.records_in, '?')} records in, "
            f"{_or(vs.records_out, '?')} kept, {vs.errors or 0} with errors, "
            f"{vs.dropped or 0} dropped, {vs.warnings or 0} warnings "
            f"({'passed' if vs.passed else 'failed'})"
        )
    splits = vs.splits if vs is not None else {}
    classes = sorted({c for s in splits.values() for c in s.labels})
    if classes:
        lines += ["", "Class balance:", ""]
        lines += _table(
            ["class", *splits.keys()],
            [[c, *(splits[s].labels.get(c, 0) for s in splits)] for c in classes],
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
        ["steps", _or(train.steps, train_cfg.max_steps)],
        ["final training loss", _num(train.final_loss, ".4f")],
        ["trainable parameters", _or(train.trainable_parameters, "?")],
        [
            "projector / vision tower trained",
            f"{train_cfg.train_projector} / {train_cfg.train_vision_tower}",
        ],
        ["accelerator-hours", _num(train.cost.accelerator_hours if train.cost else None, ".4f")],
        ["differential privacy", _dp_line(train.privacy.dp if train.privacy else None)],
    ]
    if train_cfg.method == "full":
        settings = [s for s in settings if not s[0].startswith("LoRA")]
    lines += _table(["setting", "value"], settings)

    lines += ["", "## Evaluation", ""]
    models = report.models
    if models:
        lines.append(
            f"On the {report.split or ev.split or '?'} split "
            f"({report.n if report.n is not None else '?'} records); "
            "95% bootstrap CIs in brackets"
            + (f", resampled by {report.grouped_by}." if report.grouped_by else ".")
        )
        lines.append("")
        names: list[str] = [
            m for m in ("tuned", "base", "few_shot", "embedding_logreg", "prior") if m in models
        ]
        names += [m for m in models if m not in names]
        shown = [m for m in TABLE_METRICS if any(m in models[n].metrics for n in names)]
        rows = []
        for metric in shown:
            row: list[Any] = [metric]
            for n in names:
                entry = models[n]
                row.append(_num(entry.metrics.get(metric)) + _ci(entry.ci.get(metric)))
            rows.append(row)
        lines += _table(["metric", *names], rows)
        th = report.threshold or ThresholdSection()
        tuned_t = th.per_model.get("tuned")
        if tuned_t is not None:
            lines += [
                "",
                f"Decision threshold of the tuned model: {_num(tuned_t, '.4g')} (chosen on the "
                f"{th.split or 'val'} split by {th.method}; positive class "
                f"`{report.positive}`).",
            ]
        comps = [c for c in report.comparisons if c.metric == report.primary]
        if comps:
            lines += ["", f"Paired comparisons on {report.primary} (tuned − other):", ""]
            lines += _table(
                ["other", "delta", "95% CI", "p", "method"],
                [
                    [
                        c.a,
                        _num(c.delta, "+.3f"),
                        _ci(c.ci).strip(),
                        _num(c.p_value),
                        c.method,
                    ]
                    for c in comps
                ],
            )
    else:
        lines += _table(
            ["metric", "tuned"], [[k, _num(v)] for k, v in ev.scores("tuned").items() if k != "n"]
        )
    slices = report.slices
    if slices:
        lines += ["", "### Slices", ""]
        primary = report.primary or "accuracy"
        for column, sl in slices.items():
            rows = []
            for value, per_model in sl.values.items():
                # value -> model -> {"n", metric...}: maps by nature, typed dict[str, dict[str, Number]]
                tuned = per_model.get("tuned", {})
                other = per_model.get("base", {})
                n_rows = tuned.get("n")
                rows.append(
                    [
                        value,
                        "?" if n_rows is None else n_rows,
                        _num(tuned.get(primary)),
                        _num(other.get(primary)),
                    ]
                )
            lines += [f"By `{column}` ({primary}):", ""]
            if rows:
                lines += [*_table(["value", "n", "tuned", "base"], rows), ""]
            if sl.too_small:
                small = ", ".join(f"{k} (n={v})" for k, v in sl.too_small.items())
                lines += [f"Too small to score: {small}."]
            lines.append("")

    audit = report.audit
    if audit:
        lines += ["", "## Memorisation audit", ""]
        lines.append(
            f"{audit.canaries} secret-sharer canaries ({audit.digits}-digit secrets) were planted in "
            f"training only; each secret ranked against {audit.candidates} random candidates. "
            f"Mean exposure: {audit.exposure_mean:.2f} bits for the planted canaries, "
            f"{audit.control_exposure_mean:.2f} for never-trained controls "
            f"(at most {audit.max_exposure:.2f})."
        )
    lines += ["", "## Gate", ""]
    if gate is None:
        lines.append("No gate was configured: this version can only be promoted with --force and a reason.")
    else:
        lines.append(
            f"Result: {'passed' if gate.passed else '**FAILED**'} "
            f"(primary {gate.primary} against {gate.against})."
        )
        lines.append("")
        lines += _table(
            ["rule", "result", "detail"],
            [[r.rule, "pass" if r.passed else "FAIL", r.detail or ""] for r in gate.rules],
        )

    lines += ["", "## Limitations", ""]
    n_records = report.n or ev.n
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
    if gate is not None and not gate.passed:
        lines.append(
            "- The evaluation gate failed: not fit for promotion without an explicit, recorded reason."
        )
    lines.append("- The model inherits the limitations and biases of its base model.")

    lines += ["", "## Lineage", ""]
    from tuneline.registry.lineage import lineage_rows

    lines += _table(["field", "value"], [[k, f"`{v}`"] for k, v in lineage_rows(tags)])
    return "\n".join(lines) + "\n"


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _dp_line(dp: DPReport | None) -> str:
    if not dp:
        return "off"
    return (
        f"ε = {dp.epsilon:.3g} at δ = {dp.delta:.2g} (Opacus, RDP accountant; noise multiplier "
        f"{dp.noise_multiplier:.3g}, per-sample clip {dp.max_grad_norm:g}, Poisson sampling q = "
        f"{dp.sample_rate:.3g}, {dp.steps} steps)"
    )
