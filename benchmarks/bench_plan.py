"""Benchmark: `tuneline plan` estimates against the measured peak memory of real training steps.

For each case a model of a real architecture is built from its config with random weights, in a
fresh process, and trained for a few steps the way the train stage does it: ``prepare_for_training``
(lora / full; qlora loads through ``load_model``), the stage's ``TunelineTrainer`` and loss, AdamW,
fp32 on CPU, sdpa attention. The process's peak RSS (VmHWM, with ``MALLOC_MMAP_THRESHOLD_=65536`` so
freed activations go back to the system) is compared with the plan's estimate for the same config on
``cpu``. Exits 1 when any ratio estimate/measured falls outside 1 ± 0.25. "beyond stack" is the same
ratio without the imported stack's fixed RSS (the plan's CPU overhead) on both sides: the stricter view
of the parts that grow with the model and the batch.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_plan.py [--only NAME ...] [--tolerance 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024**3


@dataclass(frozen=True)
class Case:
    name: str
    arch: str  # llama | gemma3
    size: dict[str, int]  # text sizes: hidden, layers, intermediate, heads, kv_heads, vocab
    method: str
    batch: int
    seq: int
    answer: int  # label tokens per sample (at the end of each row)
    answer_only: bool = True
    checkpointing: bool = False
    steps: int = 2  # the second step's forward holds the optimizer state: the usual peak
    vision: dict[str, int] = field(default_factory=dict)


LLAMA_20M = {"hidden": 256, "layers": 6, "intermediate": 704, "heads": 4, "kv_heads": 4, "vocab": 32000}
LLAMA_60M = {"hidden": 512, "layers": 8, "intermediate": 1376, "heads": 8, "kv_heads": 8, "vocab": 32000}
LLAMA_150M = {"hidden": 768, "layers": 14, "intermediate": 2304, "heads": 12, "kv_heads": 4, "vocab": 32000}
GEMMA3_TEXT = {"hidden": 512, "layers": 6, "intermediate": 1536, "heads": 8, "kv_heads": 4, "vocab": 32000}
GEMMA3_VISION = {"hidden": 384, "layers": 6, "intermediate": 1536, "heads": 6, "image": 224, "patch": 16}

CASES = (
    Case("llama-20m-lora", "llama", LLAMA_20M, "lora", batch=8, seq=256, answer=16),
    Case(
        "llama-20m-lora-all-logits",
        "llama",
        LLAMA_20M,
        "lora",
        batch=8,
        seq=256,
        answer=16,
        answer_only=False,
    ),
    Case("llama-60m-full", "llama", LLAMA_60M, "full", batch=4, seq=256, answer=8),
    Case("llama-60m-qlora", "llama", LLAMA_60M, "qlora", batch=4, seq=256, answer=8),
    Case("llama-60m-lora-ckpt", "llama", LLAMA_60M, "lora", batch=8, seq=256, answer=8, checkpointing=True),
    Case("llama-150m-lora", "llama", LLAMA_150M, "lora", batch=4, seq=128, answer=8),
    Case("llama-150m-full", "llama", LLAMA_150M, "full", batch=2, seq=128, answer=8),
    Case("gemma3-vlm-lora", "gemma3", GEMMA3_TEXT, "lora", batch=4, seq=256, answer=8, vision=GEMMA3_VISION),
)
IMAGE_TOKENS = 49  # gemma3 case: tokens per image in the text (a square whose root divides 224/16)


# ------------------------------------------------------------------------- model configs
def model_config(case: Case) -> Any:
    s = case.size
    text = {
        "hidden_size": s["hidden"],
        "num_hidden_layers": s["layers"],
        "intermediate_size": s["intermediate"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "vocab_size": s["vocab"],
        "max_position_embeddings": max(1024, case.seq),
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if case.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**text, tie_word_embeddings=False)
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    v = case.vision
    vision = SiglipVisionConfig(
        hidden_size=v["hidden"],
        num_hidden_layers=v["layers"],
        intermediate_size=v["intermediate"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
    )
    vocab = s["vocab"]
    return Gemma3Config(
        text_config=Gemma3TextConfig(**text, head_dim=s["hidden"] // s["heads"], sliding_window=512),
        vision_config=vision,
        mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=vocab - 3,
        eoi_token_index=vocab - 2,
        image_token_index=vocab - 1,
    )


def write_model(case: Case, folder: Path) -> None:
    """config.json; random weights too where the worker loads them (qlora quantizes while loading)."""
    config = model_config(case)
    if case.method != "qlora":
        config.save_pretrained(folder)
        return
    import torch
    import transformers

    from tuneline.models.families import family_for_model_type

    torch.manual_seed(0)
    auto = getattr(transformers, family_for_model_type(config.model_type).auto_class)
    auto.from_config(config).save_pretrained(folder)


def tuneline_config(case: Case, model_dir: Path) -> dict[str, Any]:
    return {
        "model": {"base": str(model_dir)},
        "data": {
            "sources": [{"type": "jsonl", "path": str(model_dir / "unused.jsonl")}],
            "max_seq_length": case.seq,
        },
        "train": {
            "method": case.method,
            "lora": {"r": 16, "alpha": 32},
            "batch_size": case.batch,
            "max_steps": case.steps,
            "gradient_checkpointing": case.checkpointing,
            "answer_only_logits": case.answer_only,
            "cost": {"accelerator": "cpu"},
        },
        "registry": {"enabled": False},
    }


# ------------------------------------------------------------------------- the measured side
def _rows(case: Case, config: Any, n: int) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    vocab = case.size["vocab"]
    for _ in range(n):
        ids = torch.randint(10, vocab - 3, (case.seq,), generator=g)
        row: dict[str, Any] = {}
        if case.arch == "gemma3":
            # <boi> image tokens <eoi> after the first token; bidirectional attention on the image.
            ids[1] = config.boi_token_index
            ids[2 : 2 + IMAGE_TOKENS] = config.image_token_index
            ids[2 + IMAGE_TOKENS] = config.eoi_token_index
            row["token_type_ids"] = (ids == config.image_token_index).long()
            side = case.vision["image"]
            row["pixel_values"] = torch.randn(3, side, side, generator=g)
        labels = torch.full((case.seq,), -100)
        labels[-case.answer :] = ids[-case.answer :]
        row.update(input_ids=ids, attention_mask=torch.ones(case.seq, dtype=torch.long), labels=labels)
        rows.append(row)
    return rows


def worker(case: Case, cfg_data: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One training run, as the train stage does it; returns the process's peak RSS."""
    import torch
    import transformers
    from transformers import TrainingArguments, set_seed

    from tuneline.config import Config
    from tuneline.models.families import family_for_model_type
    from tuneline.training.adapters import prepare_for_training
    from tuneline.training.loss import TunelineTrainer

    torch.set_num_threads(1)
    cfg = Config.model_validate(cfg_data)
    config = transformers.AutoConfig.from_pretrained(cfg.model.base)
    family = family_for_model_type(config.model_type)
    if cfg.train.method == "qlora":  # nf4 happens while loading: tuneline's own from_pretrained path
        from tuneline.models.load import load_model, resolve_base

        model = load_model(resolve_base(cfg.model), "float32", quantize_4bit=True)
    else:
        torch.manual_seed(0)
        model = getattr(transformers, family.auto_class).from_config(config, dtype=torch.float32)
    set_seed(0)
    model = prepare_for_training(model, cfg.train, family)
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.train.batch_size,
        max_steps=cfg.train.max_steps or 2,
        learning_rate=cfg.train.learning_rate,
        max_grad_norm=cfg.train.max_grad_norm,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1000,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    rows = _rows(case, config, cfg.train.batch_size * args.max_steps)
    common = {
        "model": model,
        "args": args,
        "train_dataset": rows,
        "data_collator": lambda batch: {k: torch.stack([r[k] for r in batch]) for k in batch[0]},
    }
    # The stage's trainer and loss (answer-only logits or not); its sampler and image cache change which
    # samples come when, not what a step holds.
    trainer = TunelineTrainer(**common, answer_only=cfg.train.answer_only_logits)
    started = time.time()
    trainer.train()
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return {"peak_bytes": hwm * 1024, "seconds": time.time() - started}


def measure(case: Case, cfg_data: dict[str, Any], folder: Path) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = subprocess.run(
        [sys.executable, __file__, "--worker", case.name, json.dumps(cfg_data), str(folder / "out")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{case.name}: worker failed\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------- the estimated side
def estimate(case: Case, cfg_data: dict[str, Any]) -> Any:
    from tuneline.config import Config
    from tuneline.training.plan import make_plan

    return make_plan(Config.model_validate(cfg_data), accelerator="cpu", answer_tokens=case.answer)


def run(cases: list[Case], tolerance: float) -> int:
    from rich.console import Console
    from rich.table import Table

    from tuneline.training.plan import CPU_OVERHEAD

    table = Table(
        title=f"tuneline plan vs measured peak RSS (CPU, fp32; pass: ratio within 1 ± {tolerance:g})"
    )
    columns = (
        "case",
        "params",
        "trainable",
        "batch x seq",
        "measured",
        "estimate",
        "ratio",
        "beyond stack",
        "step s",
        "",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("case", "") else "right")
    failed = 0
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        for case in cases:
            folder = Path(tmp) / case.name
            write_model(case, folder)
            cfg_data = tuneline_config(case, folder)
            plan = estimate(case, cfg_data)
            measured = measure(case, cfg_data, folder)
            ratio = plan.estimate.peak / measured["peak_bytes"]
            ok = abs(ratio - 1) <= tolerance
            failed += not ok
            params = plan.profile.params
            table.add_row(
                case.name,
                f"{params / 1e6:.1f}M",
                f"{plan.profile.method(case.method).trainable / 1e6:.2f}M",
                f"{case.batch} x {case.seq}",
                f"{measured['peak_bytes'] / GiB:.3f} GiB",
                f"{plan.estimate.peak / GiB:.3f} GiB",
                f"{ratio:.3f}",
                f"{(plan.estimate.peak - CPU_OVERHEAD) / (measured['peak_bytes'] - CPU_OVERHEAD):.3f}",
                f"{measured['seconds'] / case.steps:.1f}",
                "ok" if ok else "[bold red]OUT[/]",
            )
            print(
                f"{case.name}: measured {measured['peak_bytes'] / GiB:.3f} GiB, estimate "
                f"{plan.estimate.peak / GiB:.3f} GiB, ratio {ratio:.3f}",
                file=sys.stderr,
            )
    console = Console(width=150)
    console.print(table)
    console.print(f"{len(cases)} cases in {time.time() - started:.0f} s; {failed} outside ±{tolerance:.0%}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CASES], help="run only these cases")
    parser.add_argument("--tolerance", type=float, default=0.25, help="allowed |estimate/measured - 1|")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "CONFIG_JSON", "OUT"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        name, cfg_json, out = ns.worker
        case = next(c for c in CASES if c.name == name)
        print(json.dumps(worker(case, json.loads(cfg_json), Path(out))))
        return 0
    cases = [c for c in CASES if not ns.only or c.name in ns.only]
    return run(cases, ns.tolerance)


if __name__ == "__main__":
    sys.exit(main())
