"""evaluate: the tuned model against the base model and simple baselines, with honest uncertainty.

    tuneline evaluate CONFIG [--run-dir RUN_DIR]

Every model is scored by the same code on the same records with the same prompts:
- classification (``eval.task``): a probability per label from the model's log-probability of each
  label's answer (evaluation/classify.py), plus the free-generated answer and how often it is not a
  valid label. Binary tasks choose each model's decision threshold on the val split by the same
  procedure (``eval.threshold``) and apply it unchanged to the evaluated split.
- generation: exact match, token F1, ROUGE-L of the greedy answer and perplexity on the references.
- classifier families (encoders with a classification head): the softmax of the head's logits, by one
  function for base and tuned (no generation, no few-shot). Their "base" is the pretrained encoder with
  the new head training started from (drawn from run.seed, untrained): chance level, and reported as such;
  the reference that matters is ``embedding_logreg`` on the same encoder's frozen embeddings.

Then: metrics with 95% bootstrap CIs (patients resampled when records have a group), paired
comparisons of the tuned model against every other (bootstrap; DeLong for ROC-AUC), metrics per
slice of metadata, latency and cost per 1,000 predictions, and the gate (evaluation/gate.py).
Written to ``eval/report.json``, ``eval/predictions.parquet`` (enough to recompute every number) and
``eval/report.html``; ``eval.json`` and the summary keep the headline numbers.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tuneline.config import Config
from tuneline.data.records import Record, read_records
from tuneline.errors import DataError
from tuneline.runs import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("tuneline.evaluate")

EMBEDDING_TRAIN_CAP = 2000  # training records embedded for the logistic-regression baseline


@dataclass
class ModelScores:
    """What one model produced on the evaluated split (and on val, for the threshold)."""

    name: str
    probabilities: np.ndarray | None = None  # (n, K) classification
    val_probabilities: np.ndarray | None = None
    generated: list[str] | None = None
    latency: np.ndarray | None = None  # seconds per record
    loss: float | None = None  # mean answer-token loss on the references
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    base: dict | None
    tuned: dict
    gate: dict | None
    report: dict


def run(cfg: Config, run: RunDir) -> EvalResult:
    import torch
    from peft import PeftModel
    from transformers import set_seed

    from tuneline.evaluation import baselines as bl
    from tuneline.evaluation.classify import classify_sequences, score_labels
    from tuneline.evaluation.scoring import answer_loss, generate_answers
    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.training.collate import ChatCollator
    from tuneline.training.sequence import SequenceCollator

    run.require("train")
    ev = cfg.eval
    records = list(read_records(run.split_file(ev.split)))[: ev.max_samples]
    if not records:
        raise DataError(f"the {ev.split} split is empty", hint="change data.split or eval.split")
    train_records = list(read_records(run.split_file("train")))

    # 1. The task: classification over labels, or generation.
    task, labels, positive = resolve_task(cfg, train_records, records)
    val_records: list[Record] = []
    if task == "classification" and len(labels) == 2 and ev.threshold.method != "fixed" and ev.split != "val":
        val_records = list(read_records(run.split_file("val")))[: ev.max_samples]
        if len({r.target for r in val_records}) < 2:
            log.warning("the val split has fewer than two classes: threshold fixed at %s", ev.threshold.value)
            val_records = []

    # 2. The base model, through the same loading path as training (a classifier's head from the same seed).
    base = resolve_base(cfg.model)
    classifier = base.family.is_classifier
    if classifier:
        check_classifier_eval(cfg, base.family, task, labels, run)
    processor = load_processor(base)
    set_seed(cfg.run.seed)
    model = load_model(base, cfg.model.dtype, labels=labels if classifier else None)
    if torch.cuda.is_available():
        model = model.to("cuda")
    device = next(model.parameters()).device
    room = cfg.data.max_seq_length * (1 + ev.baselines.few_shot)  # few-shot prompts are longer
    collator = ChatCollator(processor, room)

    def score(name: str, m, prefix: list[dict] | None = None, proc=None) -> ModelScores:
        if classifier:
            return score_classifier(name, m, SequenceCollator(processor, cfg.data.max_seq_length, labels))
        out = ModelScores(name)
        started = time.perf_counter()
        proc = proc or processor  # a model with its own processor: the distillation teacher
        chat = collator if proc is processor else ChatCollator(proc, room)
        if task == "classification":
            s = score_labels(m, chat, records, labels, batch_size=ev.batch_size, prefix=prefix)
            out.probabilities, out.latency = s.probabilities, s.latency
            if val_records:
                out.val_probabilities = score_labels(
                    m, chat, val_records, labels, batch_size=ev.batch_size, prefix=prefix
                ).probabilities
                out.extra["val_labels"] = [r.target for r in val_records]
        prompts = records if prefix is None else [_with_prefix(r, prefix) for r in records]
        out.generated = generate_answers(m, proc, prompts, ev.batch_size, ev.max_new_tokens, device)
        if prefix is None:
            out.loss = answer_loss(
                m, ChatCollator(proc, cfg.data.max_seq_length), records, ev.batch_size, device
            )
        if out.latency is None:
            out.latency = np.full(len(records), (time.perf_counter() - started) / len(records))
        log.info("%s scored on %d records in %.1f s", name, len(records), time.perf_counter() - started)
        return out

    def score_classifier(name: str, m, seq: SequenceCollator) -> ModelScores:
        started = time.perf_counter()
        s = classify_sequences(m, seq, records, batch_size=ev.batch_size)
        truth = [labels.index(r.target) for r in records]
        out = ModelScores(name, probabilities=s.probabilities, latency=s.latency)
        # cross-entropy of the true class, from the stored probabilities (recomputable from the parquet)
        out.loss = float(-np.mean(np.log(s.probabilities[np.arange(len(records)), truth])))
        if val_records:
            val = classify_sequences(m, seq, val_records, batch_size=ev.batch_size)
            out.val_probabilities = val.probabilities
            out.extra["val_labels"] = [r.target for r in val_records]
        log.info("%s scored on %d records in %.1f s", name, len(records), time.perf_counter() - started)
        return out

    scored: dict[str, ModelScores] = {}
    if ev.compare_base:
        scored["base"] = score("base", model)
        if classifier:
            scored["base"].extra["note"] = (
                "pretrained encoder with the untrained classification head fine-tuning started from "
                "(drawn from run.seed): chance level by construction"
            )
    scored["prior"] = prior_baseline(task, labels, train_records, records, val_records)
    if ev.baselines.few_shot:
        prefix = bl.few_shot_prefix(
            train_records, labels or [r.answer for r in train_records], ev.baselines.few_shot, cfg.run.seed
        )
        scored["few_shot"] = score("few_shot", model, prefix)
    if task == "classification" and ev.baselines.embedding_logreg:
        scored["embedding_logreg"] = _embedding_baseline(
            cfg, model, processor, train_records, records, val_records, labels
        )

    # The distillation teacher (train.teacher), scored like every other model on the same records.
    if cfg.train.teacher is not None and task == "classification" and not classifier:
        from tuneline.training.distill import load_teacher

        teacher = load_teacher(cfg)
        scored["teacher"] = score("teacher", teacher.model, proc=teacher.processor)
        scored["teacher"].extra["teacher"] = teacher.identity
        del teacher

    # 3. The tuned model as it will be deployed: the base (4-bit for QLoRA) with the adapter on top,
    # or, for a full fine-tune, the saved model itself.
    # serve.quantization: the weights it will serve with (int8 / nf4), so the gate judges those.
    quant = cfg.serve.quantization
    if cfg.train.method == "full":
        tuned_model = load_model(
            base,
            cfg.model.dtype,
            folder=run.adapter_dir,
            labels=labels if classifier else None,
            quantization=quant,
        )
    else:
        if cfg.train.method == "qlora" or quant != "none":
            set_seed(cfg.run.seed)
            model = load_model(
                base,
                cfg.model.dtype,
                quantize_4bit=cfg.train.method == "qlora" and quant == "none",
                quantization=quant,
                labels=labels if classifier else None,
            )
        tuned_model = PeftModel.from_pretrained(model, run.adapter_dir)
    if torch.cuda.is_available():
        tuned_model = tuned_model.to("cuda")
    scored["tuned"] = score("tuned", tuned_model)

    # 4. Metrics, CIs, comparisons, slices, gate.
    from tuneline.evaluation.report import build_report, predictions_table

    trained = run.summary_model().train
    privacy = trained.privacy if trained else None
    report = build_report(cfg, task, labels, positive, records, scored, privacy)
    report["models"]["tuned"]["quantization"] = quant
    run.eval_dir.mkdir(exist_ok=True)
    from tuneline.evaluation import audit  # the memorisation audit: the planted canaries' exposure

    report["audit"] = audit.measure(tuned_model, collator, run.data_dir, ev.audit.candidates, ev.batch_size)
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(predictions_table(task, labels, records, scored, report), buf)
    atomic_write_bytes(run.eval_dir / "predictions.parquet", buf.getvalue())
    atomic_write_json(run.eval_dir / "report.json", report)
    from tuneline.evaluation.report_html import render_report

    atomic_write_text(
        run.eval_dir / "report.html", render_report(report, run.eval_dir / "predictions.parquet")
    )

    # 5. The headline numbers (eval.json and the summary), then the generated answers.
    headline = {name: _headline(report, name) for name in report["models"]}
    rows = []
    for i, rec in enumerate(records):
        row = {"id": rec.id, "reference": rec.answer}
        row.update({name: s.generated[i] for name, s in scored.items() if s.generated is not None})
        rows.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(run.predictions_file, "\n".join(rows) + "\n")
    gate = report.get("gate")
    summary_eval = {
        "split": ev.split,
        "task": task,
        "n": len(records),
        "audit": audit.headline(report["audit"]),
        **headline,
        "gate": gate,
        "models": list(report["models"]),
        "beaten_by": report.get("beaten_by") or [],
        "permutation": report.get("permutation"),
        "primary": report.get("primary"),
        "quantization": quant,
    }
    atomic_write_json(run.eval_file, summary_eval)
    run.update_summary(eval=summary_eval)
    if gate is not None:
        log.info("gate %s", "passed" if gate["passed"] else "FAILED")
    return EvalResult(base=headline.get("base"), tuned=headline["tuned"], gate=gate, report=report)


def resolve_task(
    cfg: Config, train: list[Record], records: list[Record]
) -> tuple[str, list[str], str | None]:
    """(task, labels, positive label) from eval.* and the data."""
    ev = cfg.eval
    task = ev.task
    if task == "auto":
        labelled = all(r.label is not None for r in train + records)
        task = "classification" if ev.labels or labelled else "generation"
    if task == "generation":
        return task, [], None
    labels = list(ev.labels) if ev.labels else sorted({r.target for r in train})
    if len(labels) < 2:
        raise DataError(
            f"classification needs at least two labels, the training split has {labels}",
            hint="set eval.labels, or eval.task: generation",
        )
    unknown = sorted({r.target for r in records} - set(labels))
    if unknown:
        raise DataError(
            f"the {ev.split} split has labels that are not among the classes {labels}: {unknown[:5]}",
            hint="add them to eval.labels, or fix the records' answers",
        )
    positive = None
    if len(labels) == 2:
        if ev.positive_label is not None:
            if ev.positive_label not in labels:
                raise DataError(
                    f"eval.positive_label {ev.positive_label!r} is not one of the labels {labels}",
                    hint="set it to one of them",
                )
            positive = ev.positive_label
        else:
            counts = {label: sum(r.target == label for r in train) for label in labels}
            positive = min(labels, key=lambda label: (counts[label], label))  # the rarer class
    return task, labels, positive


def check_classifier_eval(cfg: Config, family, task: str, labels: list[str], run: RunDir) -> None:
    """A classifier family evaluates a classification task, over the classes its head was trained on."""
    from tuneline.errors import ModelError
    from tuneline.training.sequence import check_classifier_config

    check_classifier_config(cfg, family)
    if task != "classification":
        raise DataError(
            f"{family.name} models are sequence classifiers, but the records carry no labels "
            "(eval.task resolved to generation)",
            hint="give the records a label field, or set eval.labels",
        )
    train = run.summary_model().train
    trained = train.labels if train else None
    if trained is not None and list(trained) != list(labels):
        raise ModelError(
            f"the classifier was trained on the classes {trained} (in this order), "
            f"but evaluation has {labels}",
            hint="evaluate with the eval.labels the model was trained with, or train again",
        )


def _with_prefix(record: Record, prefix: list[dict]) -> Record:
    from dataclasses import replace

    return replace(record, messages=[*prefix, *record.messages])


def _embedding_baseline(cfg, model, processor, train, records, val_records, labels) -> ModelScores:
    import random

    from tuneline.evaluation import baselines as bl

    rng = random.Random(cfg.run.seed)
    sample = rng.sample(train, min(len(train), EMBEDDING_TRAIN_CAP))
    started = time.perf_counter()
    bs = cfg.eval.batch_size
    length = cfg.data.max_seq_length  # classifier families truncate to it, in training too
    train_x = bl.embed(model, processor, sample, bs, max_length=length)
    test_x = bl.embed(model, processor, records, bs, max_length=length)
    probs = bl.logistic_probe(train_x, [r.target for r in sample], test_x, labels, cfg.run.seed)
    out = ModelScores("embedding_logreg", probabilities=probs)
    if val_records:
        out.extra["val_labels"] = [r.target for r in val_records]
        out.val_probabilities = bl.logistic_probe(
            train_x,
            [r.target for r in sample],
            bl.embed(model, processor, val_records, bs, max_length=length),
            labels,
            cfg.run.seed,
        )
    out.latency = np.full(len(records), (time.perf_counter() - started) / max(len(records) + len(sample), 1))
    out.extra["train_records"] = len(sample)
    return out


def prior_baseline(
    task: str, labels: list[str], train: list[Record], records: list[Record], val_records: list[Record]
) -> ModelScores:
    """The model that ignores its input: every record gets the training split's class frequencies
    (add-one smoothed, so no class has probability 0) and the most frequent answer. It costs nothing,
    is always scored, and a fine-tune that does not beat it has learned nothing usable."""
    from collections import Counter

    out = ModelScores("prior", latency=np.zeros(len(records)))
    if task == "classification":
        counts = Counter(r.target for r in train)
        freq = np.array([counts.get(label, 0) + 1.0 for label in labels])
        freq /= freq.sum()
        out.probabilities = np.tile(freq, (len(records), 1))
        majority = labels[int(np.argmax(freq))]
        if val_records:
            out.val_probabilities = np.tile(freq, (len(val_records), 1))
            out.extra["val_labels"] = [r.target for r in val_records]
    else:
        counts = Counter(r.answer for r in train)
        majority = min(counts, key=lambda a: (-counts[a], a)) if counts else ""
    out.generated = [majority] * len(records)
    out.extra["note"] = "training class frequencies for every record, whatever the input"
    return out


def _headline(report: dict, name: str) -> dict:
    entry = report["models"][name]
    out = {"n": report["n"]}
    out.update({k: v for k, v in entry["metrics"].items() if isinstance(v, int | float) or v is None})
    for key in ("loss", "invalid_label_rate"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    return out
