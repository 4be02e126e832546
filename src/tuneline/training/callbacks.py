"""Trainer callbacks: a progress bar with loss and ETA, and per-step metrics into metrics.jsonl."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import Progress
from transformers import TrainerCallback

from tuneline.progress import bars
from tuneline.runs import RunDir
from tuneline.sections import MlflowSection


def peak_memory_gb() -> float:
    """Peak accelerator memory (CUDA) or peak resident memory of this process (CPU), in GB."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports kB


class ProgressCallback(TrainerCallback):
    """A rich progress bar on stderr: step M/N, loss, samples/s, tokens/s, peak memory, elapsed and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.tokens_at_start = 0
        self.progress: Progress | None = None
        self.task = None
        self.loss: float | None = None  # until the first logged loss
        self.started = 0.0
        self.samples_per_step = 1

    def on_train_begin(self, args, state, control, **kwargs):
        self.samples_per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self.progress = bars(
            "train", "loss {task.fields[loss]}", "{task.fields[rate]} samples/s", console=self.console
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, loss="-", rate="-", tokens="-", memory="-"
        )
        self.started = time.time()
        self.first_step = state.global_step  # resumed runs start past 0
        self.tokens_at_start = state.num_input_tokens_seen  # counted by the Trainer (training batches only)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            elapsed = max(time.time() - self.started, 1e-9)
            rate = state.global_step * self.samples_per_step / elapsed
            self.progress.update(
                self.task,
                completed=state.global_step,
                loss="-" if self.loss is None else f"{self.loss:.4f}",
                rate=f"{rate:.0f}",
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MetricsCallback(TrainerCallback):
    """Append every logged training metric to the run's metrics.jsonl (fsynced)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if values:
            self.run.append_metric({"step": state.global_step, "epoch": state.epoch, **values})


class MlflowMetricsCallback(TrainerCallback):
    """Training metrics into the MLflow run at every logging step, so the curve is live in the UI.

    Our own few lines rather than transformers' MLflowCallback: that one uses the fluent API's global
    active run and logs its own parameters; here the run is the one of this run directory (shared with
    the register stage), and an unreachable server costs a warning, never the training.
    """

    def __init__(self, client, run_id: str, run: RunDir) -> None:
        self.client = client
        self.run_id = run_id
        self.run = run
        self.failed = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.failed or not logs:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"train_{k}", float(v), now, state.global_step)
            for k, v in logs.items()
            if isinstance(v, int | float) and k != "epoch"
        ]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:  # noqa: BLE001 - never lose training to a tracking hiccup
            import logging

            logging.getLogger("tuneline.train").warning(
                "MLflow logging failed (%s); metrics stay in metrics.jsonl and are sent at register", exc
            )
            self.failed = True
            self._record(failed=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._record(failed=False)

    def _record(self, failed: bool) -> None:
        recorded = self.run.summary_model().mlflow or MlflowSection()
        failed = recorded.live_metrics_failed or failed
        mlflow = recorded.model_dump(exclude_unset=True)
        mlflow.update(live_metrics_failed=failed, live_metrics_complete=not failed)
        self.run.update_summary(mlflow=mlflow)
