"""The one measurement every framework gets: installed by wrapping ``transformers.Trainer.__init__``.

All four frameworks (TRL's SFTTrainer, Axolotl's AxolotlTrainer, LLaMA-Factory's CustomSeq2SeqTrainer /
CustomTrainer, tuneline's TunelineTrainer) are ``transformers.Trainer`` subclasses, so wrapping its
``__init__`` reaches each identically. The wrapper

* wraps the trainer's ``training_step`` to read every batch exactly as the model receives it: non-pad
  tokens (input ids that are not the pad token and, where the batch has a 2-d attention mask, not
  masked out: LLaMA-Factory's packed rows end in pad tokens that its mask marks 1), answer tokens
  (labels != -100), positions (the batch's
  ``input_ids.numel()``), samples (runs of answer labels, gaps under 4 tokens bridged: every chat here has
  one answer, so this counts
  samples alike in padded rows, packed rows and peers' packed rows without position ids), and images
  (``pixel_values`` rows);
* counts calls of the vision tower (a forward hook on the first module named ``vision_tower`` /
  ``vision_model``), which tells whether images reached the model or came from a feature cache; the
  calls during training (``on_train_begin`` to ``on_train_end``) apart from those after it (tuneline
  embeds up to 500 training images with the tower for its drift reference profile once training ends);
* stamps the end of every optimizer step in wall-clock and process CPU time (a callback).

Only depends on torch and transformers, so it runs in every peer's virtual environment unchanged.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

GAP = 4


class Probe:
    def __init__(self, result_file: str, warmup: int, steps: int) -> None:
        self.result_file = result_file
        self.warmup = warmup
        self.steps = steps
        self.batches: list[dict] = []
        self.step_wall: list[float] = []
        self.step_cpu: list[float] = []
        self.vision_calls = 0
        self.vision_calls_training: int | None = None  # frozen at on_train_end
        self.trainer = None
        self.pad_id = None
        self.started = time.perf_counter()
        self.trainable = 0
        self.train_begin = None

    # ---------------------------------------------------------------- batches
    def count(self, inputs: dict) -> dict:
        import torch

        ids = inputs.get("input_ids")
        mask = inputs.get("attention_mask")
        labels = inputs.get("labels")
        pixels = inputs.get("pixel_values")
        not_pad = torch.ones_like(ids, dtype=torch.bool)
        if mask is not None and mask.dim() == 2:
            not_pad = mask != 0
        if self.pad_id is not None:
            # Also with a mask: LLaMA-Factory's packed rows end in pad tokens whose mask entry is 1.
            not_pad &= ids != self.pad_id
        # Samples: every chat here has one answer, so one run of answer labels per sample, packed or not
        # (runs less than GAP tokens apart are one answer: some frameworks leave a token of the end of
        # turn unlabelled, while between two samples lies a whole prompt).
        answer = (labels != -100 if labels is not None else not_pad).long()
        before = torch.nn.functional.pad(answer.cumsum(dim=1), (GAP + 1, 0))
        seen = before[:, GAP : GAP + answer.shape[1]] - before[:, : answer.shape[1]]  # previous GAP tokens
        samples = int(((answer == 1) & (seen == 0)).sum())
        # What a packed row tells the model about its sample boundaries: position ids that restart inside
        # a row, and an attention mask holding segment numbers (> 1) rather than 0/1.
        pos = inputs.get("position_ids")
        restarts = 0 if pos is None or pos.dim() != 2 else int(((pos[:, 1:] == 0) & not_pad[:, 1:]).sum())
        segments = mask is not None and mask.dim() == 2 and int(mask.max()) > 1
        return {
            "tokens": int(not_pad.sum()),
            "answer": int((labels != -100).sum()) if labels is not None else 0,
            "positions": int(ids.numel()),
            "samples": samples,
            "images": 0 if pixels is None else int(pixels.shape[0]),
            "mask": "none" if mask is None else f"{mask.dim()}d",
            "position_restarts": restarts,
            "segment_mask": bool(segments),
        }

    # ---------------------------------------------------------------- installation
    def install(self) -> None:
        import transformers

        probe = self
        original = transformers.Trainer.__init__

        def init(trainer, *args, **kwargs):
            original(trainer, *args, **kwargs)
            probe.attach(trainer)

        transformers.Trainer.__init__ = init

    def attach(self, trainer) -> None:
        self.trainer = trainer
        tok = getattr(trainer, "processing_class", None)
        tok = getattr(tok, "tokenizer", tok)
        self.pad_id = getattr(tok, "pad_token_id", None)
        step = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            self.batches.append(self.count(inputs))
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = training_step
        trainer.add_callback(self.callback())

    def hook_vision(self, model) -> None:
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in ("vision_tower", "vision_model"):

                def post(_m, _a, _o):
                    self.vision_calls += 1

                module.register_forward_hook(post)
                return

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class StepClock(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                probe.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                probe.train_begin = time.perf_counter()
                probe.hook_vision(model)

            def on_step_end(self, args, state, control, **kwargs):
                probe.step_wall.append(time.perf_counter())
                probe.step_cpu.append(time.process_time())

            def on_train_end(self, args, state, control, **kwargs):
                probe.vision_calls_training = probe.vision_calls

        return StepClock()

    # ---------------------------------------------------------------- result
    def write(self, framework: str, task: str) -> None:
        w, n = self.warmup, self.steps
        if len(self.step_wall) < n or len(self.batches) < n:
            raise RuntimeError(
                f"{framework}: {len(self.step_wall)} steps, {len(self.batches)} batches; want {n}"
            )
        window = self.batches[w:n]
        total = {k: sum(b[k] for b in window) for k in ("tokens", "answer", "positions", "samples", "images")}
        losses = [h["loss"] for h in self.trainer.state.log_history if "loss" in h]
        out = {
            "framework": framework,
            "task": task,
            "steps": n - w,
            **total,
            "masks": sorted({b["mask"] for b in window}),
            "position_restarts": sum(b["position_restarts"] for b in window),
            "segment_mask": any(b["segment_mask"] for b in window),
            "seconds": self.step_wall[n - 1] - self.step_wall[w - 1],
            "cpu_seconds": self.step_cpu[n - 1] - self.step_cpu[w - 1],
            # in training (on_train_begin..on_train_end), and after it (e.g. tuneline's drift profile)
            "vision_calls": self.vision_calls
            if self.vision_calls_training is None
            else self.vision_calls_training,
            "vision_calls_after_training": 0
            if self.vision_calls_training is None
            else self.vision_calls - self.vision_calls_training,
            "trainable": self.trainable,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "process_seconds": time.perf_counter() - self.started,
            "threads": os.environ.get("OMP_NUM_THREADS"),
        }
        Path(self.result_file).write_text(json.dumps(out))
