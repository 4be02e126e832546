"""Benchmark: the same small task trained without DP and with DP at epsilon 8, 3 and 1 (delta = 1/n).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_privacy.py [--seeds 0 1 2] [--steps 300]

Each run is a fresh `tuneline run` (tiny:llama, LoRA, 300 steps, batch 8) on 200 generated labelled text
records ("The ball is red. Colour?" -> "red", four colours; split 70/5/25 stratified), with 5
secret-sharer canaries planted in training (eval.audit.canaries: 5, 99 candidates each). Without DP the
learning rate is 1e-2; under DP 5e-2 (clipped, noised gradients are smaller). Printed per run: the
primary metric (macro ROC-AUC over the four label scores, on the test split) with its 95% bootstrap CI,
accuracy, the test loss, the epsilon the accountant reports, the canaries' mean exposure next to the
never-trained controls', the training time per step and the DP overhead per step (DP time / no-DP time
of the same seed, in the same invocation). With --seeds, each setting runs once per seed.
"""

from __future__ import annotations

import argparse
import json
import math
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
  split: {{strategy: stratified, train: 0.7, val: 0.05, test: 0.25}}
train:
  learning_rate: {lr}
  batch_size: {batch}
  max_steps: {steps}
  logging_steps: 50
  save_steps: 100000
  privacy: {{dp: {dp}}}
eval: {{max_new_tokens: 3, gate: {{enabled: false}}, audit: {{canaries: 5}}}}
registry: {{enabled: false}}
"""

SETTINGS = [("no DP", "null"), ("DP eps 8", "{target_epsilon: 8.0}"), ("DP eps 3", "{target_epsilon: 3.0}")]
SETTINGS.append(("DP eps 1", "{target_epsilon: 1.0}"))


def _data(folder: Path, n: int) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        c = rng.choice(["red", "green", "blue", "yellow"])
        messages = [
            {"role": "user", "content": f"The ball is {c}. Colour?"},
            {"role": "assistant", "content": c},
        ]
        lines.append(json.dumps({"id": f"t{i}", "label": c, "messages": messages}))
    path = folder / "balls.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(folder: Path, data: Path, seed: int, args: argparse.Namespace, dp: str) -> dict:
    config = folder / "config.yaml"
    config.write_text(
        CONFIG.format(
            seed=seed,
            data=data,
            steps=args.steps,
            batch=args.batch_size,
            lr=args.lr if dp == "null" else args.dp_lr,
            dp=dp,
        )
    )
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
        "accuracy": tuned["metrics"].get("accuracy"),
        "loss": tuned["loss"],
        "epsilon": dp_rec["epsilon"] if dp_rec else None,
        "exposure": report["audit"]["exposure_mean"],
        "control": report["audit"]["control_exposure_mean"],
        "s_per_step": summary["train"]["seconds"] / summary["train"]["steps"],
        "n_train": summary["data"]["counts"]["train"],
        "n_test": report["n"],
        "canaries": report["audit"]["canaries"],
        "candidates": report["audit"]["candidates"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-2, help="learning rate without DP")
    # Clipped, noised gradients are smaller: DP trains at a higher rate (1e-2 barely moved it at eps 8,
    # AUC 0.84, loss 3.75; 5e-2 without DP diverged, AUC 0.68).
    ap.add_argument("--dp-lr", type=float, default=5e-2, help="learning rate under DP")
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--only", nargs="+", help="settings to run (default: all), e.g. 'no DP' 'DP eps 8'")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        data = _data(Path(tmp), args.records)
        for seed in args.seeds:
            for name, dp in SETTINGS:
                if args.only and name not in args.only:
                    continue
                folder = Path(tmp) / f"{seed}-{name.replace(' ', '_')}"
                folder.mkdir()
                rows.append((seed, name, _run(folder, data, seed, args, dp)))
                r = rows[-1][2]
                print(f"  done: seed {seed} {name}: exposure {r['exposure']:.2f}", file=sys.stderr)
    first = rows[0][2]
    print(
        f"tiny:llama LoRA, {args.steps} steps, batch {args.batch_size}, lr {args.lr:g} (DP: {args.dp_lr:g}), "
        f"{first['n_train']} train records + {first['canaries']} canaries, "
        f"{first['n_test']} test records, CPU"
    )
    primary = f"{first['primary']} [95% CI]"
    print(
        f"{'seed':>4} {'setting':<9} {primary:<22} {'accuracy':>8} {'test loss':>9} {'epsilon':>8} "
        f"{'exposure':>8} {'control':>7} {'s/step':>7} {'DP overhead':>11}"
    )
    base = {seed: r["s_per_step"] for seed, name, r in rows if name == "no DP"}
    for seed, name, r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        ci = f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
        overhead = "-" if name == "no DP" or seed not in base else f"{r['s_per_step'] / base[seed]:.2f}x"
        print(
            f"{seed:>4} {name:<9} {ci:<22} {acc:>8} {r['loss']:>9.4f} {eps:>8} {r['exposure']:>8.2f} "
            f"{r['control']:>7.2f} {r['s_per_step']:>7.4f} {overhead:>11}"
        )
    print(
        f"exposure: mean bits over the {first['canaries']} planted canaries, each ranked among "
        f"{first['candidates']} random candidates (at most {math.log2(first['candidates'] + 1):.2f}); "
        "control: the same for never-trained canaries; s/step: training time per optimizer step"
    )


if __name__ == "__main__":
    main()
