"""Benchmark: the same small task trained without DP and with DP at epsilon 8, 3 and 1 (delta = 1/n).

Each run is a fresh `tuneline run` (tiny:llama, LoRA, 300 steps, batch 8, lr 1e-2) on 200 generated
text records ("The ball is red. Colour?" -> "red"), with 5 secret-sharer canaries planted in training
(eval.audit.canaries). Printed per run: the primary metric (exact match on the test split) with its
95% bootstrap CI, the test loss, the epsilon the accountant reports, the canaries' mean exposure
against the never-trained controls', and the time per training step; then the DP overhead per step
(DP time / no-DP time, measured in the same invocation). With --seeds, each setting runs once per seed.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_privacy.py [--seeds 0 1 2] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = """
run: {{name: bench, seed: {seed}}}
model: {{base: "tiny:llama"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  max_seq_length: 64
train:
  learning_rate: 1.0e-2
  batch_size: 8
  max_steps: {steps}
  logging_steps: 50
  save_steps: 100000
  privacy: {{dp: {dp}}}
eval: {{max_new_tokens: 3, gate: {{enabled: false}}, audit: {{canaries: 5}}}}
registry: {{enabled: false}}
"""

SETTINGS = [("no DP", "null"), ("DP eps 8", "{target_epsilon: 8.0}"), ("DP eps 3", "{target_epsilon: 3.0}")]
SETTINGS.append(("DP eps 1", "{target_epsilon: 1.0}"))


def _data(folder: Path) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(200):
        c = rng.choice(["red", "green", "blue", "yellow"])
        messages = [
            {"role": "user", "content": f"The ball is {c}. Colour?"},
            {"role": "assistant", "content": c},
        ]
        lines.append(json.dumps({"id": f"t{i}", "messages": messages}))
    path = folder / "balls.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(folder: Path, data: Path, seed: int, steps: int, dp: str) -> dict:
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(seed=seed, data=data, steps=steps, dp=dp))
    exe = Path(sys.executable).with_name("tuneline")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(exe), "run", str(config)], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (run_dir,) = (folder / "runs" / "bench").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    tuned = report["models"]["tuned"]
    dp_rec = (summary["train"].get("privacy") or {}).get("dp")
    return {
        "primary": report["primary"],
        "value": tuned["metrics"][report["primary"]],
        "ci": tuned["ci"][report["primary"]],
        "loss": tuned["loss"],
        "epsilon": dp_rec["epsilon"] if dp_rec else None,
        "exposure": report["audit"]["exposure_mean"],
        "control": report["audit"]["control_exposure_mean"],
        "s_per_step": summary["train"]["seconds"] / summary["train"]["steps"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        data = _data(Path(tmp))
        for seed in args.seeds:
            for name, dp in SETTINGS:
                folder = Path(tmp) / f"{seed}-{name.replace(' ', '_')}"
                folder.mkdir()
                rows.append((seed, name, _run(folder, data, seed, args.steps, dp)))
                r = rows[-1][2]
                print(f"  done: seed {seed} {name}: exposure {r['exposure']:.2f}", file=sys.stderr)
    print(f"tiny:llama LoRA, {args.steps} steps, batch 8, 200 records (160 train + 5 canaries), CPU")
    head = (
        f"{'seed':>4} {'setting':<9} {'exact match [95% CI]':<22} {'test loss':>9} {'epsilon':>8} "
        f"{'exposure':>8} {'control':>7} {'s/step':>7} {'DP overhead':>11}"
    )
    print(head)
    base = {seed: r["s_per_step"] for seed, name, r in rows if name == "no DP"}
    for seed, name, r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        ci = f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        overhead = "-" if name == "no DP" else f"{r['s_per_step'] / base[seed]:.2f}x"
        print(
            f"{seed:>4} {name:<9} {ci:<22} {r['loss']:>9.4f} {eps:>8} {r['exposure']:>8.2f} "
            f"{r['control']:>7.2f} {r['s_per_step']:>7.4f} {overhead:>11}"
        )
    print("exposure: mean over the 5 planted canaries, log2(100) = 6.64 bits at most; control: never trained")


if __name__ == "__main__":
    main()
