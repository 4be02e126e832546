"""Baselines a fine-tune must beat: the base model few-shot, and a linear probe on frozen embeddings.

(The base model zero-shot is scored by the same path as the tuned model.)

- ``few_shot``: the base model with ``k`` solved training examples as earlier turns of the chat,
  cycling through the labels so every class is shown; chosen deterministically from the seed.
- ``embedding_logreg``: scikit-learn's logistic regression (standardised inputs, class-balanced
  weights) on the base model's frozen representation of each prompt: the last hidden layer
  mean-pooled over the prompt's tokens, image tokens included (for a VLM they carry the vision
  encoder's output through the projector, so this probes vision and text together). For encoder families
  (sequence classifiers) the same mean over the encoder's last layer of the classifier's own input,
  [CLS] and [SEP] included: the sentence embedding of sentence-transformers models such as MiniLM.
  A strong, cheap reference: when a fine-tune cannot beat it, the report says so.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch

from tuneline.data.records import Record, load_images
from tuneline.models.processing import ChatProcessor, classifier_text


def few_shot_prefix(train: list[Record], labels: list[str], k: int, seed: int) -> list[dict]:
    """Messages of ``k`` training records (user + answer turns), labels taken in turn."""
    by_label: dict[str, list[Record]] = defaultdict(list)
    for r in train:
        by_label[r.label if r.label is not None else r.answer].append(r)
    rng = random.Random(seed)
    for pool in by_label.values():
        rng.shuffle(pool)
    chosen: list[Record] = []
    order = [label for label in labels if by_label.get(label)]
    i = 0
    while len(chosen) < k and order:
        pool = by_label[order[i % len(order)]]
        if pool:
            chosen.append(pool.pop())
        if not any(by_label[label] for label in order):
            break
        i += 1
    rng.shuffle(chosen)  # no fixed label order right before the question
    return [m for r in chosen for m in r.messages]


@torch.no_grad()
def embed(
    model, processor: ChatProcessor, records: list[Record], batch_size: int, *, max_length: int = 512
) -> np.ndarray:
    """(n, hidden): the last hidden layer mean-pooled over each prompt's tokens (padding excluded).

    ``max_length``: classifier families' truncation (data.max_seq_length), as in training.
    """
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        if processor.family.is_classifier:  # an encoder: no chat template, no LM head to skip
            texts = [classifier_text(r.prompt_messages) for r in chunk]
            batch = {k: v.to(device) for k, v in processor.encode_plain(texts, max_length).items()}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
        else:
            texts = [processor.render(r.prompt_messages, add_generation_prompt=True) for r in chunk]
            images = [load_images(r) for r in chunk]
            batch = processor.encode(texts, images if any(images) else None, padding_side="right")
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = model(**batch, output_hidden_states=True, logits_to_keep=1).hidden_states[-1].float()
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu().double().numpy())
    return np.concatenate(out)


def logistic_probe(
    train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, labels: list[str], seed: int
) -> np.ndarray:
    """Class probabilities (n_test, K) in the order of ``labels``, from a logistic regression on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = sorted(set(train_y))
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed),
    )
    probe.fit(train_x, train_y)
    probs = np.zeros((len(test_x), len(labels)))
    fitted = probe.predict_proba(test_x)
    for j, label in enumerate(probe.classes_):
        if label in labels:
            probs[:, labels.index(label)] = fitted[:, j]
    if len(present) < len(labels):  # a class never seen in training gets no probability mass
        probs /= probs.sum(axis=1, keepdims=True)
    return probs
