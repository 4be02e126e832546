"""Sequence classification for classifier families (encoders): text in, class index out.

The same Trainer loop as the chat models, with two components swapped: :class:`SequenceCollator` turns a
record into the encoder's input (the prompt's user text, truncated to ``data.max_seq_length``) and its
class index (the position of its label in the sorted label list), and :func:`classification_loss` is the
cross-entropy of the head's logits, per-sample weighted for ``train.class_balance: loss`` and normalised
like the answer-token loss (by the number of samples the Trainer counted across accumulated batches).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tuneline.config import Config
from tuneline.data.records import Record
from tuneline.errors import ConfigError, DataError
from tuneline.models.processing import ChatProcessor, classifier_text


def class_labels(configured: Iterable[str] | None, records: Iterable[Record]) -> list[str]:
    """The classes in index order: ``eval.labels`` as written, else the sorted labels of ``records``.

    Training and evaluation both call this on the training split, so class ``i`` means the same label in
    the saved head, in ``id2label`` and in the report.
    """
    return list(configured) if configured else sorted({r.target for r in records})


def check_classifier_config(cfg: Config, family) -> None:
    """Every setting a sequence classifier cannot honour, reported at once (before any training)."""
    name = family.name
    problems = []
    if cfg.train.packing:
        problems.append(
            f"train.packing: {name} models are sequence classifiers (one text, one class); packing is for "
            "causal language models; set train.packing: false"
        )
    if cfg.eval.task == "generation":
        problems.append(
            f"eval.task: {name} models are sequence classifiers and generate no text; "
            "set eval.task: classification (or auto, with labelled records)"
        )
    if cfg.eval.baselines.few_shot:
        problems.append(
            f"eval.baselines.few_shot: a {name} sequence classifier reads no solved examples in its input; "
            "set it to 0 (the embedding_logreg baseline is the reference for encoders)"
        )
    if problems:
        raise ConfigError(problems)


class SequenceCollator:
    def __init__(
        self,
        processor: ChatProcessor,
        max_seq_length: int,
        labels: list[str],
        *,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.loss_weights = loss_weights  # record id -> weight of its loss (class-weighted loss)

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        targets = []
        for r in records:
            if r.images:
                raise DataError(
                    f"record {r.id} ({r.source}) has an image, but {self.processor.family.name} models read "
                    "text only",
                    hint="use a multimodal model family for image data, or drop the image parts",
                )
            if r.target not in self.index:
                raise DataError(
                    f"record {r.id} ({r.source}) has label {r.target!r}, "
                    f"not one of the classes {self.labels}",
                    hint="set eval.labels to every class, or fix the record's label",
                )
            targets.append(self.index[r.target])
        batch = self.processor.encode_plain(
            [classifier_text(r.prompt_messages) for r in records], self.max_seq_length
        )
        out = dict(batch)
        out["labels"] = torch.tensor(targets, dtype=torch.long)
        if self.loss_weights is not None:
            out["loss_weight"] = torch.tensor([self.loss_weights.get(r.id, 1.0) for r in records])
        return out


def classification_loss(model, inputs: dict, num_items_in_batch=None):
    """(cross-entropy of the class logits, outputs); ``inputs["loss_weight"]`` weights each sample."""
    labels = inputs["labels"]
    weight = inputs.get("loss_weight")
    outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", "loss_weight")})
    per_sample = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, reduction="none")
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.device, per_sample.dtype)
    loss = per_sample.sum()
    return loss / (num_items_in_batch if num_items_in_batch is not None else len(labels)), outputs
