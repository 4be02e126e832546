"""The accelerators a plan can target, the measured constants of the memory model, and byte units."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Literal

from tuneline.errors import TunelineError

Method = Literal["lora", "dora", "qlora", "full"]
Dtype = Literal["float32", "bfloat16", "float16"]

GiB = 1024**3
MiB = 1024**2
# RSS of a process that has imported torch, transformers, peft and the Trainer (measured on the pinned
# stack: 0.51 GiB). What a CPU run holds before it allocates its first weight.
CPU_OVERHEAD = int(0.52 * GiB)
# CUDA context, kernel images and cuBLAS workspace: device memory PyTorch does not count as allocated.
GPU_OVERHEAD = int(0.8 * GiB)
# nf4: 4-bit codes plus one fp32 absmax per 64-weight block (no double quantization).
NF4_BYTES = 0.5 + 4 / 64
# Logits and cross-entropy per (kept token x vocabulary) element: the logits, log-softmax (saved),
# its gradient and the logits' gradient, ~13 bytes in fp32 (calibrated); a 16-bit model adds its
# own-dtype logits and gradient before the fp32 upcast.
LOGITS_BYTES_FP32 = 13
LOGITS_BYTES_EXTRA_16BIT = 4
# Images whose size the config does not fix (Qwen-VL dynamic resolution): a 448x448 image, patch 14.
DYNAMIC_IMAGE_PATCHES = 1024
MAX_BATCH = 4096  # the batch search stops here: "4096 or more"
HEADROOM_TARGET = 0.10  # below this, allocator fragmentation can tip a run over
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}


class PlanError(TunelineError):
    """A plan that cannot be made as asked (an unknown accelerator, an impossible option)."""

    exit_code = 2


# ------------------------------------------------------------------------- accelerators
@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # total memory as the driver reports it (cpu: this machine's RAM)
    kind: Literal["gpu", "cpu"]
    bf16: bool = True
    aliases: tuple[str, ...] = ()


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("H100-80GB", 81559 * MiB, "gpu", aliases=("H100",)),
    Accelerator("H200-141GB", 143771 * MiB, "gpu", aliases=("H200",)),
    Accelerator("A100-40GB", 40960 * MiB, "gpu"),
    Accelerator("A100-80GB", 81920 * MiB, "gpu"),
    Accelerator("L4-24GB", 23034 * MiB, "gpu", aliases=("L4",)),
    Accelerator("A10G-24GB", 23028 * MiB, "gpu", aliases=("A10G", "A10")),
    Accelerator("T4-16GB", 15360 * MiB, "gpu", bf16=False, aliases=("T4",)),
    Accelerator("V100-16GB", 16384 * MiB, "gpu", bf16=False),
    Accelerator("V100-32GB", 32768 * MiB, "gpu", bf16=False),
)


def _norm(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper().replace("NVIDIA", ""))


def machine_memory() -> int:
    """This machine's RAM in bytes."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def accelerator_names() -> list[str]:
    return [a.name for a in ACCELERATORS] + ["cpu"]


def get_accelerator(name: str) -> Accelerator:
    """An accelerator by name (case, dashes and an 'NVIDIA' prefix do not matter); cpu = this machine."""
    key = _norm(name)
    if key == "CPU":
        return Accelerator("cpu", machine_memory(), "cpu")
    for acc in ACCELERATORS:
        if key in {_norm(acc.name), *map(_norm, acc.aliases)}:
            return acc
    prefixed = [a.name for a in ACCELERATORS if key and _norm(a.name).startswith(key)]
    if len(prefixed) > 1:
        hint = f"{name!r} is ambiguous: say {' or '.join(prefixed)}"
    else:
        lookup = {_norm(n): n for n in accelerator_names()}
        close = difflib.get_close_matches(key, lookup, n=1, cutoff=0.5)
        hint = f"did you mean {lookup[close[0]]!r}? " if close else ""
        hint += f"known accelerators: {', '.join(accelerator_names())}"
    raise PlanError(f"unknown accelerator {name!r}", hint=hint)


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def human(n: float) -> str:
    """Bytes for people: GiB from 1 GiB, MiB below, '-' for nothing."""
    if not n:
        return "-"
    return gib(n) if n >= GiB else f"{n / MiB:.1f} MiB"


def count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
