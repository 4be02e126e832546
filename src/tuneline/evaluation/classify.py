"""Classification by log-probability: a probability per class, not a regex on free text.

For each record and each configured label, the label's answer text (with the turn's end marker, so
that "mal" cannot win over "malignant" by being a prefix) is scored by the model's log-probability
given the record's prompt: the sum of the log-softmax at exactly the tokens the training collator
labels. A softmax over the K label scores gives the class probabilities. One forward pass per label
(K rows per record, batched); the LM head runs only at the label tokens.

The same function scores the base model, the tuned model and the few-shot baseline, on the same
records with the same prompts: differences between them are the models', not the harness's.
Sequence classifiers (encoder families) have a head with one logit per class instead: their
probabilities are its softmax (:func:`classify_sequences`), again by one function for base and tuned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from tuneline.data.records import Record
from tuneline.training.collate import IGNORE, ChatCollator


@dataclass(frozen=True)
class LabelScores:
    labels: tuple[str, ...]
    log_probs: np.ndarray  # (n, K): log P(label text | prompt), summed over its tokens
    probabilities: np.ndarray  # (n, K): softmax of log_probs over the labels
    latency: np.ndarray  # (n,) seconds per record (its batch's time / records in the batch)


def with_answer(record: Record, answer: str, prefix: list[dict] | None = None) -> Record:
    """The record's prompt (after ``prefix`` turns, e.g. few-shot examples), answered by ``answer``."""
    messages = [*(prefix or []), *record.prompt_messages]
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return replace(record, messages=messages)


def _label_scores(labels, log_scores: np.ndarray, latency: np.ndarray) -> LabelScores:
    """LabelScores with class probabilities: the softmax of each row's per-class log scores."""
    probs = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return LabelScores(tuple(labels), log_scores, probs, latency)


@torch.no_grad()
def score_labels(
    model,
    collator: ChatCollator,
    records: list[Record],
    labels: list[str],
    *,
    batch_size: int,
    prefix: list[dict] | None = None,
    progress=None,
) -> LabelScores:
    device = next(model.parameters()).device
    model.eval()
    k = len(labels)
    out = np.zeros((len(records), k))
    latency = np.zeros(len(records))
    per_batch = max(1, batch_size // k)
    for start in range(0, len(records), per_batch):
        chunk = records[start : start + per_batch]
        began = time.perf_counter()
        rows = [with_answer(r, label, prefix) for r in chunk for label in labels]
        batch = {
            key: value.to(device) if isinstance(value, torch.Tensor) else value
            for key, value in collator(rows).items()
        }
        targets = batch.pop("labels")[:, 1:]
        keep = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        keep[:, :-1] = targets != IGNORE
        logits = model(**batch, logits_to_keep=keep).logits.float()  # (N, V): label positions only
        token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[targets != IGNORE][:, None])[:, 0]
        row_of = keep.nonzero()[:, 0]
        sums = torch.zeros(len(rows), device=device, dtype=token_lp.dtype).index_add_(0, row_of, token_lp)
        out[start : start + len(chunk)] = sums.view(len(chunk), k).cpu().double().numpy()
        latency[start : start + len(chunk)] = (time.perf_counter() - began) / len(chunk)
        if progress is not None:
            progress(len(chunk))
    return _label_scores(labels, out, latency)


@torch.no_grad()
def classify_sequences(model, collator, records: list[Record], *, batch_size: int) -> LabelScores:
    """A sequence classifier's class probabilities: the softmax of its head's logits, one pass per batch.

    ``collator`` is the training one (training/sequence.py): the same text, truncation and class order.
    ``log_probs`` holds the log-softmax, so ``-log_probs[i, class_i]`` is record i's cross-entropy.
    """
    device = next(model.parameters()).device
    model.eval()
    out = np.zeros((len(records), len(collator.labels)))
    latency = np.zeros(len(records))
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        began = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator(chunk).items() if k not in ("labels", "loss_weight")}
        logits = model(**batch).logits.float()
        out[start : start + len(chunk)] = torch.log_softmax(logits, dim=-1).cpu().double().numpy()
        latency[start : start + len(chunk)] = (time.perf_counter() - began) / len(chunk)
    return _label_scores(collator.labels, out, latency)
