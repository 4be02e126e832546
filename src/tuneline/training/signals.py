"""Stop on SIGTERM / SIGINT (spot preemption, Ctrl-C): save at the next step boundary, then stop.

transformers' ``enable_jit_checkpoint`` waits a hard-coded 3 s, handles SIGTERM only, saves mid-step
(not bitwise resumable with dropout) and skips on_save callbacks (so no manifest). This callback asks
the Trainer for an ordinary checkpoint at the end of the current step instead; the train stage then
exits with code 75 (retryable), which launch targets treat as "retry".
"""

from __future__ import annotations

import logging
import signal

from transformers import TrainerCallback

log = logging.getLogger("tuneline.train")


class StopOnSignal(TrainerCallback):
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            log.warning(
                "received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name
            )
        self.received = signum

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
