"""tuneline against TRL, Axolotl and LLaMA-Factory on identical work, interleaved, under one probe.

    bash benchmarks/peers/build_envs.sh                      # once: the three peers' virtual environments
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/peers/run_peers.py --reps 3

Shared assets (built here with tuneline's tiny builders, under benchmarks/peers/.work/, git-ignored):

* a tiny Llama (``tiny:llama``: vocab 512, hidden 64, 2 layers) whose chat template inserts
  ``message['content']`` as a string, like most text models' templates (Llama 3's shape, so
  LLaMA-Factory's ``llama3`` template renders the same prompt);
* a tiny Gemma 3 (``tiny:gemma3``: SigLIP tower, 4 image tokens per 32 px image) and image chats
  (``tuneline data synth shapes``: name the colour of a shape);
* the data: tuneline's ``prepare`` writes the train split once (512 text rows, 512 image chats), and
  that split is exported into each peer's documented chat format, so all four train on the same rows.

Tasks (LoRA r 8 / alpha 16 on every linear layer of the language model, batch 4, length 256, lr 1e-3,
answer-only loss everywhere, fp32, no evaluation or checkpoints):

* ``text``  no packing (each framework's default batching);
* ``pack``  each framework's packing switch (TRL ``packing=True``: best-fit-decreasing padding-free rows;
  Axolotl ``sample_packing``; LLaMA-Factory ``packing``; tuneline ``train.packing``);
* ``image`` image + text chats on the tiny Gemma 3, >= 2 epochs (tuneline's image-feature cache then
  serves the second).

Each run is its own process in its framework's environment (benchmarks/peers/workers.py) with the probe of
benchmarks/peers/probe.py (``transformers.Trainer.__init__`` wrapped identically; tokens counted from each
batch as the model receives it). Runs are interleaved: repetition r runs every task and framework before
repetition r+1, the framework order rotated. Per run: non-pad tokens per wall-second and per CPU-second
(process CPU time: what a run costs without the other load of a shared machine), samples/s, padding
(share of positions that are not tokens), peak RSS, images in the batches and vision-tower calls. The
tables give medians over the repetitions and the min-max spread of tokens per CPU-second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = HERE / ".work"
ENVS = HERE / ".envs"
FRAMEWORKS = ("tuneline", "trl", "axolotl", "llamafactory")
TASKS = ("text", "pack", "image")
SETTINGS = {"lora_r": 8, "lora_alpha": 16, "batch_size": 4, "max_length": 256, "lr": 1e-3}
# Steps per task: >= 10 s of timed work per framework on this machine; image: 2 epochs of 512 chats.
STEPS = {"text": 440, "pack": 190, "image": 256}
WARMUP = 4

# Llama 3's shape of template: content inserted as a string (not content parts).
STRING_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Which packing keeps samples apart: from what the probe saw in the packed batches (printed under the pack
# table) and benchmarks/peers/isolation.py run in each environment (restarting position ids with no mask
# get transformers' block-diagonal mask under SDPA; the same ids with an all-ones 2-d mask do not).
ISOLATION = {
    "tuneline": "isolated: no mask, position ids restart, transformers builds the block-diagonal mask "
    "(tests/training/test_packing.py)",
    "trl": "isolated: padding-free rows, no mask, position ids restart",
    "axolotl": "isolated: multipack rows without a mask, position ids restart "
    "(Axolotl 0.19, transformers 5.16)",
    "llamafactory": "NOT isolated: packing (neat_packing off) sends an all-ones 2-d mask, so samples "
    "in a row "
    "attend to each other",
}


def python_of(framework: str) -> Path:
    return (
        ROOT / ".venv" / "bin" / "python" if framework == "tuneline" else ENVS / framework / "bin" / "python"
    )


# ====================================================================== assets


def _bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", HERE.parent / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tuneline_config(task: str, model_dir: Path, data_file: Path, steps: int, out: Path) -> str:
    return f"""
run: {{name: peers-{task}, seed: 0, output_dir: "{out}"}}
model: {{base: "{model_dir}"}}
data:
  sources: [{{type: jsonl, path: "{data_file}"}}]
  split: {{strategy: random, train: 0.98, val: 0.01, test: 0.01}}
  max_seq_length: {SETTINGS["max_length"]}
  checks: {{actions: {{duplicate_near: warn, duplicate_exact: warn, label_conflict: warn}}}}
train:
  lora: {{r: {SETTINGS["lora_r"]}, alpha: {SETTINGS["lora_alpha"]}, dropout: 0.0}}
  learning_rate: {SETTINGS["lr"]}
  batch_size: {SETTINGS["batch_size"]}
  max_steps: {steps}
  logging_steps: 10
  save_steps: 100000
  packing: {str(task == "pack").lower()}
registry: {{enabled: false}}
"""


def _text(parts) -> str:
    return "".join(p["text"] for p in parts if p["type"] == "text")


def export(records: list, kind: str, folder: Path) -> dict[str, Path]:
    """The train split in each peer's documented chat format."""
    trl, axo, lf = [], [], []
    for r in records:
        user, answer = r.messages[0], r.messages[1]
        question, reply = _text(user["content"]), _text(answer["content"])
        images = list(r.images)
        if kind == "image":
            trl.append(
                {
                    "prompt": [
                        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
                    ],
                    "completion": [{"role": "assistant", "content": [{"type": "text", "text": reply}]}],
                    "images": images,
                }
            )
            axo.append(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                *({"type": "image", "path": p} for p in images),
                                {"type": "text", "text": question},
                            ],
                        },
                        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
                    ]
                }
            )
            lf.append(
                {
                    "messages": [
                        {"role": "user", "content": "<image>" * len(images) + question},
                        {"role": "assistant", "content": reply},
                    ],
                    "images": images,
                }
            )
        else:
            trl.append(
                {
                    "prompt": [{"role": "user", "content": question}],
                    "completion": [{"role": "assistant", "content": reply}],
                }
            )
            axo.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}
            )
            lf.append({"messages": axo[-1]["messages"]})
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "trl": folder / "trl.jsonl",
        "axolotl": folder / "axolotl.jsonl",
        "llamafactory": folder / "lf.json",
    }
    files["trl"].write_text("".join(json.dumps(x) + "\n" for x in trl))
    files["axolotl"].write_text("".join(json.dumps(x) + "\n" for x in axo))
    files["llamafactory"].write_text(json.dumps(lf))
    info = {
        "peers": {
            "file_name": "lf.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", **({"images": "images"} if kind == "image" else {})},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return files


def build_assets() -> dict:
    """Models, data and each framework's data files; returns paths by kind ('text' / 'image')."""
    from transformers import AutoTokenizer

    from tuneline.config import load_config
    from tuneline.data.records import read_records
    from tuneline.models.families import get_family
    from tuneline.models.load import tiny_folder
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage
    from tuneline_synth.shapes import generate

    assets = WORK / "assets"
    done = assets / "assets.json"  # written last: the assets below are complete (delete .work/ to rebuild)
    if done.is_file():
        return json.loads(done.read_text())
    llama, gemma = assets / "llama", assets / "gemma3"
    if not (llama / "config.json").is_file():
        shutil.copytree(tiny_folder(get_family("llama")), llama, dirs_exist_ok=True)
        tok = AutoTokenizer.from_pretrained(llama)
        tok.chat_template = STRING_TEMPLATE
        tok.save_pretrained(llama)
    if not (gemma / "config.json").is_file():
        shutil.copytree(tiny_folder(get_family("gemma3")), gemma, dirs_exist_ok=True)
    text_file = assets / "text-source.jsonl"
    if not text_file.is_file():
        rows = _bench_train().text_task(523, 0)  # 98% -> 512 train rows
        text_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    image_file = assets / "shapes" / "data.jsonl"
    if not image_file.is_file():
        generate(assets / "shapes", n=523, seed=0)  # 98% -> 512 train chats
    out = {}
    for kind, model_dir, source in (("text", llama, text_file), ("image", gemma, image_file)):
        config = assets / f"tuneline-{kind}.yaml"
        config.write_text(tuneline_config(kind, model_dir, source, 10, assets / "prepared"))
        cfg = load_config(config)
        run = RunDir.create(cfg, config)
        run_stage("prepare", cfg, run)
        records = list(read_records(run.split_file("train")))
        files = export(records, kind, assets / f"data-{kind}")
        out[kind] = {
            "model_dir": str(model_dir),
            "source": str(source),
            "files": {k: str(v) for k, v in files.items()},
            "dataset_dir": str(assets / f"data-{kind}"),
            "n_train": len(records),
        }
    done.write_text(json.dumps(out, indent=1))
    return out


# ====================================================================== runs


def tuneline_run(task: str, kind: dict, steps: int, work: Path) -> dict:
    """A fresh prepared run directory (prepare is outside the timed window) and its config."""
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    config = work / f"tuneline-{task}.yaml"
    config.write_text(
        tuneline_config(task, Path(kind["model_dir"]), Path(kind["source"]), steps, work / "runs")
    )
    cfg = load_config(config)
    run = RunDir.create(cfg, config)
    run_stage("prepare", cfg, run)
    return {"config": str(config), "run_dir": str(run.path)}


def spawn(framework: str, task: str, assets: dict, steps: int, rep: int) -> dict:
    kind = assets["image" if task == "image" else "text"]
    work = WORK / "runs" / f"{task}-{framework}-{rep}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = {
        **SETTINGS,
        "framework": framework,
        "task": task,
        "steps": steps,
        "warmup": WARMUP,
        "model_dir": kind["model_dir"],
        "data": kind["files"].get(framework),
        "dataset_dir": kind["dataset_dir"],
        "dataset_name": "peers",
        "out_dir": str(work / "out"),
        "result": str(work / "result.json"),
    }
    if framework == "tuneline":
        spec.update(tuneline_run(task, kind, steps, work))
    (work / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
        "WANDB_DISABLED": "true",
        "WANDB_MODE": "disabled",
        "DISABLE_VERSION_CHECK": "1",  # LLaMA-Factory: its transformers range predates 5.x
        "AXOLOTL_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "HF_HOME": str(WORK / "hf-home"),
        "PYTHONWARNINGS": "ignore",
    }
    log = work / "log.txt"
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(python_of(framework)), str(HERE / "workers.py"), str(work / "spec.json")],
            cwd=work,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if proc.returncode != 0 or not (work / "result.json").is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        return {"framework": framework, "task": task, "error": f"exit {proc.returncode}; {log}:\n{tail}"}
    return json.loads((work / "result.json").read_text())


# ====================================================================== tables


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def table(task: str, results: list[dict], frameworks: list[str]) -> str:
    lines = [
        f"| {task} | tokens/CPU-s (median; min-max) | tokens/wall-s | samples/s (CPU) | padding "
        "| peak RSS GB "
        "| images fed / vision-tower calls | loss first->last | runs |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    rate = {}
    for fw in frameworks:
        ok = [r for r in results if r["framework"] == fw and "error" not in r]
        bad = [r for r in results if r["framework"] == fw and "error" in r]
        if not ok:
            reason = bad[0]["error"].splitlines()[-1][:120] if bad else "not run"
            lines.append(f"| {fw} | – | – | – | – | – | – | – | 0 ({reason}) |")
            continue
        cpu = [r["tokens"] / r["cpu_seconds"] for r in ok]
        rate[fw] = _median(cpu)
        wall = _median([r["tokens"] / r["seconds"] for r in ok])
        samples = _median([r["samples"] / r["cpu_seconds"] for r in ok])
        pad = _median([1 - r["tokens"] / r["positions"] for r in ok])
        rss = max(r["peak_rss_gb"] for r in ok)
        after = ok[0].get("vision_calls_after_training") or 0
        images = (
            f"{ok[0]['images']} / {ok[0]['vision_calls']}{f' (+{after} after training)' if after else ''}"
            if task == "image"
            else "–"
        )
        loss = (
            f"{ok[0]['first_loss']:.3g}->{ok[0]['last_loss']:.3g}" if ok[0]["first_loss"] is not None else "–"
        )
        lines.append(
            f"| {fw} | {rate[fw]:,.0f} ({min(cpu):,.0f}-{max(cpu):,.0f}) | {wall:,.0f} | {samples:,.1f} | "
            f"{100 * pad:.1f}% | {rss:.2f} | {images} | {loss} | {len(ok)}"
            f"{f' (+{len(bad)} failed)' if bad else ''} |"
        )
    peers = {fw: v for fw, v in rate.items() if fw != "tuneline"}
    if "tuneline" in rate and peers:
        best = max(peers, key=peers.get)
        lines.append(
            f"\ntuneline / best peer ({best}) tokens per CPU-second: {rate['tuneline'] / peers[best]:.2f}x"
        )
    return "\n".join(lines)


def boundaries(results: list[dict], frameworks: list[str]) -> str:
    """Per framework, the sample-boundary information its packed batches gave the model (from the probe)."""
    out = []
    for fw in frameworks:
        ok = [r for r in results if r["framework"] == fw and r["task"] == "pack" and "error" not in r]
        if ok and "position_restarts" in ok[0]:
            r = ok[0]
            out.append(
                f"{fw}: mask {'/'.join(r['masks'])}, position ids restarting inside rows "
                f"{r['position_restarts']} times over {r['samples']} samples"
                f"{', segment-numbered mask' if r['segment_mask'] else ''}"
            )
    return "; ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument("--steps", type=json.loads, default={}, help="per-task override, e.g. '{\"text\": 200}'")
    ap.add_argument("--out", type=Path, default=WORK / "results.json")
    args = ap.parse_args()
    missing = [fw for fw in args.frameworks if not python_of(fw).is_file()]
    if missing:
        raise SystemExit(
            f"no environment for {missing}: run bash benchmarks/peers/build_envs.sh {' '.join(missing)}"
        )
    started = time.time()
    assets = build_assets()
    steps = {**STEPS, **args.steps}
    results: list[dict] = []
    for rep in range(args.reps):
        for task in args.tasks:
            order = (
                args.frameworks[rep % len(args.frameworks) :] + args.frameworks[: rep % len(args.frameworks)]
            )
            for fw in order:
                r = spawn(fw, task, assets, steps[task], rep)
                r["rep"] = rep
                results.append(r)
                status = (
                    r.get("error", "").splitlines()[0]
                    if "error" in r
                    else (
                        f"{r['tokens'] / r['cpu_seconds']:,.0f} tok/CPU-s over {r['cpu_seconds']:.1f} CPU-s"
                    )
                )
                print(f"rep {rep} {task:<5} {fw:<12} {status}", flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps({"assets": assets, "steps": steps, "results": results}, indent=1)
                )
    print(
        f"\n{args.reps} repetitions, interleaved; LoRA r{SETTINGS['lora_r']}/alpha {SETTINGS['lora_alpha']}, "
        f"batch "
        f"{SETTINGS['batch_size']}, length {SETTINGS['max_length']}, lr {SETTINGS['lr']}; steps {steps} "
        f"(first {WARMUP} untimed); train rows: text {assets['text']['n_train']}, "
        f"image {assets['image']['n_train']}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {time.time() - started:.0f} s in all\n"
    )
    for task in args.tasks:
        print(table(task, [r for r in results if r["task"] == task], args.frameworks))
        if task == "pack":
            print("\npacking isolation: " + "; ".join(f"{fw}: {ISOLATION[fw]}" for fw in args.frameworks))
            print("what the packed batches carried: " + boundaries(results, args.frameworks))
        print()


if __name__ == "__main__":
    main()
