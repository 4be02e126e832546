"""Distillation for classification: a tuned teacher's class probabilities as the student's soft targets.

``train.teacher`` names the teacher (a registered model ``NAME@ALIAS`` / ``NAME/VERSION``, or a run
directory with an ``adapter/``). Before training, the teacher scores every training and val record with
the scorer evaluation uses (evaluation/classify.py ``score_labels``: the log-probability of each label's
answer tokens given the prompt); the scores are cached in ``data/teacher_probs.npz`` keyed by record id,
with the teacher's identity, and reused on resume.

In training each record becomes K rows (its prompt answered by each label, built by the same collator),
one forward pass with the LM head at the label tokens only. The student's label score is the sum of its
log-probabilities at those tokens, as in evaluation. The loss (Hinton et al.)::

    alpha * CE(true label's answer tokens)                       # the usual hard-label loss
    + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))   # t, s: teacher / student label scores

(``T^2`` keeps the soft term's gradient scale independent of T.)
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tuneline.errors import ConfigError, DataError
from tuneline.runs import atomic_write_bytes

if TYPE_CHECKING:
    from tuneline.models.processing import ChatProcessor

log = logging.getLogger("tuneline.distill")

CACHE_NAME = "teacher_probs.npz"
IGNORE = -100


@dataclass
class Teacher:
    model: object
    processor: ChatProcessor
    identity: dict  # what the teacher is: kind, reference, version or run directory


def load_teacher(cfg) -> Teacher:
    """The model ``train.teacher`` names: a run directory (its config + adapter/) or a registry reference."""
    import torch as _torch

    spec = cfg.train.teacher
    folder = Path(spec).expanduser()
    if folder.is_dir():
        model, processor, identity = _from_run_dir(folder)
    else:
        from tuneline.errors import RegistryError
        from tuneline.models.load import load_processor
        from tuneline.registry.resolve import load_registered, resolve, resolve_base_of

        try:
            rm = resolve(spec, cfg.registry.tracking_uri)
        except RegistryError as exc:
            raise ConfigError(
                [f"train.teacher {spec!r} is neither a run directory nor a registered model: {exc}"],
                hint="give a run directory with adapter/, or NAME@ALIAS / NAME/VERSION of a registered model",
            ) from exc
        base = resolve_base_of(rm)
        model = load_registered(rm, base=base)
        processor = load_processor(base)
        identity = {
            "kind": "registry",
            "reference": spec,
            "name": rm.name,
            "version": rm.version,
            "source": rm.source,
            "base_model": rm.base_model,
            "method": rm.method,
        }
    if _torch.cuda.is_available():
        model = model.to("cuda")
    return Teacher(model.eval(), processor, identity)


def _from_run_dir(folder: Path):
    from peft import PeftModel

    from tuneline.config import load_config
    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.runs import RunDir

    run = RunDir(folder)
    if not run.adapter_dir.is_dir() or not run.config_file.is_file():
        raise ConfigError(
            [
                f"train.teacher {str(folder)!r} is a folder but not a trained run directory (needs "
                "config.resolved.yaml and adapter/)"
            ],
            hint="point train.teacher at a run that finished `tuneline train`, or at a registered model",
        )
    tcfg = load_config(run.config_file, env={})
    base = resolve_base(tcfg.model)
    if base.family.is_classifier:
        raise ConfigError(
            [
                f"train.teacher {str(folder)!r} is a {base.family.name} sequence classifier; distillation "
                "needs a chat model scoring label answers"
            ],
            hint="use a generative teacher (tiny:gemma3, tiny:llama, ...)",
        )
    if tcfg.train.method == "full":
        model = load_model(base, tcfg.model.dtype, folder=run.adapter_dir)
    else:
        model = load_model(base, tcfg.model.dtype, quantize_4bit=tcfg.train.method == "qlora")
        model = PeftModel.from_pretrained(model, run.adapter_dir)
    identity = {
        "kind": "run",
        "reference": str(folder),
        "run_dir": str(run.path),
        "run_id": run.run_id,
        "base_model": tcfg.model.base,
        "method": tcfg.train.method,
    }
    return model, load_processor(base), identity


def teacher_scores(cfg, run, records: list, labels: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """(record id -> the teacher's K label log-scores, teacher identity), from the cache when it matches."""
    from tuneline.evaluation.classify import score_labels
    from tuneline.training.collate import ChatCollator

    path = run.data_dir / CACHE_NAME
    wanted = {r.id for r in records}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ids = [str(i) for i in z["ids"]]
            if (
                meta["labels"] == labels
                and meta["teacher"]["reference"] == cfg.train.teacher
                and wanted <= set(ids)
            ):
                log.info("teacher label scores from %s (%d records)", path, len(ids))
                return dict(zip(ids, z["log_scores"], strict=True)), meta["teacher"]
        log.info("%s is for another teacher, labels or records: recomputing", path)
    teacher = load_teacher(cfg)
    collator = ChatCollator(teacher.processor, cfg.data.max_seq_length)
    s = score_labels(teacher.model, collator, records, labels, batch_size=cfg.eval.batch_size)
    id_array = np.array([r.id for r in records])
    meta = {"labels": labels, "teacher": teacher.identity}
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=id_array,
        log_scores=s.log_probs,
        probabilities=s.probabilities,
        meta=np.array(json.dumps(meta)),
    )
    atomic_write_bytes(path, buf.getvalue())
    truth = [labels.index(r.target) for r in records if r.target in labels]
    acc = float(np.mean(s.probabilities.argmax(1)[: len(truth)] == truth)) if truth else float("nan")
    log.info("teacher scored %d records (accuracy on them %.3f), cached in %s", len(records), acc, path)
    del teacher
    return {r.id: s.log_probs[i] for i, r in enumerate(records)}, meta["teacher"]


class DistillCollator:
    """K rows per record (its prompt answered by each label) plus the true label's index and the
    teacher's label scores. The token labels go under ``distill_labels`` so the Trainer does not count
    K rows of answer tokens as the batch's items."""

    def __init__(self, collator, labels: list[str], teacher: dict[str, np.ndarray]) -> None:
        self.collator = collator  # a ChatCollator (not pretokenized: its rows are keyed by record id)
        self.labels = list(labels)
        self.teacher = teacher

    def __call__(self, records: list) -> dict:
        from tuneline.evaluation.classify import with_answer

        missing = [r.id for r in records if r.id not in self.teacher]
        if missing:
            raise DataError(
                f"records {missing[:5]} have no teacher label scores",
                hint="delete data/teacher_probs.npz in the run directory and run train again",
            )
        unknown = [r.id for r in records if r.target not in self.labels]
        if unknown:
            raise DataError(
                f"records {unknown[:5]} have answers outside the labels {self.labels}",
                hint="distillation is for classification: every record's answer must be one label",
            )
        rows = [with_answer(r, label) for r in records for label in self.labels]
        batch = self.collator(rows)
        batch.pop("loss_weight", None)
        batch["distill_labels"] = batch.pop("labels")
        batch["distill_target"] = torch.tensor([self.labels.index(r.target) for r in records])
        batch["teacher_scores"] = torch.tensor(
            np.stack([self.teacher[r.id] for r in records]), dtype=torch.float32
        )
        return batch


def distill_loss(model, inputs: dict, *, temperature: float, alpha: float):
    """(alpha * hard-label CE + (1 - alpha) * T^2 * KL(teacher_T || student_T), outputs): the module doc."""
    from tuneline.training import masks

    labels = inputs["distill_labels"]  # (B*K, T)
    target = inputs["distill_target"]  # (B,)
    teacher = inputs["teacher_scores"].float()  # (B, K)
    b, k = teacher.shape
    model_inputs = {
        key: v
        for key, v in inputs.items()
        if key not in ("distill_labels", "distill_target", "teacher_scores")
    }
    ready = masks.build(masks.model_config(model), model_inputs)
    if ready is not None:
        model_inputs["attention_mask"] = ready
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE
    outputs = model(**model_inputs, logits_to_keep=keep)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[targets != IGNORE][:, None])[:, 0]
    row_of = keep.nonzero()[:, 0]
    scores = token_lp.new_zeros(b * k).index_add(0, row_of, token_lp).view(b, k)  # student label scores
    # hard: the answer-token cross-entropy of each record's true label row, averaged over its tokens
    true_row = torch.arange(b, device=target.device) * k + target.to(row_of.device)
    on_true = torch.isin(row_of, true_row.to(row_of.device))
    hard = -token_lp[on_true].sum() / on_true.sum().clamp(min=1)
    t = temperature
    student_t = torch.log_softmax(scores / t, dim=-1)
    teacher_t = torch.log_softmax(teacher.to(scores.device) / t, dim=-1)
    kl = torch.nn.functional.kl_div(student_t, teacher_t, log_target=True, reduction="batchmean")
    return alpha * hard + (1 - alpha) * t * t * kl, outputs
