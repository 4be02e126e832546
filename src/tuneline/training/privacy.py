"""Differentially private training (``train.privacy.dp``) through Opacus, inside the one Trainer loop.

What Opacus does here, and what we only wire up:

* **Per-sample gradients** on the trainable parameters only: ``GradSampleModule`` hooks every module
  that owns a trainable parameter (LoRA's ``lora_A``/``lora_B`` are ``nn.Linear``); frozen base weights
  get no hooks. A trainable module Opacus has no per-sample rule for (a raw ``nn.Parameter`` in a custom
  projector, DoRA's magnitude vector, a norm layer of the model's own class, BatchNorm) fails the stage
  at start, naming the layer and what to freeze; it never trains non-privately. (Opacus could fall back
  to ``torch.func`` for such layers; we refuse instead, since a fallback on shared or re-used weights
  is silently wrong.)
* **Clipping and noise**: ``DPOptimizer`` wraps the Trainer's AdamW: each sample's gradient is clipped
  to ``max_grad_norm``, summed, Gaussian noise of std ``noise_multiplier * max_grad_norm`` added, and
  divided by the expected batch size. The Trainer's own clipping is off under DP.
* **Poisson sampling**, as the accountant assumes: each record joins each batch independently with
  probability ``q = batch_size / n`` (Opacus' ``UniformWithReplacementSampler``), seeded by
  (seed, epoch) so a resumed epoch draws the same batches. An empty draw (probability ``(1-q)^n``)
  makes no update but still counts as a step for the accountant.
* Epsilon counts every draw the data loader made, the one it prefetches past the last step included:
  an upper bound, by at most one step, of what the updates spent.
* **The RDP accountant** (``RDPAccountant``) turns (noise multiplier, q, steps drawn) into epsilon at
  ``delta`` (default ``1/n``). With ``target_epsilon`` the noise multiplier is Opacus'
  ``get_noise_multiplier`` for the run's planned steps.

The loss under DP is the mean over samples of each sample's mean token loss: per-sample gradients are
then each a function of their own sample only, which clipping needs to bound a sample's influence.
Each checkpoint holds ``dp_accountant.json`` (noise multiplier, q, steps drawn); a resumed run checks
its sampler continues from exactly there and ends with the epsilon of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tuneline.config import Config
from tuneline.errors import ModelError, TrainingInterrupted
from tuneline.runs import atomic_write_json

log = logging.getLogger("tuneline.train")

ACCOUNTANT_FILE = "dp_accountant.json"


def _freeze_hint(name: str) -> str:
    if "multi_modal_projector" in name or "projector" in name:
        return "set train.train_projector: false"
    if "vision" in name:
        return "set train.train_vision_tower: false"
    if "lora_magnitude" in name:
        return "use train.method: lora (DoRA's magnitude vector has no per-sample gradient rule)"
    return "freeze it: leave it out of train.lora.target_modules, or use train.method: lora"


def check_layers(model) -> None:
    """Fail unless Opacus has a per-sample gradient rule for every module owning a trainable parameter."""
    from opacus.grad_sample import GradSampleModule

    rules = GradSampleModule.GRAD_SAMPLERS
    bad = []
    for name, module in model.named_modules():
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own and type(module) not in rules:
            bad.append((name, type(module).__name__, own))
    if bad:
        name, kind, params = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(b[0] for b in bad[1:4])})" if len(bad) > 1 else ""
        raise ModelError(
            f"train.privacy.dp: Opacus has no per-sample gradients for the trainable layer {name} "
            f"({kind}, parameters {', '.join(params)}){more}",
            hint=f"{_freeze_hint(name)}; differentially private training never trains a layer without them",
        )


class PoissonBatchSampler:
    """Batches of a Poisson draw: each record with probability ``sample_rate``, a fixed number of draws per
    epoch, the generator seeded by (seed, epoch). ``drawn`` counts draws since the start of training."""

    def __init__(self, n: int, sample_rate: float, seed: int) -> None:
        self.n, self.sample_rate, self.seed = n, sample_rate, seed
        self.epoch = 0
        self.drawn = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, round(1 / self.sample_rate))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        for i in range(len(self)):
            mask = torch.rand(self.n, generator=g) < self.sample_rate
            self.drawn = self.epoch * len(self) + i + 1
            batch = mask.nonzero().flatten().tolist()
            if batch:
                yield batch


def planned_steps(cfg: Config, sampler: PoissonBatchSampler) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * len(sampler)))


def spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``steps`` Poisson-sampled steps: Opacus' RDP accountant."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


class DpSession:
    """The DP parts of one training run: layer check, sampler, optimizer wrapper, accountant, callback."""

    def __init__(self, cfg: Config, model, n_records: int) -> None:
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.grad_sample import GradSampleModule

        dp = cfg.train.privacy.dp
        assert dp is not None
        check_layers(model)
        self.cfg = dp
        self.n = n_records
        self.sample_rate = min(1.0, cfg.train.batch_size / n_records)
        self.delta = dp.delta if dp.delta is not None else 1.0 / n_records
        self.sampler = PoissonBatchSampler(n_records, self.sample_rate, cfg.run.seed)
        self.steps_planned = planned_steps(cfg, self.sampler)
        if dp.noise_multiplier is not None:
            self.noise_multiplier = dp.noise_multiplier
        else:
            self.noise_multiplier = get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=self.delta,
                sample_rate=self.sample_rate,
                steps=self.steps_planned + 1,  # the loader's one prefetched draw counts too
                accountant="rdp",
            )
        # Hooks on the trainable modules; the model itself is called as before (the Trainer keeps it).
        self.hooks = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        self.optimizer = None
        self.resumed_at: int | None = None
        log.info(
            "differential privacy: noise multiplier %.4f, q %.4f, C %g, delta %.3g, %d planned steps",
            self.noise_multiplier,
            self.sample_rate,
            dp.max_grad_norm,
            self.delta,
            self.steps_planned,
        )

    def wrap_optimizer(self, optimizer):
        from opacus.optimizers import DPOptimizer

        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.cfg.max_grad_norm,
            expected_batch_size=max(1, round(self.sample_rate * self.n)),
            loss_reduction="mean",
        )
        return self.optimizer

    def epsilon(self) -> float:
        return spent(self.noise_multiplier, self.sample_rate, self.sampler.drawn, self.delta)

    def state(self) -> dict[str, Any]:
        return {
            "accountant": "rdp",
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.sampler.drawn,
            "delta": self.delta,
            "epsilon": self.epsilon(),
        }

    def resume_from(self, checkpoint: Path) -> None:
        """The accountant state of the checkpoint training resumes from; checked at the first step."""
        path = checkpoint / ACCOUNTANT_FILE
        if not path.is_file():
            raise TrainingInterrupted(
                f"{checkpoint} has no {ACCOUNTANT_FILE}: it was not written by a differentially private run",
                hint="resume only with the config that wrote the checkpoint, or delete the checkpoints",
            )
        saved = json.loads(path.read_text())
        if (saved["noise_multiplier"], saved["sample_rate"]) != (self.noise_multiplier, self.sample_rate):
            raise TrainingInterrupted(
                f"{path}: noise multiplier / sample rate {saved['noise_multiplier']:.6g} / "
                f"{saved['sample_rate']:.6g} differ from this run's "
                f"{self.noise_multiplier:.6g} / {self.sample_rate:.6g}",
                hint="resume with the config that wrote the checkpoint, or delete the checkpoints",
            )
        self.resumed_at = int(saved["steps"])

    def report(self) -> dict[str, Any]:
        import opacus

        return {
            **self.state(),
            "target_epsilon": self.cfg.target_epsilon,
            "max_grad_norm": self.cfg.max_grad_norm,
            "expected_batch_size": max(1, round(self.sample_rate * self.n)),
            "sampling": "poisson",
            "steps_planned": self.steps_planned,
            "opacus": opacus.__version__,
        }

    def callback(self) -> TrainerCallback:
        return _DpCallback(self)


class _DpCallback(TrainerCallback):
    """Clears per-sample gradients after each step, checks a resumed run, writes the accountant state
    into each checkpoint before the manifest seals it, and logs epsilon with the loss."""

    def __init__(self, session: DpSession) -> None:
        self.s = session
        self.checked = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.s.optimizer is not None:
            self.s.optimizer.zero_grad(set_to_none=True)  # grad_sample and summed_grad too
        if not self.checked and self.s.resumed_at is not None:
            self.checked = True
            wanted = self.s.resumed_at + 1
            if not self.s.resumed_at < self.s.sampler.drawn <= wanted + 8:
                raise TrainingInterrupted(
                    f"resumed differentially private run: the sampler is at draw {self.s.sampler.drawn}, "
                    f"the checkpoint's accountant at {self.s.resumed_at}",
                    hint="the checkpoint does not match this run: delete the checkpoints and train again",
                )

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            atomic_write_json(folder / ACCOUNTANT_FILE, self.s.state())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["dp_epsilon"] = round(self.s.epsilon(), 6)
