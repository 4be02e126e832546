"""Loss only where it is needed: the LM head runs at answer positions alone.

Short answers after long prompts (a label after a few hundred text and image tokens) make the full
LM head the biggest waste of a step: logits for every position times a 32k-262k vocabulary. The
models accept ``logits_to_keep`` as a (B, T) boolean mask and return only those rows (N, V); the
cross-entropy is computed here, since the models refuse ``labels`` together with a tensor mask. Using
``logits_to_keep`` rather than calling the LM head ourselves keeps model-specific steps such as
Gemma's final logit soft-capping. Measured (shared/notes/training-facts.md): equal losses to 1e-6,
and on a Gemma-3-style step with a 32k vocabulary 0.13 s / +49 MB instead of 1.22 s / +948 MB.
"""

from __future__ import annotations

import torch
from transformers import Trainer

IGNORE = -100


def answer_only_loss(model, inputs: dict, num_items_in_batch=None):
    """(summed-or-averaged cross-entropy over answer tokens, model outputs)."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[targets != IGNORE], reduction="sum")
    if num_items_in_batch is None:
        return loss / max(int(keep.sum()), 1), outputs
    return loss / num_items_in_batch, outputs


class AnswerOnlyTrainer(Trainer):
    """The transformers Trainer with :func:`answer_only_loss`; everything else is the stock loop."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = answer_only_loss(model, inputs, num_items_in_batch)
        # Normalised over the whole accumulated batch when the Trainer counted its tokens, else per batch.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = (
                loss * self.accelerator.num_processes
            )  # the Trainer's own convention for token-averaged DDP
        return (loss, outputs) if return_outputs else loss
