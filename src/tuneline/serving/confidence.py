"""How sure a served model is: the log-probability of candidate answers given the request's prompt.

The same measure as evaluation's classification scorer (tuneline.evaluation.classify), computed here on
the served model (serving must not import evaluation): each candidate answer, rendered as the assistant
turn (with its end marker, so a label cannot win by being a prefix of another), is scored by the sum of
the model's log-softmax at its tokens. For classification the candidates are the labels and the
confidence is the top class probability (softmax over the labels, optionally at a temperature); for
generation the one candidate is the generated answer and the confidence is exp(mean token log-prob).

Runs on the model host's worker thread (``ModelHost.call``), between batches, with the variant's
adapter active; returns numbers only.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scored:
    log_probs: np.ndarray  # (K,) summed log P(candidate | prompt)
    tokens: np.ndarray  # (K,) tokens of each candidate
    prompt_tokens: int
    busy_s: float  # time the model spent on it


def _answered(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": text}]}]


def score_candidates(
    host: Any, adapter: str | None, messages: list[dict], images: list, texts: list[str]
) -> Scored:
    """Blocking: on ``host``'s worker thread, the log-probability of each text as the answer."""
    return host.call(lambda: _score(host, adapter, messages, images, texts))


def _score(host: Any, adapter: str | None, messages: list[dict], images: list, texts: list[str]) -> Scored:
    import torch

    began = time.perf_counter()
    proc, model = host.processor, host.model
    ctx: Any = contextlib.nullcontext()
    if adapter is None and host.is_peft:
        ctx = model.disable_adapter()
    elif adapter is not None and adapter != host._active:
        model.set_adapter(adapter)
        host._active = adapter
    prefix = proc.render(messages, add_generation_prompt=True)
    fulls = [proc.render(_answered(messages, t)) for t in texts]
    per_text = [list(images) for _ in texts] if images else None
    enc = proc.encode(fulls, per_text, padding_side="right")
    pre = proc.encode([prefix], [list(images)] if images else None, padding_side="right")
    n_pre = int(pre["attention_mask"][0].sum())
    enc = {k: v.to(host.device) if hasattr(v, "to") else v for k, v in enc.items()}
    with ctx, torch.inference_mode():
        logits = model(**enc).logits.float()
    ids = enc["input_ids"]
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    sums, counts = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
    for i, length in enumerate(lengths):
        # token j (j >= n_pre) is predicted at position j - 1
        row = lp[i, n_pre - 1 : int(length) - 1]
        sums[i] = float(row.sum())
        counts[i] = max(int(row.numel()), 1)
    return Scored(sums, counts, n_pre, time.perf_counter() - began)


def generation_confidence(sum_log_prob: float, tokens: int) -> float:
    """exp(mean token log-probability): the geometric-mean probability of the answer's tokens, in [0, 1]."""
    return math.exp(sum_log_prob / max(tokens, 1))
