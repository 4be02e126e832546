"""Benchmark: a sweep's overhead over its trials run alone, and 2 workers against 1.

On generated shapes data (tiny Gemma 3 at sizes s and m, LoRA and full: 4 trials), in fresh working
directories:

- alone: each candidate as its own `tuneline run` (prepare, train, evaluate; registry off), summed;
- sweep: `tuneline sweep` of the same candidates (one prepare, shared; nested MLflow runs off);
- workers: the same sweep with a fresh study, by 1 `--worker` process and by 2 at once.

Prints the wall times and the ratios measured in this one run (goal: sweep / sum(alone) <= 1.10).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_sweep.py [--steps 20] [--records 160]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = {
    "s-lora": {"model.base": "tiny:gemma3@s", "train.method": "lora"},
    "m-lora": {"model.base": "tiny:gemma3@m", "train.method": "lora"},
    "s-full": {"model.base": "tiny:gemma3@s", "train.method": "full"},
    "m-full": {"model.base": "tiny:gemma3@m", "train.method": "full"},
}
CONFIG = """
run: {{name: bench, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 1.0e-3, batch_size: 8, max_steps: {steps}, save_steps: 10,
        cost: {{price_per_hour: 0.1}}}}
eval: {{task: classification, batch_size: 32, max_new_tokens: 2, baselines: {{embedding_logreg: false}},
       gate: {{enabled: false}}}}
registry: {{enabled: false}}
sweep:
  candidates:
{candidates}
  metric: accuracy
"""
EXE = str(Path(sys.executable).with_name("tuneline"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _timed(*commands: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in commands
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(commands[0])} failed:\n{err.decode()[-3000:]}")
    return time.perf_counter() - started


def _workdir(root: Path, name: str, data: Path, steps: int) -> tuple[Path, Path]:
    folder = root / name
    folder.mkdir()
    cands = "\n".join(
        "    - {name: " + k + ", overrides: {" + ", ".join(f'{a}: "{b}"' for a, b in v.items()) + "}}"
        for k, v in CANDIDATES.items()
    )
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(data=data, steps=steps, candidates=cands))
    return folder, config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--records", type=int, default=160)
    args = ap.parse_args()
    from tuneline_synth.shapes import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("TUNELINE_CACHE_DIR", str(root / "cache"))
        ENV["TUNELINE_CACHE_DIR"] = os.environ["TUNELINE_CACHE_DIR"]
        generate(root / "data", n=args.records, seed=3)
        data = root / "data" / "data.jsonl"
        # Warm the tiny presets so no measurement pays for building them.
        folder, config = _workdir(root, "warm", data, 1)
        _timed([EXE, "sweep", str(config)], cwd=folder)

        folder, config = _workdir(root, "alone", data, args.steps)
        alone = {}
        for name, overrides in CANDIDATES.items():
            sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
            alone[name] = _timed([EXE, "run", str(config), "--new", *sets], cwd=folder)
        folder, config = _workdir(root, "sweep", data, args.steps)
        sweep = _timed([EXE, "sweep", str(config)], cwd=folder)
        folder, config = _workdir(root, "one-worker", data, args.steps)
        one = _timed([EXE, "sweep", str(config), "--worker"], cwd=folder)
        folder, config = _workdir(root, "two-workers", data, args.steps)
        two = _timed(*[[EXE, "sweep", str(config), "--worker"]] * 2, cwd=folder)

    total = sum(alone.values())
    print(f"{'candidate':<10} {'alone (s)':>10}")
    for name, seconds in alone.items():
        print(f"{name:<10} {seconds:>10.1f}")
    print(f"{'sum':<10} {total:>10.1f}")
    print(f"sweep (one process, shared prepare): {sweep:.1f} s -> sweep / sum(alone) = {sweep / total:.3f}")
    print(f"1 worker {one:.1f} s, 2 workers {two:.1f} s -> speed-up {one / two:.2f}x")
    print("goal sweep / sum(alone) <= 1.10:", "met" if sweep / total <= 1.10 else "NOT met")


if __name__ == "__main__":
    main()
