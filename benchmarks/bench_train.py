"""Benchmark: training throughput of tuneline against a plain Trainer + PEFT baseline and TRL's SFTTrainer.

Identical work for all three, run one after another, each in its own process: the same records (the
train split that ``tuneline prepare`` wrote), the same base model folder (loaded with
``from_pretrained``), the same LoRA (r, alpha, dropout 0, every linear layer of the language model,
seeded before PEFT), batch size, learning rate, schedule and number of steps.

  tuneline  the real training stage (``tuneline.stages.train.run``): ChatCollator, AnswerOnlyTrainer
  plain     transformers Trainer + PEFT LoRA; padded batches, labels masked to the answer, the model's
            own loss over full logits. Text is tokenized once up front; images are processed in the
            collator (the usual VLM recipe).
  trl       TRL's SFTTrainer on a conversational prompt-completion dataset (completion-only loss), no
            packing, no padding-free, no gradient checkpointing, bf16 only on a GPU.

Workloads:
  a  the tiny text task: ``tiny:llama`` (vocab 512, hidden 64), short prompts, one-word answers;
     overhead-bound, so it measures what each framework costs around the model.
  b  image + text classification on a Gemma-3-style model (Gemma3ForConditionalGeneration, SigLIP
     tower, 32k vocabulary), ~300-400 tokens per sample of which 256 image tokens, and a one-word
     answer (benign / malignant); compute-bound. ``--size gemma3-4b`` gives it Gemma 3 4B's shape
     (random weights, bf16) for a GPU.

Throughput is non-pad tokens per second over steps ``warmup+1 .. steps`` (the first steps pay for
lazy initialisation), timed by one Trainer callback installed identically in all three; tokens are
counted from the collators' own attention masks. Checkpoint saving at the end is outside the window.
Goals (issue 4): tuneline >= 1.5x TRL on (b); tuneline >= 1.0x plain on (a).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_train.py
    python benchmarks/bench_train.py --workload b --steps 30
    python benchmarks/bench_train.py --workload b --device cuda --size gemma3-4b      # a GPU
    python benchmarks/bench_train.py --workload b --profile                           # where time goes

Workload (b) spans 2 epochs by default (the image feature cache computes features in the first and serves
them in the second) and is followed by one tuneline run per mechanism switched off (answer-only logits,
the image feature cache, length grouping; ``--no-ablate`` skips them): the printed gain of each is
tuneline's tokens per CPU-second with everything on over that run's.

Needs the ``bench`` extra (TRL): ``pip install -c constraints.txt -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FRAMEWORKS = ("tuneline", "plain", "trl")
SEED = 0

# Model shapes for workload (b). "tiny" is compute-bound on one CPU core within a minute or two per
# framework; "gemma3-4b" is google/gemma-3-4b's shape (config.json of the release) with random weights.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "text": {
            "vocab_size": 32768, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "sliding_window": 512,
            "max_position_embeddings": 2048,
        },
        "vision": {
            "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
            "image_size": 224, "patch_size": 14,
        },
        "mm_tokens_per_image": 256,
    },
    "gemma3-4b": {
        "text": {
            "vocab_size": 262208, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 1024,
            "query_pre_attn_scalar": 256, "max_position_embeddings": 131072,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        },
        "vision": {
            "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
            "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
        },
        "mm_tokens_per_image": 256,
    },
}  # fmt: skip

PEAK_TFLOPS = {"cuda": 989.0}  # H100 SXM dense bf16; H200 has the same compute peak

DEFAULTS = {  # per workload: steps, warm-up steps (excluded from timing), batch size, learning rate
    "a": {"steps": 200, "warmup": 10, "batch_size": 8, "lr": 2e-4},
    "b": {"steps": 12, "warmup": 3, "batch_size": 8, "lr": 1e-4, "epochs": 2.0},
}
# tuneline's mechanisms, each switched off in its own run (workload b, --ablate): the gain each one brings.
ABLATIONS = {
    "answer-only logits": "train.answer_only_logits=false",
    "image feature cache": "train.cache_image_features=false",
    "length grouping": "train.group_by_length=false",
}
LORA = {"r": 16, "alpha": 32}
VISION_EXCLUDE = r".*(vision_tower|multi_modal_projector).*"  # = tuneline's "auto" targets for Gemma 3


# ====================================================================== setup (its own process)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


FILLER = """the a small large left right top bottom center middle one two three four five six seven eight nine
circle square triangle star cross diamond ring line dot shape image picture photo patient lesion skin mole
note seen today follow visit history family none prior biopsy border colour asymmetric regular irregular
raised flat itchy bleeding changed stable new old dark light brown black pink red blue grey""".split()
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white"]


def text_task(n: int, seed: int) -> list[dict]:
    """Workload (a): name the colour at the end of a word list; 3-30 filler words, so lengths vary."""
    import random

    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        words = rng.choices(FILLER, k=rng.randint(3, 30))
        colour = rng.choice(COLOURS)
        prompt = f"Words: {' '.join(words)} {colour}. Which colour is named last?"
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": colour}]}
        )
    return rows


def lesion_image(rng, size: int, malignant: bool):
    """A dermoscopy-like picture: noisy skin, a dark lesion, irregular and multi-coloured if malignant."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    skin = np.array(
        [rng.integers(170, 230), rng.integers(120, 170), rng.integers(100, 150)], dtype=np.float32
    )
    arr = skin + rng.normal(0, 12, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    c = size / 2 + rng.normal(0, size / 12, 2)
    r = size * rng.uniform(0.15, 0.3)
    n = 24
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = rng.uniform(0.55, 1.35, n) if malignant else rng.uniform(0.92, 1.08, n)
    pts = [
        (float(c[0] + r * w * np.cos(a)), float(c[1] + r * w * np.sin(a)))
        for a, w in zip(angles, wobble, strict=True)
    ]
    d.polygon(pts, fill=tuple(int(v) for v in rng.integers(40, 110, 3)))
    if malignant:
        for _ in range(3):
            x, y = c + rng.normal(0, r / 3, 2)
            s = r * rng.uniform(0.1, 0.3)
            d.ellipse((x - s, y - s, x + s, y + s), fill=tuple(int(v) for v in rng.integers(20, 160, 3)))
    return img.filter(ImageFilter.GaussianBlur(size / 200))


def image_task(folder: Path, n: int, size: int, seed: int) -> list[dict]:
    """Workload (b): one image and a prompt of ~40-130 text tokens per sample, answer benign/malignant."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    sites = ["back", "chest", "arm", "leg", "face", "scalp", "hand", "foot"]
    for i in range(n):
        malignant = bool(i % 2)
        path = folder / "images" / f"{i:05d}.jpg"
        if not path.exists():
            lesion_image(rng, size, malignant).save(path, quality=90)
        notes = " ".join(rng.choice(FILLER, size=int(rng.integers(5, 40))))
        prompt = (
            f"Dermoscopy image of a skin lesion on the {rng.choice(sites)} of a {int(rng.integers(20, 90))} "
            f"year old patient. Notes: {notes}. Is it benign or malignant?"
        )
        rows.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "path": f"images/{path.name}"},
                            {"type": "text", "text": prompt},
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "malignant" if malignant else "benign"}],
                    },
                ]
            }
        )
    return rows


def build_gemma3(folder: Path, size: str, device: str, max_layers: int | None) -> None:
    """A Gemma-3-style checkpoint with random weights: ``size``'s shape, tuneline's tiny Gemma 3 tokenizer
    and chat template (the model's vocabulary is larger than the tokenizer's: the extra rows are unused,
    but the LM head still computes them, as a real 262k vocabulary would)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from tuneline.models.families.gemma3 import CHAT_TEMPLATE, SPECIAL_TOKENS
    from tuneline.models.tokenizer import train_tiny_tokenizer

    shape = SIZES[size]
    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    text_kw = dict(shape["text"])
    vision_kw = dict(shape["vision"])
    if max_layers:  # smoke tests of a big shape on a small machine
        text_kw["num_hidden_layers"] = min(max_layers, text_kw["num_hidden_layers"])
        vision_kw["num_hidden_layers"] = min(max_layers, vision_kw["num_hidden_layers"])
    text = Gemma3TextConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **text_kw,
    )
    vision = SiglipVisionConfig(**vision_kw, vision_use_head=False)
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=shape["mm_tokens_per_image"],
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    torch.manual_seed(SEED)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Gemma3ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():  # Gemma 3 zero-initialises the projector: give the image features a path
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, vision.hidden_size**-0.5)
    model.generation_config.eos_token_id = [ids("<eos>"), ids("<end_of_turn>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_size = vision_kw["image_size"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=shape["mm_tokens_per_image"],
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def model_counts(folder: Path) -> dict[str, Any]:
    """Parameter counts for the FLOP estimate, from the config alone (meta device, no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    multimodal = config.model_type == "gemma3"
    with torch.device("meta"):
        auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
        model = auto.from_config(config)
    text_nonembed = vision = 0
    for name, p in model.named_parameters():
        if "vision_tower" in name or "multi_modal_projector" in name:
            vision += p.numel()
        elif "embed_tokens" not in name and "lm_head" not in name:
            text_nonembed += p.numel()
    out = {"text_nonembedding": text_nonembed, "vision": vision, "vocab": config.get_text_config().vocab_size}
    if multimodal:
        v = config.vision_config
        out["patches_per_image"] = (v.image_size // v.patch_size) ** 2
    return out


def tuneline_config(spec: dict) -> str:
    b = spec["workload"] == "b"
    gpu = spec["device"] == "cuda"
    return f"""
run: {{name: bench-{spec["workload"]}, seed: {SEED}, output_dir: "{spec["workdir"]}/runs"}}
model: {{base: "{spec["model_dir"]}", dtype: {"bfloat16" if gpu else "float32"}}}
data:
  sources: [{{type: jsonl, path: "{spec["data_file"]}"}}]
  split: {{strategy: random, train: 0.9, val: 0.05, test: 0.05}}
  max_seq_length: {spec["max_length"]}
  checks: {{actions: {{duplicate_near: warn, duplicate_exact: warn, label_conflict: warn}}}}
  images: {{max_side: {1024 if b else 64}}}
train:
  lora: {{r: {LORA["r"]}, alpha: {LORA["alpha"]}, dropout: 0.0}}
  learning_rate: {spec["lr"]}
  batch_size: {spec["batch_size"]}
  max_steps: {spec["steps"]}
  logging_steps: {max(1, spec["steps"] // 4)}
  save_steps: 100000
  bf16: {str(gpu).lower()}
  gradient_checkpointing: false
registry: {{enabled: false}}
"""


def setup(spec: dict) -> dict:
    """Model folder, data, and ``tuneline prepare``: the train split every framework then uses."""
    work = Path(spec["workdir"])
    wl = spec["workload"]
    data_dir = work / f"data-{wl}"
    data_dir.mkdir(parents=True, exist_ok=True)
    n = spec["samples"]
    if wl == "a":
        from tuneline.models.families import get_family
        from tuneline.models.load import tiny_folder

        model_dir = work / "model-a"
        if not (model_dir / "config.json").is_file():
            shutil.copytree(tiny_folder(get_family("llama")), model_dir, dirs_exist_ok=True)
        rows = text_task(n, SEED)
    else:
        layers = f"-l{spec['max_layers']}" if spec["max_layers"] else ""
        model_dir = work / f"model-b-{spec['size']}{layers}-{spec['device']}"
        if not (model_dir / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=work, prefix=".model-"))
            build_gemma3(tmp, spec["size"], spec["device"], spec["max_layers"])
            tmp.rename(model_dir)
        image_size = SIZES[spec["size"]]["vision"]["image_size"]
        rows = image_task(data_dir, n, max(256, image_size), SEED)
    data_file = data_dir / f"data-{n}.jsonl"
    _write_jsonl(data_file, rows)
    spec = {**spec, "model_dir": str(model_dir), "data_file": str(data_file)}

    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    config_path = work / f"config-{wl}.yaml"
    config_path.write_text(tuneline_config(spec))
    cfg = load_config(config_path)
    run = RunDir.create(cfg, config_path)
    run_stage("prepare", cfg, run)
    train_file = run.split_file("train")
    n_train = sum(1 for line in train_file.read_text().splitlines() if line.strip())
    return {
        "model_dir": str(model_dir),
        "config": str(config_path),
        "run_dir": str(run.path),
        "train_file": str(train_file),
        "n_train": n_train,
        "counts": model_counts(model_dir),
    }


# ====================================================================== instrumentation (all three)


class Probe:
    """Times steps and counts tokens identically for every framework.

    Installed by wrapping ``transformers.Trainer.__init__`` (SFTTrainer and tuneline's trainers go through
    it): the collator is wrapped to count the non-pad and answer tokens and the images of every batch it
    builds, and a callback stamps the end of every optimizer step (after a device sync), in wall-clock and
    process CPU time. Step k consumes batch k.

    With ``--profile`` it also times the parts of a step (module forward hooks, ``compute_loss``,
    ``accelerator.backward``, clipping, the optimizer) in CPU time on a CPU and synchronised wall-clock
    on a GPU, over steps warmup+1 .. steps-3, and runs torch.profiler over the last three steps.
    """

    PROFILER_STEPS = 3

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.batches: list[dict[str, int]] = []
        self.collate_time = 0.0
        self.step_end: list[float] = []
        self.step_cpu: list[float] = []  # process CPU time: what a step costs without other load
        self.trainable = 0
        self.trainer = None
        self.cuda = spec["device"] == "cuda"
        self.profile = bool(spec["profile"])
        self.parts: dict[str, float] = {}
        self.in_loss = False
        self.profile_table = ""
        self.profiler = None

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def clock(self) -> float:
        """Synchronised wall-clock on a GPU; CPU time of this process on a CPU (immune to other load)."""
        if self.cuda:
            self.sync()
            return time.perf_counter()
        return time.process_time()

    @property
    def parts_end(self) -> int:
        return self.spec["steps"] - (self.PROFILER_STEPS if self.profile else 0)

    def in_window(self, end: int | None = None) -> bool:
        done = len(self.step_end)
        return self.spec["warmup"] <= done < (end or self.spec["steps"])

    def add(self, part: str, seconds: float) -> None:
        if self.in_window(self.parts_end):
            self.parts[part] = self.parts.get(part, 0.0) + seconds

    def install(self) -> None:
        import transformers

        probe = self
        original = transformers.Trainer.__init__

        def init(trainer, *args, **kwargs):
            original(trainer, *args, **kwargs)
            trainer.data_collator = CountingCollator(trainer.data_collator, probe)
            trainer.add_callback(probe.callback())
            probe.trainer = trainer

        transformers.Trainer.__init__ = init

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class StepClock(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                probe.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                probe.train_begin = time.perf_counter()
                if probe.profile:
                    probe.hook(model)

            def on_step_begin(self, args, state, control, **kwargs):
                if probe.profile and state.global_step == probe.parts_end:
                    probe.start_torch_profiler()

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                if probe.profile:
                    probe.opt_start = probe.clock()

            def on_optimizer_step(self, args, state, control, **kwargs):
                if probe.profile:
                    probe.add("optimizer step", probe.clock() - probe.opt_start)

            def on_step_end(self, args, state, control, **kwargs):
                probe.sync()
                probe.step_end.append(time.perf_counter())
                probe.step_cpu.append(time.process_time())
                if probe.profile and state.global_step == args.max_steps:
                    probe.stop_torch_profiler()

        return StepClock()

    # ---- --profile
    def timed(self, part: str, fn, *, loss_scope: bool = False):
        def wrapper(*args, **kwargs):
            started = self.clock()
            if loss_scope:
                self.in_loss = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.in_loss = False if loss_scope else self.in_loss
                self.add(part, self.clock() - started)

        return wrapper

    def hook(self, model) -> None:
        wanted = dict.fromkeys(("vision_tower", "multi_modal_projector", "language_model", "lm_head"))
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in wanted and wanted[leaf] is None:
                wanted[leaf] = module
        for part, module in wanted.items():
            if module is None:
                continue
            starts: list[tuple[float, bool]] = []

            def pre(_m, _a, starts=starts):
                starts.append((self.clock(), self.in_loss))

            def post(_m, _a, _o, starts=starts, part=part):
                started, inside = starts.pop()
                self.add(
                    f"fwd {part}" + ("" if inside else " (outside compute_loss)"), self.clock() - started
                )

            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
        if wanted["lm_head"] is not None:
            bstarts: list[float] = []

            def bpre(_m, _g):
                bstarts.append(self.clock())

            def bpost(_m, _gi, _go):
                if bstarts:
                    self.add("bwd lm_head", self.clock() - bstarts.pop())

            wanted["lm_head"].register_full_backward_pre_hook(bpre)
            wanted["lm_head"].register_full_backward_hook(bpost)
        trainer = self.trainer
        trainer.compute_loss = self.timed("compute_loss", trainer.compute_loss, loss_scope=True)
        trainer.accelerator.backward = self.timed("backward", trainer.accelerator.backward)
        if hasattr(trainer, "_clip_grad_norm"):
            trainer._clip_grad_norm = self.timed("grad clipping", trainer._clip_grad_norm)

    def start_torch_profiler(self) -> None:
        import torch.profiler as tp

        activities = [tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if self.cuda else [])
        self.profiler = tp.profile(activities=activities)
        self.profiler.__enter__()

    def stop_torch_profiler(self) -> None:
        if self.profiler is None:
            return
        self.profiler.__exit__(None, None, None)
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        self.profile_table = self.profiler.key_averages().table(
            sort_by=key, row_limit=14, max_name_column_width=40
        )
        self.profiler = None

    def result(self, name: str, wall: float) -> dict:
        w, n = self.spec["warmup"], self.spec["steps"]
        done = len(self.step_end)
        if done < n or len(self.batches) < n:
            raise RuntimeError(f"{name}: {done} steps, {len(self.batches)} batches; expected {n}")
        window = self.batches[w:n]
        state = self.trainer.state
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        clock = self.step_end if self.cuda else self.step_cpu
        return {
            "framework": name,
            "steps": n - w,
            "tokens": sum(b["tokens"] for b in window),
            "answer_tokens": sum(b["answer"] for b in window),
            "padded_tokens": sum(b["padded"] for b in window),
            "images": sum(b["images"] for b in window),
            "seconds": self.step_end[n - 1] - self.step_end[w - 1],
            "cpu_seconds": self.step_cpu[n - 1] - self.step_cpu[w - 1],
            "first_steps_seconds": self.step_end[w - 1] - self.train_begin,
            "collate_seconds": self.collate_time,
            "wall_seconds": wall,
            "trainable": self.trainable,
            "loss": losses[-1] if losses else None,
            "parts": self.parts,
            "parts_steps": self.parts_end - w,
            "parts_seconds": clock[self.parts_end - 1] - clock[w - 1],
            "profile_table": self.profile_table,
        }


class CountingCollator:
    def __init__(self, inner, probe: Probe) -> None:
        self.inner = inner
        self.probe = probe

    def __call__(self, features):
        probe = self.probe
        started = probe.clock()
        out = self.inner(features)
        elapsed = probe.clock() - started
        if probe.in_window():  # collation runs one batch ahead of the step; the count per window is equal
            probe.collate_time += elapsed
        probe.add("collate", elapsed)
        mask = out["attention_mask"]
        pixels = out.get("pixel_values")
        probe.batches.append(
            {
                "tokens": int(mask.sum()),
                "answer": int((out["labels"] != -100).sum()),
                "padded": int(mask.numel()),
                "images": 0 if pixels is None else int(pixels.shape[0]),
            }
        )
        return out

    def __getattr__(self, name):  # anything a trainer asks of its collator
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


# ====================================================================== the three frameworks


def run_tuneline(spec: dict) -> None:
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    cfg = load_config(spec["config"], spec["tuneline_set"])
    run_stage("train", cfg, RunDir.open(Path(spec["run_dir"])))


def load_records(spec: dict) -> list:
    from tuneline.data.records import read_records

    return list(read_records(Path(spec["train_file"])))


def plain_messages(record) -> tuple[list[dict], list[dict], list[str]]:
    """(prompt messages, completion messages, image paths) in the shape chat templates take."""
    from tuneline.models.processing import template_messages

    prompt = template_messages(record.prompt_messages)
    completion = template_messages(record.messages[len(record.prompt_messages) :])
    return prompt, completion, record.images


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        exclude_modules=VISION_EXCLUDE,
        task_type="CAUSAL_LM",
    )


def load_base(spec: dict):
    import torch
    import transformers

    dtype = torch.bfloat16 if spec["device"] == "cuda" else torch.float32
    auto = (
        transformers.AutoModelForImageTextToText
        if spec["workload"] == "b"
        else transformers.AutoModelForCausalLM
    )
    model = auto.from_pretrained(spec["model_dir"], dtype=dtype, use_safetensors=True)
    processor = (
        transformers.AutoProcessor if spec["workload"] == "b" else transformers.AutoTokenizer
    ).from_pretrained(spec["model_dir"])
    return model, processor


def common_args(spec: dict) -> dict:
    gpu = spec["device"] == "cuda"
    return {
        "output_dir": str(Path(spec["workdir"]) / f"out-{spec['framework']}-{spec['workload']}"),
        "per_device_train_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": spec["lr"],
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_steps": spec["steps"],
        "max_grad_norm": 1.0,
        "logging_steps": max(1, spec["steps"] // 4),
        "save_strategy": "no",
        "bf16": gpu,
        "gradient_checkpointing": False,
        "seed": SEED,
        "data_seed": SEED,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not gpu,
    }


def run_plain(spec: dict) -> None:
    import torch
    from peft import get_peft_model
    from PIL import Image
    from transformers import Trainer, TrainingArguments, set_seed

    records = load_records(spec)
    model, processor = load_base(spec)
    set_seed(SEED)
    model = get_peft_model(model, lora_config())
    tok = getattr(processor, "tokenizer", processor)
    pad = tok.pad_token_id

    def render(prompt, completion):
        p = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(prompt + completion, tokenize=False)
        assert full.startswith(p)
        return full, full[len(p) :]

    if spec["workload"] == "a":  # text: tokenize once, then only pad
        train = []
        for r in records:
            full, answer = render(*plain_messages(r)[:2])
            ids = tok(full, add_special_tokens=False)["input_ids"]
            n_answer = len(tok(answer, add_special_tokens=False)["input_ids"])
            train.append({"input_ids": ids, "labels": [-100] * (len(ids) - n_answer) + ids[-n_answer:]})

        def collate(features):
            width = max(len(f["input_ids"]) for f in features)
            ids = torch.full((len(features), width), pad, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for i, f in enumerate(features):
                n = len(f["input_ids"])
                ids[i, :n] = torch.tensor(f["input_ids"])
                labels[i, :n] = torch.tensor(f["labels"])
                mask[i, :n] = 1
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    else:  # image + text: the usual VLM collate_fn, processor on the fly
        train = [{"prompt": p, "completion": c, "images": im} for p, c, im in map(plain_messages, records)]

        def collate(features):
            texts, answers, images = [], [], []
            for f in features:
                full, answer = render(f["prompt"], f["completion"])
                texts.append(full)
                answers.append(len(tok(answer, add_special_tokens=False)["input_ids"]))
                images.append([Image.open(p).convert("RGB") for p in f["images"]])
            batch = processor(
                text=texts,
                images=images,
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                return_tensors="pt",
            )
            labels = torch.full_like(batch["input_ids"], -100)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for i, (n, k) in enumerate(zip(lengths, answers, strict=True)):
                labels[i, n - k : n] = batch["input_ids"][i, n - k : n]
            batch["labels"] = labels
            return batch

    args = TrainingArguments(**common_args(spec), remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=train, data_collator=collate).train()


def run_trl(spec: dict) -> None:
    from datasets import Dataset, Image, Sequence
    from trl import SFTConfig, SFTTrainer

    records = load_records(spec)
    model, processor = load_base(spec)
    rows = {"prompt": [], "completion": []}
    paths = []
    for prompt, completion, images in map(plain_messages, records):
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
        paths.append(images)
    if spec["workload"] == "b":  # the usual VLM dataset: an Image feature, decoded on access
        rows["images"] = paths
    dataset = Dataset.from_dict(rows)
    if spec["workload"] == "b":
        dataset = dataset.cast_column("images", Sequence(Image()))
    args = SFTConfig(
        **common_args(spec),
        max_length=spec["max_length"],
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, peft_config=lora_config()
    ).train()


RUNNERS = {"tuneline": run_tuneline, "plain": run_plain, "trl": run_trl}


def worker(role: str, spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if role == "setup":
        out = setup(spec)
    else:
        probe = Probe(spec)
        probe.install()
        started = time.perf_counter()
        RUNNERS[role](spec)
        out = probe.result(role, time.perf_counter() - started)
        if torch.cuda.is_available() and spec["device"] == "cuda":
            out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        else:
            import resource

            out["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    Path(spec["result"]).write_text(json.dumps(out))


# ====================================================================== driver


def spawn(role: str, spec: dict, work: Path) -> dict:
    spec_file = work / f"spec-{spec['workload']}-{role}.json"
    spec = {**spec, "framework": role, "result": str(work / f"result-{spec['workload']}-{role}.json")}
    spec_file.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNELINE_CACHE_DIR": str(work / "cache"),
        "PYTHONWARNINGS": "ignore",
    }
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # tuneline uses a GPU whenever it sees one
    log = work / f"log-{spec['workload']}-{role}.txt"
    started = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", role, "--spec", str(spec_file)],
            cwd=work,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0 or not Path(spec["result"]).is_file():
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(
            f"{role} ({spec['workload']}) failed with code {proc.returncode}; log {log}:\n{tail}"
        )
    result = json.loads(Path(spec["result"]).read_text())
    result["process_seconds"] = time.time() - started
    return result


def flops(result: dict, counts: dict) -> float:
    """Model FLOPs of the timed window: 6 N T for the language model (non-embedding parameters N, non-pad
    tokens T; the LM head is left out, as only answer positions need it) plus 2 N_v P per image for the
    frozen vision tower and projector (forward only; P patches)."""
    f = 6.0 * counts["text_nonembedding"] * result["tokens"]
    if result["images"]:
        f += 2.0 * counts["vision"] * counts["patches_per_image"] * result["images"]
    return f


def table(workload: str, results: list[dict], counts: dict, device: str, peak: float | None) -> str:
    by = {r["framework"]: r for r in results}
    rate = {r["framework"]: r["tokens"] / r["seconds"] for r in results}
    head = (
        f"{'framework':<9} {'steps':>5} {'non-pad tok':>11} {'answer':>6} {'pad%':>5} "
        f"{'seconds':>8} {'cpu s':>7} "
        f"{'tokens/s':>9} {'vs TRL':>7} {'vs plain':>8} {'MFU':>6} {'loss':>7} {'trainable':>9} "
        f"{'collate s':>9} {'peak GB':>7} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        fw = r["framework"]
        mfu = f"{flops(r, counts) / r['seconds'] / (peak * 1e12):.1%}" if peak else "-"
        vs_trl = f"{rate[fw] / rate['trl']:.2f}x" if "trl" in by else "-"
        vs_plain = f"{rate[fw] / rate['plain']:.2f}x" if "plain" in by else "-"
        pad = 1 - r["tokens"] / r["padded_tokens"]
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        lines.append(
            f"{fw:<9} {r['steps']:>5} {r['tokens']:>11} {r['answer_tokens']:>6} {pad:>5.1%} "
            f"{r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} "
            f"{rate[fw]:>9.0f} {vs_trl:>7} {vs_plain:>8} {mfu:>6} {loss:>7} {r['trainable']:>9} "
            f"{r['collate_seconds']:>9.2f} {r['peak_memory_gb']:>7.2f} {r['wall_seconds']:>7.1f}"
        )
    return "\n".join(lines)


def breakdown(result: dict, device: str) -> str:
    """Where a step's time goes (``--profile``): parts that nest are indented under their parent."""
    total = result["parts_seconds"]
    parts = result["parts"]
    unit = "CPU s" if device == "cpu" else "s"
    inner = ("fwd vision_tower", "fwd multi_modal_projector", "fwd language_model", "fwd lm_head")
    rest = parts.get("compute_loss", 0.0) - sum(parts.get(k, 0.0) for k in inner)
    outside = [k for k in parts if k.endswith("(outside compute_loss)")]
    top = ["collate", "compute_loss", *outside, "backward", "grad clipping", "optimizer step"]
    other = total - sum(parts.get(k, 0.0) for k in top)
    rows = [
        ("data: collate (tokenize, images)", parts.get("collate"), 0),
        ("forward + loss (compute_loss)", parts.get("compute_loss"), 0),
        ("vision tower", parts.get("fwd vision_tower"), 1),
        ("projector", parts.get("fwd multi_modal_projector"), 1),
        ("language model (decoder layers)", parts.get("fwd language_model"), 1),
        ("lm_head module", parts.get("fwd lm_head"), 1),
        ("rest: loss, embeddings, masks, fused LM head", rest if "compute_loss" in parts else None, 1),
        *[(k[4:], parts[k], 0) for k in outside],
        ("backward", parts.get("backward"), 0),
        ("of which lm_head (grad of its input)", parts.get("bwd lm_head"), 1),
        ("grad clipping", parts.get("grad clipping"), 0),
        ("optimizer step", parts.get("optimizer step"), 0),
        ("other: trainer loop, callbacks, logging", other, 0),
    ]
    lines = [
        f"{result['framework']}: {total:.2f} {unit} over {result['parts_steps']} steps "
        "(profiled run: timings include the probes' overhead)"
    ]
    for label, value, depth in rows:
        if value is not None:
            lines.append(f"  {'    ' * depth}{label:<{48 - 4 * depth}} {value:>8.2f} {value / total:>7.1%}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["a", "b", "all"], default="all")
    p.add_argument("--steps", type=int, help="optimizer steps per framework (default: a 200, b 12)")
    p.add_argument("--warmup", type=int, help="first steps left out of the timing (default: a 10, b 3)")
    p.add_argument("--batch-size", type=int, help="per-device batch size (default 8)")
    p.add_argument(
        "--epochs",
        type=float,
        help="epochs the steps span (sets the record count; default a 1, b 2: the image feature cache "
        "computes the features in the first epoch and serves them in the second)",
    )
    p.add_argument(
        "--no-ablate",
        dest="ablate",
        action="store_false",
        help="skip the runs of workload b with one tuneline mechanism off each ("
        + ", ".join(ABLATIONS)
        + ")",
    )
    p.add_argument("--samples", type=int, help="records generated (overrides --epochs; 90%% go to train)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model shape of workload (b)")
    p.add_argument("--max-layers", type=int, help="cap text and vision layers (smoke-testing a big shape)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset, in run order")
    p.add_argument(
        "--peak-tflops", type=float, help="accelerator peak for MFU (default: 989 on cuda, none on cpu)"
    )
    p.add_argument(
        "--profile", action="store_true", help="time parts of the step (vision, LM, head, backward)"
    )
    p.add_argument(
        "--set",
        dest="tuneline_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override tuneline's config (e.g. train.group_by_length=false), to measure one feature",
    )
    p.add_argument("--workdir", type=Path, help="keep models, data and logs here (default: a temp folder)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.spec)
        return

    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        p.error(f"unknown frameworks {sorted(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    peak = args.peak_tflops or PEAK_TFLOPS.get(args.device)
    print(
        f"bench_train: device {args.device}, size {args.size}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
        f"workdir {work}",
        flush=True,
    )
    goals = []
    for wl in ["a", "b"] if args.workload == "all" else [args.workload]:
        d = DEFAULTS[wl]
        steps = args.steps or d["steps"]
        warmup = args.warmup if args.warmup is not None else min(d["warmup"], steps - 1)
        if not 0 < warmup < steps:
            p.error("need 0 < --warmup < --steps")
        if args.profile and steps - Probe.PROFILER_STEPS <= warmup:
            p.error(f"--profile needs --steps > --warmup + {Probe.PROFILER_STEPS}")
        batch = args.batch_size or d["batch_size"]
        spec = {
            "workload": wl,
            "workdir": str(work),
            "steps": steps,
            "warmup": warmup,
            "batch_size": batch,
            "lr": d["lr"],
            "samples": args.samples or int(steps * batch / (args.epochs or d.get("epochs", 1.0)) / 0.9) + 8,
            "device": args.device,
            "size": args.size,
            "max_layers": args.max_layers,
            "max_length": 2048 if wl == "b" else 256,
            "profile": args.profile,
            "tuneline_set": args.tuneline_set,
        }
        started = time.time()
        prepared = spawn("setup", spec, work)
        spec.update(prepared)
        counts = prepared["counts"]
        what = (
            "tiny text task (tiny:llama)"
            if wl == "a"
            else f"image+text classification, Gemma-3-style {args.size}"
            + (f" capped at {args.max_layers} layers" if args.max_layers else "")
        )
        print(
            f"\n== workload ({wl}): {what}; vocab {counts['vocab']}, LM non-embedding params "
            f"{counts['text_nonembedding'] / 1e6:.1f}M, vision {counts['vision'] / 1e6:.1f}M; "
            f"{prepared['n_train']} train records, batch {batch}, steps {warmup + 1}..{steps} timed "
            f"(setup {time.time() - started:.0f} s)",
            flush=True,
        )
        results = []
        for fw in frameworks:
            r = spawn(fw, spec, work)
            results.append(r)
            print(
                f"  {fw}: {r['tokens'] / r['seconds']:.0f} tokens/s "
                f"({r['process_seconds']:.0f} s in its process)",
                flush=True,
            )
        if wl == "b" and args.ablate and "tuneline" in frameworks:
            full = next(r for r in results if r["framework"] == "tuneline")
            gains = []
            for mechanism, override in ABLATIONS.items():
                for done in ("checkpoints", "adapter"):  # each run trains from step 0, not resumes
                    shutil.rmtree(Path(spec["run_dir"]) / done, ignore_errors=True)
                r = spawn("tuneline", {**spec, "tuneline_set": [*spec["tuneline_set"], override]}, work)
                off = r["tokens"] / r["cpu_seconds"]
                gains.append(
                    f"  {mechanism:<20} off ({override}): {off:.0f} tokens/CPU-s; "
                    f"gain with it on: {full['tokens'] / full['cpu_seconds'] / off:.2f}x"
                )
                print(gains[-1], flush=True)
        print()
        print(table(wl, results, counts, args.device, peak))
        if wl == "b" and args.ablate and "tuneline" in frameworks:
            print(
                f"\ntuneline with every mechanism: {full['tokens'] / full['cpu_seconds']:.0f} tokens/CPU-s; "
                "one mechanism off at a time (per CPU-second):"
            )
            print("\n".join(gains))
        trainable = {r["trainable"] for r in results}
        tokens = {r["tokens"] for r in results}
        if len(trainable) > 1:
            print(f"WARNING: trainable parameter counts differ: {sorted(trainable)}")
        if len(tokens) > 1:
            print("note: the timed windows hold different token counts (different batch composition)")
        busy = [r for r in results if r["cpu_seconds"] < 0.85 * r["seconds"]]
        if args.device == "cpu" and busy:
            per_cpu = {r["framework"]: r["tokens"] / r["cpu_seconds"] for r in results}
            ratios = ", ".join(
                f"tuneline/{fw} {per_cpu['tuneline'] / per_cpu[fw]:.2f}"
                for fw in ("trl", "plain")
                if fw in per_cpu and "tuneline" in per_cpu
            )
            print(
                f"note: other load on the machine ({', '.join(r['framework'] for r in busy)} "
                "got < 85% of a core): "
                f"wall-clock ratios are noisy; per CPU-second: {ratios or '-'}"
            )
        if args.profile:
            for r in results:
                print()
                print(breakdown(r, args.device))
                if r["profile_table"]:
                    print(f"torch.profiler, {r['framework']}, last {Probe.PROFILER_STEPS} steps:")
                    print(r["profile_table"])
        # The verdict is on wall-clock tokens/s, or per CPU-second where other load took the core away.
        basis = "seconds"
        if args.device == "cpu" and busy:
            basis = "cpu_seconds"
        rate = {r["framework"]: r["tokens"] / r[basis] for r in results}
        how = "" if basis == "seconds" else ", per CPU-second: the machine was busy"
        for goal_wl, other, label, target in (("b", "trl", "TRL", 1.5), ("a", "plain", "plain", 1.0)):
            if wl == goal_wl and {"tuneline", other} <= rate.keys():
                x = rate["tuneline"] / rate[other]
                verdict = "PASS" if x >= target else "FAIL"
                goals.append(f"GOAL ({wl}) tuneline/{label} >= {target}: {verdict} ({x:.2f}{how})")
    print()
    for line in goals:
        print(line)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
