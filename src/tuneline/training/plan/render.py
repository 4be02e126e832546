"""The plan as rich renderables: the breakdown at both moments, the fit, the recommendations."""

from __future__ import annotations

from typing import Any

from tuneline.training.plan.advice import Plan
from tuneline.training.plan.catalogue import MAX_BATCH, count, gib, human


# ------------------------------------------------------------------------- presentation
def render(p: Plan) -> Any:
    """The plan as rich renderables: the breakdown at both moments, the fit, the recommendations."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    e, w, prof, acc = p.estimate, p.workload, p.profile, p.accelerator
    params = prof.method(w.method)
    title = escape(
        f"{prof.spec} ({prof.family}, {count(prof.params)} params): {w.method}, {w.dtype}, "
        f"batch {w.batch_size} x {w.seq_len} tokens"
    )
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("component")
    table.add_column("forward", justify="right")
    table.add_column("optimizer step", justify="right")
    table.add_column("of what", overflow="fold")

    weights_note = (
        f"{count(prof.quantizable_params)} nf4 + {count(prof.params - prof.quantizable_params)} fp32"
        if w.method == "qlora"
        else f"{count(prof.params)} x {w.dtype}"
    )
    table.add_row("weights", human(e.weights), human(e.weights), weights_note)
    if w.method != "full":
        dora = " + DoRA" if w.method == "dora" else ""
        table.add_row(
            "adapter", human(e.adapter), human(e.adapter), f"LoRA r{w.lora_r}{dora}, {count(params.added)}"
        )
    table.add_row(
        "optimizer state",
        human(e.optimizer),
        human(e.optimizer),
        f"AdamW, {count(params.trainable)} trainable",
    )
    table.add_row(
        "gradients",
        human(e.gradients_in_forward),
        human(e.gradients),
        "kept across micro-batches" if w.gradient_accumulation_steps > 1 else "",
    )
    other = p.without_checkpointing if w.gradient_checkpointing else p.with_checkpointing
    table.add_row(
        "activations",
        human(e.activations),
        "-",
        f"{prof.text.layers} layers; checkpointing {'on' if w.gradient_checkpointing else 'off'}"
        f" (if {'off' if w.gradient_checkpointing else 'on'}: {human(other.activations)})",
    )
    if prof.vision is not None:
        table.add_row(
            "activations, vision",
            human(e.vision_activations),
            "-",
            f"{w.images_per_sample} x {prof.vision.patches_per_image} patches/sample, "
            + ("trained" if w.train_vision_tower else "frozen"),
        )
    logits_note = f"{w.answer_tokens} answer tokens/sample x {prof.text.vocab}"
    if not w.answer_only_logits:
        logits_note += " + every position"
    table.add_row("logits", human(e.logits), "-", logits_note)
    table.add_row(
        "framework",
        human(e.overhead),
        human(e.overhead),
        "imported stack" if acc.kind == "cpu" else "CUDA context",
        end_section=True,
    )
    fwd_peak = e.peak_phase == "forward pass"
    table.add_row(
        "[bold]total[/]",
        f"[bold]{gib(e.forward_peak)}[/]" if fwd_peak else gib(e.forward_peak),
        gib(e.step_peak) if fwd_peak else f"[bold]{gib(e.step_peak)}[/]",
        f"peak: {e.peak_phase}",
    )

    fit = Table(title=f"on {acc.name} ({gib(acc.memory_bytes)})", header_style="bold", title_justify="left")
    fit.add_column("gradient checkpointing")
    fit.add_column("peak", justify="right")
    fit.add_column("largest micro-batch", justify="right")
    for label, est, most in (
        ("off", p.without_checkpointing, p.max_batch_without_checkpointing),
        ("on", p.with_checkpointing, p.max_batch_with_checkpointing),
    ):
        current = (label == "on") == w.gradient_checkpointing
        fit.add_row(
            f"{label} (configured)" if current else label,
            gib(est.peak),
            f"{most}+" if most >= MAX_BATCH else str(most),
        )
    lines = [
        f"[green]✓[/] {escape(r)}" if i == 0 and p.fits else f"• {escape(r)}"
        for i, r in enumerate(p.recommendations)
    ]
    assumed = f"assumed: {w.answer_tokens} answer tokens per sample (--answer-tokens)"
    if prof.vision is not None:
        assumed += f", {w.images_per_sample} image(s) per sample (--images-per-sample)"
    lines.append(f"[dim]{assumed}; every sample padded to data.max_seq_length[/]")
    return Group(table, fit, Text.from_markup("\n".join(lines)))
