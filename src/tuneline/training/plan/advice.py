"""The plan: the estimate with and without checkpointing, the largest batch, and what to change."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tuneline.training.plan.catalogue import (
    ACCELERATORS,
    HEADROOM_TARGET,
    MAX_BATCH,
    Accelerator,
    Method,
    get_accelerator,
    gib,
    human,
)
from tuneline.training.plan.estimate import MemoryEstimate, estimate, max_batch_size
from tuneline.training.plan.profile import ModelProfile, Workload, model_profile, workload_from_config

if TYPE_CHECKING:
    from tuneline.config.schema import Config


# ------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    profile: ModelProfile
    workload: Workload
    accelerator: Accelerator
    estimate: MemoryEstimate  # as configured
    without_checkpointing: MemoryEstimate
    with_checkpointing: MemoryEstimate
    max_batch_without_checkpointing: int  # largest micro-batch that fits (0: none; MAX_BATCH: that or more)
    max_batch_with_checkpointing: int
    recommendations: tuple[str, ...]

    @property
    def max_batch(self) -> int:
        """The largest micro-batch that fits, as configured (checkpointing on or off)."""
        if self.workload.gradient_checkpointing:
            return self.max_batch_with_checkpointing
        return self.max_batch_without_checkpointing

    @property
    def fits(self) -> bool:
        return self.estimate.peak <= self.accelerator.memory_bytes

    @property
    def headroom(self) -> float:
        """Fraction of the accelerator's memory left at the peak (negative: over by that much)."""
        return 1 - self.estimate.peak / self.accelerator.memory_bytes


LIGHTER: dict[str, tuple[Method, ...]] = {"full": ("lora", "qlora"), "lora": ("qlora",), "dora": ("qlora",)}


def _fixes(work: Workload, acc: Accelerator) -> list[tuple[str, Workload]]:
    """Changes that lower the peak, cheapest first, each including the ones before it where it helps."""
    base, words = work, []
    if acc.kind == "gpu" and acc.bf16 and work.dtype == "float32" and not work.mixed_bf16:
        base, words = replace(base, dtype="bfloat16"), ["set model.dtype=bfloat16"]
    if not work.answer_only_logits:
        base, words = replace(base, answer_only_logits=True), [*words, "enable train.answer_only_logits"]
    ckpt = "enable train.gradient_checkpointing"
    fixes = [(" and ".join(words), base)] if words else []
    if not work.gradient_checkpointing:
        fixes.append((" and ".join([*words, ckpt]), replace(base, gradient_checkpointing=True)))
    for method in LIGHTER.get(work.method, ()):
        use = f"use train.method={method}"
        fixes.append((" and ".join([use, *words]), replace(base, method=method)))
        if not work.gradient_checkpointing:
            fixes.append(
                (" and ".join([use, *words, ckpt]), replace(base, method=method, gradient_checkpointing=True))
            )
    return fixes


def _recommend(
    profile: ModelProfile, work: Workload, acc: Accelerator, est: MemoryEstimate
) -> tuple[str, ...]:
    cap = acc.memory_bytes
    b = work.batch_size
    notes: list[str] = []

    def accumulate(n: int) -> str:
        steps = math.ceil(b * work.gradient_accumulation_steps / n)
        return f"train.batch_size={n} with gradient_accumulation_steps={steps} keeps the effective batch"

    if est.peak <= cap:
        headroom = 1 - est.peak / cap
        notes.append(f"batch {b} fits on {acc.name} with {headroom:.0%} headroom (peak {gib(est.peak)})")
        if headroom < HEADROOM_TARGET:
            notes.append(
                f"under {HEADROOM_TARGET:.0%} headroom, allocator fragmentation can still run out of memory: "
                + (
                    "enable train.gradient_checkpointing"
                    if not work.gradient_checkpointing
                    else "lower train.batch_size"
                )
            )
        bigger = max_batch_size(profile, work, acc)
        if bigger >= 2 * b:
            most = f"{bigger} or more" if bigger >= MAX_BATCH else str(bigger)
            notes.append(f"micro-batches of up to {most} fit (train.batch_size)")
    else:
        notes.append(f"batch {b} does not fit on {acc.name}: peak {gib(est.peak)} > {gib(cap)}")
        fixes = _fixes(work, acc)
        at_b = next(((d, a) for d, a in fixes if estimate(profile, a, acc).peak <= cap), None)
        if at_b is not None:
            notes.append(f"{at_b[0]}: batch {b} fits (peak {gib(estimate(profile, at_b[1], acc).peak)})")
        smaller = max_batch_size(profile, work, acc)
        if smaller:
            notes.append(f"or lower the micro-batch: {accumulate(smaller)}")
        elif at_b is None:
            for words, alt in fixes:
                n = max_batch_size(profile, alt, acc)
                if n:
                    notes.append(f"{words}: batch {n} fits; {accumulate(n)}")
                    break
            else:
                larger = [
                    a.name
                    for a in sorted(ACCELERATORS, key=lambda a: a.memory_bytes)
                    if estimate(profile, work, a).peak <= a.memory_bytes
                ]
                notes.append(
                    f"not even batch 1 fits on {acc.name}, with qlora and gradient checkpointing: "
                    + (
                        f"the smallest accelerator that holds batch {b} as configured is {larger[0]}"
                        if larger
                        else "no listed accelerator holds it alone; shard it across several"
                    )
                )
    if not work.answer_only_logits and est.logits > 0.25 * est.forward_peak:
        notes.append(f"the logits take {human(est.logits)}: enable train.answer_only_logits")
    if work.distributed_strategy != "ddp":
        notes.append(
            f"per process without sharding: {work.distributed_strategy} spreads weights, gradients and "
            "optimizer state over the processes, so each holds less than this"
        )
    if acc.kind == "cpu" and work.image_cache_bytes:
        notes.append(
            f"not in the peak: the image feature cache grows with the data over the first epoch, up to "
            f"{human(work.image_cache_bytes)} of host memory (train.image_cache_gb)"
        )
    if work.dtype == "bfloat16" and acc.kind == "gpu" and not acc.bf16:
        notes.append(f"{acc.name} has no bfloat16: use model.dtype float16 or float32")
    return tuple(notes)


def make_plan(
    cfg: Config,
    *,
    accelerator: str | None = None,
    answer_tokens: int | None = None,
    images_per_sample: int | None = None,
    profile: ModelProfile | None = None,
) -> Plan:
    """The memory plan for a config on an accelerator (default: train.cost.accelerator)."""
    acc = get_accelerator(accelerator or cfg.train.cost.accelerator)
    profile = profile or model_profile(cfg.model, cfg.train)
    work = workload_from_config(
        cfg,
        acc,
        answer_tokens=answer_tokens,
        images_per_sample=images_per_sample,
        multimodal=profile.vision is not None,
    )
    est = estimate(profile, work, acc)
    off = estimate(profile, replace(work, gradient_checkpointing=False), acc)
    on_work = replace(work, gradient_checkpointing=True)
    on = estimate(profile, on_work, acc)
    return Plan(
        profile=profile,
        workload=work,
        accelerator=acc,
        estimate=est,
        without_checkpointing=off,
        with_checkpointing=on,
        max_batch_without_checkpointing=max_batch_size(
            profile, replace(work, gradient_checkpointing=False), acc
        ),
        max_batch_with_checkpointing=max_batch_size(profile, on_work, acc),
        recommendations=_recommend(profile, work, acc, est),
    )


def plan_json(p: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (bytes as integers)."""
    from dataclasses import asdict

    def breakdown(e: MemoryEstimate) -> dict[str, Any]:
        return {
            **asdict(e),
            "forward_peak": e.forward_peak,
            "step_peak": e.step_peak,
            "peak": e.peak,
            "peak_phase": e.peak_phase,
        }

    return {
        "model": asdict(p.profile),
        "workload": asdict(p.workload),
        "accelerator": {
            "name": p.accelerator.name,
            "kind": p.accelerator.kind,
            "memory_bytes": p.accelerator.memory_bytes,
        },
        "estimate": breakdown(p.estimate),
        "gradient_checkpointing": {
            "off": breakdown(p.without_checkpointing),
            "on": breakdown(p.with_checkpointing),
        },
        "fits": p.fits,
        "headroom": round(p.headroom, 4),
        "max_batch_size": p.max_batch,
        "max_batch_size_without_checkpointing": p.max_batch_without_checkpointing,
        "max_batch_size_with_checkpointing": p.max_batch_with_checkpointing,
        "recommendations": list(p.recommendations),
    }
