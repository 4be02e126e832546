"""Cost preview: accelerator-hours and price of a launch, from the planner and a price table.

Time comes from the training FLOPs: per trained token, 2 x parameters for the forward pass plus
2 x parameters for the backward pass through the frozen weights (LoRA, DoRA, QLoRA), or 4 x for full
fine-tuning (weight gradients too); tokens are at most data.max_seq_length per sample; the
accelerators deliver ``launch.mfu`` of their peak bf16 FLOP/s. Memory comes from ``tuneline plan``
(training/plan.py): the preview says whether the micro-batch fits the chosen accelerator.

Prices are per accelerator-hour, indicative Google Cloud list prices (us-central1, GPU plus its
share of the VM); override them with launch.prices / launch.spot_prices, or train.cost.price_per_hour.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tuneline.launch.spec import GPUS, LaunchSpec

# accelerator -> (on demand, spot) per accelerator-hour. Indicative: check your provider's pricing page.
PRICES: dict[str, tuple[float, float]] = {
    "H100-80GB": (11.06, 2.25),
    "H200-141GB": (10.85, 3.72),
    "A100-40GB": (3.67, 1.15),
    "A100-80GB": (5.07, 1.57),
    "L4-24GB": (0.85, 0.27),
    "T4-16GB": (0.55, 0.18),
    "V100-16GB": (2.85, 0.86),
    "A10G-24GB": (1.21, 0.45),
    "cpu": (0.0, 0.0),
}
CPU_TFLOPS = 0.5  # a few cores of fp32: only so that a CPU job gets an order of magnitude


@dataclass(frozen=True)
class CostPreview:
    accelerator: str
    accelerators: int  # nodes x accelerators per node
    spot: bool
    steps: int | None
    steps_source: str
    tokens: int | None  # upper bound: every sample at data.max_seq_length
    train_flops: float | None
    hours: float | None  # wall-clock estimate
    accelerator_hours: float | None
    price_per_hour: float
    price_source: str
    cost: float | None
    fits: bool | None  # the planner: does train.batch_size fit one accelerator
    peak_memory_gib: float | None
    notes: tuple[str, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def price(spec: LaunchSpec) -> tuple[float, str]:
    lc, name = spec.launch, spec.accelerator
    table = lc.spot_prices if lc.spot else lc.prices
    key = {k.upper(): v for k, v in table.items()}
    for alias in _aliases(name):
        if alias.upper() in key:
            return key[alias.upper()], f"launch.{'spot_prices' if lc.spot else 'prices'}"
    cost = spec.cfg.train.cost
    if (
        cost.price_per_hour > 0
        and not lc.spot
        and name.upper() in {a.upper() for a in _aliases(cost.accelerator)}
    ):
        return cost.price_per_hour, "train.cost.price_per_hour"
    on_demand, spot = PRICES.get(name, (0.0, 0.0))
    return (spot if lc.spot else on_demand), "built-in table (indicative)"


def _aliases(name: str) -> set[str]:
    gpu = next((g for g in GPUS if name.upper() in {g.name.upper(), g.sky.upper()}), None)
    return {name} if gpu is None else {gpu.name, gpu.sky}


def training_steps(spec: LaunchSpec) -> tuple[int | None, str]:
    t = spec.cfg.train
    if t.max_steps:
        return t.max_steps, "train.max_steps"
    records = count_records(spec.cfg)
    if records is None:
        return None, "unknown: set train.max_steps, or use a jsonl/manifest source the preview can count"
    split = spec.cfg.data.split
    train = records if split.strategy == "predefined" else int(records * split.train)
    per_step = t.batch_size * t.gradient_accumulation_steps * spec.world_size
    return math.ceil(t.epochs * math.ceil(train / per_step)), f"{train} training records (estimated)"


def count_records(cfg) -> int | None:
    total = 0
    for src in cfg.data.sources:
        try:
            if src.type == "jsonl":
                with open(src.path, "rb") as fh:
                    total += sum(1 for line in fh if line.strip())
            elif src.type == "manifest" and src.path.suffix == ".csv":
                with open(src.path, "rb") as fh:
                    total += max(0, sum(1 for line in fh if line.strip()) - 1)
            elif src.type == "manifest":
                import pyarrow.parquet as pq

                total += pq.ParquetFile(src.path).metadata.num_rows
            elif src.type == "image_folder":
                total += sum(1 for p in src.path.rglob("*") if p.is_file())
            else:
                return None
        except OSError:
            return None
    return total


def preview(spec: LaunchSpec) -> CostPreview:
    notes: list[str] = []
    cfg = spec.cfg
    steps, steps_source = training_steps(spec)
    accelerators = spec.nodes * max(1, spec.gpus_per_node)
    tflops = spec.gpu.tflops if spec.gpu else CPU_TFLOPS
    fits = peak = None
    flops = hours = acc_hours = None
    tokens = None
    try:
        from tuneline.training.plan import GiB, make_plan, model_profile

        profile = model_profile(cfg.model, cfg.train)
        plan = make_plan(cfg, accelerator=spec.accelerator, profile=profile)
        fits, peak = plan.fits, plan.estimate.peak / GiB
        if not fits:
            notes.append(
                f"train.batch_size {cfg.train.batch_size} does not fit {spec.accelerator}: see tuneline plan"
            )
        if steps is not None:
            per_step = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * spec.world_size
            tokens = steps * per_step * cfg.data.max_seq_length
            factor = 6 if cfg.train.method == "full" else 4
            flops = float(factor * profile.params * tokens)
            hours = flops / (accelerators * tflops * 1e12 * cfg.launch.mfu) / 3600
            acc_hours = hours * accelerators
    except Exception as exc:  # noqa: BLE001 - a preview never blocks a launch
        notes.append(f"no estimate from the planner: {exc}")
    per_hour, price_source = price(spec)
    if per_hour == 0 and spec.accelerator != "cpu":
        notes.append(
            f"no price for {spec.accelerator}: set launch.{'spot_prices' if cfg.launch.spot else 'prices'}"
        )
    return CostPreview(
        accelerator=spec.accelerator,
        accelerators=accelerators,
        spot=cfg.launch.spot,
        steps=steps,
        steps_source=steps_source,
        tokens=tokens,
        train_flops=flops,
        hours=hours,
        accelerator_hours=acc_hours,
        price_per_hour=per_hour,
        price_source=price_source,
        cost=None if acc_hours is None else acc_hours * per_hour,
        fits=fits,
        peak_memory_gib=None if peak is None else round(peak, 3),
        notes=tuple(notes),
    )


def render(p: CostPreview) -> str:
    def num(v, fmt):
        return "?" if v is None else format(v, fmt)

    lines = [
        f"cost preview: {p.accelerators} x {p.accelerator}{' (spot)' if p.spot else ''}, "
        f"{num(p.steps, 'd')} steps ({p.steps_source})",
        f"  ~{num(p.hours, '.3g')} h wall-clock, {num(p.accelerator_hours, '.3g')} accelerator-hours x "
        f"{p.price_per_hour:.2f}/h ({p.price_source}) = {num(p.cost, '.2f')}",
    ]
    if p.fits is not None:
        lines.append(
            f"  memory: peak {p.peak_memory_gib:.2f} GiB per process, {'fits' if p.fits else 'DOES NOT FIT'}"
        )
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)
