"""train: LoRA fine-tuning of the base model on the prepared training split.

    tuneline train CONFIG [--run-dir RUN_DIR]

Loads the base model through from_pretrained, adds LoRA (seeded first), trains with the
transformers Trainer and our collator (loss on answer tokens only), then saves the adapter
and the processor into adapter/ in one rename. Classifier families (encoders) take the same path with
a classification head: text -> class index, cross-entropy over classes (training/sequence.py).

Every checkpoint is sealed with a checksum manifest; running the command again resumes from the
newest checkpoint that verifies. SIGTERM or SIGINT saves a checkpoint at the end of the current
step and exits with code 75 (retryable).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneline.config import Config
from tuneline.data.records import read_records
from tuneline.errors import ConfigError, DataError, TrainingInterrupted
from tuneline.runs import RunDir, atomic_dir, is_main_process

if TYPE_CHECKING:
    from tuneline.training.packing import PackedRows

log = logging.getLogger("tuneline.train")


@dataclass(frozen=True)
class TrainResult:
    final_loss: float
    steps: int
    seconds: float
    trainable_parameters: int


def run(cfg: Config, run: RunDir, *, callbacks: Sequence[object] = ()) -> TrainResult:
    """``callbacks``: more TrainerCallbacks (a sweep's pruning callback reporting the val loss curve)."""
    import torch
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.training.adapters import prepare_for_training
    from tuneline.training.callbacks import MetricsCallback, ProgressCallback, peak_memory_gb
    from tuneline.training.checkpoints import ManifestCallback, newest_valid
    from tuneline.training.collate import ChatCollator
    from tuneline.training.distributed import strategy_arguments
    from tuneline.training.loss import TunelineTrainer
    from tuneline.training.packing import PackingCollator, flash_attention
    from tuneline.training.sequence import SequenceCollator
    from tuneline.training.signals import StopOnSignal

    run.require("prepare")
    train_records = list(read_records(run.split_file("train")))
    val_records = list(read_records(run.split_file("val"))) if cfg.train.eval_steps else []
    if cfg.train.eval_steps and not val_records:
        raise DataError(
            "train.eval_steps is set but the val split is empty", hint="give data.split.val a share"
        )
    if not train_records:
        raise DataError(f"{run.split_file('train')} is empty", hint="re-run prepare with more data")
    if cfg.train.packing and (with_image := next((r for r in train_records if r.images), None)):
        raise DataError(
            f"train.packing is for text-only data, but record {with_image.id} ({with_image.source}) "
            "has an image",
            hint="set train.packing: false (length grouping already keeps padding low)",
        )

    # 1. Base model and processor, the same from_pretrained path for tiny, local, package and hub models.
    # A classifier's new head is drawn from the seed, as evaluation draws the base model's.
    base = resolve_base(cfg.model)
    run.update_provenance(base_model=base.provenance())
    train_records += planted_canaries(cfg, run, base.family)  # eval.audit.canaries: training only
    labels = classifier_labels(cfg, base.family, train_records)
    processor = load_processor(base)
    set_seed(cfg.run.seed)
    model = load_model(base, cfg.model.dtype, quantize_4bit=cfg.train.method == "qlora", labels=labels)

    # 2. The method: LoRA / DoRA / QLoRA adapters, or full. Seed before PEFT draws the LoRA init.
    set_seed(cfg.run.seed)
    model = prepare_for_training(model, cfg.train, base.family)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dp = privacy_session(cfg, model, len(train_records))  # None without train.privacy.dp
    log.info(
        "base %s (%s), method %s, trainable parameters %d",
        base.spec,
        base.family.name,
        cfg.train.method,
        trainable,
    )

    # 3. Trainer with CPU-sane defaults: no bf16, no gradient checkpointing unless asked.
    # 4. Batching: the sample order (length-grouped, class-balanced), packing, the image feature cache.
    batching = plan_batches(cfg, processor, train_records)
    steps_per_epoch = math.ceil(
        len(batching.train_dataset) / (cfg.train.batch_size * cfg.train.gradient_accumulation_steps)
    )
    args = TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        learning_rate=cfg.train.learning_rate,
        lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_ratio,
        weight_decay=cfg.train.weight_decay,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps or -1,
        max_grad_norm=0.0 if dp else cfg.train.max_grad_norm,  # DP clips each sample instead
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps",
        save_steps=max(1, cfg.train.save_steps),
        save_total_limit=cfg.train.save_total_limit,
        bf16=cfg.train.bf16,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to="none",
        include_num_input_tokens_seen="non_padding",  # training batches only, gathered across ranks
        disable_tqdm=True,
        eval_strategy="steps" if cfg.train.eval_steps else "no",
        eval_steps=cfg.train.eval_steps,
        per_device_eval_batch_size=cfg.train.batch_size,
        prediction_loss_only=True,
        load_best_model_at_end=bool(cfg.train.eval_steps),
        metric_for_best_model="eval_loss" if cfg.train.eval_steps else None,
        greater_is_better=False if cfg.train.eval_steps else None,
        use_cpu=not torch.cuda.is_available(),
        **strategy_arguments(cfg.train.distributed, cuda=torch.cuda.is_available()),
    )
    image_cache = image_feature_cache(cfg, model, base.family)
    distill = None
    if cfg.train.teacher is not None:
        collator, distill = distill_collator(cfg, run, base.family, processor, train_records, val_records)
    elif labels is not None:
        collator = SequenceCollator(
            processor, cfg.data.max_seq_length, labels, loss_weights=batching.loss_weights
        )
    else:
        collator = ChatCollator(
            processor,
            cfg.data.max_seq_length,
            loss_weights=batching.loss_weights,
            image_keys=image_cache is not None,
            cached_images=image_cache.features.__contains__ if image_cache is not None else None,
        )
        started = time.perf_counter()
        if n := collator.pretokenize(train_records + val_records):  # text-only records, once
            log.info("tokenized %d text records up front in %.1f s", n, time.perf_counter() - started)
    callbacks = [
        *([dp.callback()] if dp else []),  # first: epsilon joins the logged metrics; before the seal
        *([ProgressCallback()] if is_main_process() else []),
        MetricsCallback(run),
        *live_mlflow(cfg, run),
        ManifestCallback(),
        stopper := StopOnSignal(),
        *callbacks,
    ]
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = TunelineTrainer(
        model=model,
        args=args,
        train_dataset=batching.train_dataset,
        eval_dataset=val_records or None,
        data_collator=PackingCollator(collator, flatten=flash_attention(model))
        if cfg.train.packing
        else collator,
        processing_class=processor.inner,
        callbacks=callbacks,
        answer_only=cfg.train.answer_only_logits,
        sampler=batching.sampler,
        image_cache=image_cache,
        classifier=labels is not None,
        dp=dp,
        distill=distill,
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar shows the loss

    # 5. Train, resuming from the newest checkpoint that verifies (broken newer ones are skipped).
    resume = newest_valid(run.checkpoints_dir)
    if resume is not None:
        log.info("resuming from %s", resume.name)
        run.append_metric({"event": "resume", "checkpoint": resume.name})
        if dp:
            dp.resume_from(resume)
    started = time.time()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - started
    if stopper.received is not None:
        raise TrainingInterrupted(
            f"training stopped by signal {stopper.received} at step {trainer.state.global_step} of "
            f"{trainer.state.max_steps}; checkpoint-{trainer.state.global_step} saved",
            hint="run the same command again to resume from it",
        )
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    final_loss = losses[-1] if losses else float(output.training_loss)

    # 6. Save adapter + processor atomically (rank 0: every rank holds the same weights).
    if is_main_process():
        with atomic_dir(run.adapter_dir) as tmp:
            trainer.accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
            processor.inner.save_pretrained(tmp)
            # The drift reference profile travels with the adapter into the registry (tuneline serve).
            from tuneline.serving.profile import write_into

            write_into(tmp, train_records, trainer.accelerator.unwrap_model(model), processor)

    result = TrainResult(
        final_loss=final_loss,
        steps=trainer.state.global_step,
        seconds=seconds,
        trainable_parameters=trainable,
    )
    hours = seconds / 3600 * cfg.train.cost.count
    best = trainer.state.best_model_checkpoint
    run.update_summary(
        train={
            "best_checkpoint": Path(best).name if best else None,
            "best_eval_loss": trainer.state.best_metric,
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
            "tokens": trainer.state.num_input_tokens_seen,
            "peak_memory_gb": round(peak_memory_gb(), 3),
            "cost": {
                "accelerator": cfg.train.cost.accelerator,
                "count": cfg.train.cost.count,
                "accelerator_hours": hours,
                "price_per_hour": cfg.train.cost.price_per_hour,
                "cost": hours * cfg.train.cost.price_per_hour,
            },
            "final_loss": final_loss,
            "mean_loss": float(output.training_loss),
            "steps": result.steps,
            "steps_per_epoch": steps_per_epoch,
            "seconds": round(seconds, 2),
            "world_size": args.world_size,
            "samples_per_second": round(  # a packed row holds several samples
                result.steps
                * args.world_size
                * cfg.train.batch_size
                * cfg.train.gradient_accumulation_steps
                * len(train_records)
                / len(batching.train_dataset)
                / max(seconds, 1e-9),
                2,
            ),
            "trainable_parameters": trainable,
            "privacy": {"dp": dp.report()} if dp else None,
            "distill": None
            if distill is None
            else {
                "teacher": run.provenance().get("teacher"),
                "temperature": distill.temperature,
                "alpha": distill.alpha,
                "labels": collator.labels,
            },
            "labels": labels,  # a classifier's classes in index order (None for chat models)
            "batching": {
                "group_by_length": cfg.train.group_by_length,
                "packing": cfg.train.packing,
                "class_balance": cfg.train.class_balance,
                "padding_fraction_first_epoch": batching.padding_fraction,
                "packed_rows": len(batching.train_dataset) if cfg.train.packing else None,
                "packed_fill_ratio": batching.fill_ratio,
            },
            "image_cache": None
            if image_cache is None
            else {
                "images": len(image_cache.features),
                "hits": image_cache.hits,
                "misses": image_cache.misses,
            },
        }
    )
    log.info("trained %d steps in %.1f s, final loss %.4f", result.steps, seconds, final_loss)
    return result


def distill_collator(cfg: Config, run: RunDir, family, processor, train_records: list, val_records: list):
    """(DistillCollator, train.distill) for train.teacher: the teacher's label scores on the training and
    val records, computed once into data/teacher_probs.npz (training/distill.py)."""
    from tuneline.stages.evaluate import resolve_task
    from tuneline.training.collate import ChatCollator
    from tuneline.training.distill import DistillCollator, teacher_scores

    if family.is_classifier:
        raise ConfigError(
            [
                f"train.teacher: distillation trains a chat model on label answers; {family.name} is a "
                "sequence classifier family"
            ],
            hint="remove train.teacher, or use a generative base (tiny:gemma3, tiny:llama, ...)",
        )
    task, labels, _ = resolve_task(cfg, train_records, val_records or train_records)
    if task != "classification":
        raise ConfigError(
            [
                "train.teacher: distillation is implemented for classification tasks only for now; this data "
                "resolves to a generation task"
            ],
            hint="set eval.task: classification with labelled records (or eval.labels), or no train.teacher",
        )
    scores, identity = teacher_scores(cfg, run, train_records + val_records, labels)
    run.update_provenance(teacher=identity)
    return DistillCollator(
        ChatCollator(processor, cfg.data.max_seq_length), labels, scores
    ), cfg.train.distill


def planted_canaries(cfg: Config, run: RunDir, family) -> list:
    """The memorisation audit's canary records prepare planted (evaluation/audit.py), or []."""
    from tuneline.evaluation.audit import planted_records

    canaries = planted_records(run.data_dir)
    if canaries and family.is_classifier:
        raise DataError(
            f"eval.audit.canaries needs a generative model: a {family.name} classifier has no free-text "
            "answer to memorise a secret in",
            hint="set eval.audit.canaries: 0 for classifier families",
        )
    if canaries and cfg.train.class_balance != "none":
        raise DataError(
            "eval.audit.canaries plants records whose answers are random secrets; train.class_balance "
            f"{cfg.train.class_balance!r} would weight them as classes",
            hint="set train.class_balance: none for the audit, or eval.audit.canaries: 0",
        )
    return canaries


def privacy_session(cfg: Config, model, n_records: int):
    """The DP session of training/privacy.py under train.privacy.dp, else None."""
    if cfg.train.privacy.dp is None:
        return None
    from tuneline.training.privacy import DpSession

    return DpSession(cfg, model, n_records)


@dataclass(frozen=True)
class Batching:
    sampler: object
    loss_weights: dict[str, float] | None
    padding_fraction: float | None  # of the first epoch's micro-batches, when lengths were counted
    train_dataset: Sequence | PackedRows  # the records, or with train.packing their packed rows
    fill_ratio: float | None = None  # with train.packing: share of the rows' positions holding tokens


def plan_batches(cfg: Config, processor, records: list) -> Batching:
    """The training sampler and per-record loss weights for train.group_by_length / class_balance, or with
    train.packing the dataset's rows packed to data.max_seq_length and their sampler."""
    from tuneline.training.packing import PackedRows, PackedRowSampler
    from tuneline.training.sampling import EpochSampler, class_weights, padding_fraction

    weights = None
    if cfg.train.class_balance != "none":
        labels = [r.label if r.label is not None else r.answer for r in records]
        if len(set(labels)) < 2:
            raise DataError(
                f"train.class_balance is {cfg.train.class_balance!r} but the training split has one class",
                hint="set train.class_balance: none, or give the records labels (data source label field)",
            )
        weights = class_weights(labels)
    loss_weights = (
        {r.id: w for r, w in zip(records, weights, strict=True)}
        if cfg.train.class_balance == "loss" and weights is not None
        else None
    )
    if cfg.train.packing:
        if cfg.train.class_balance == "sampler":
            raise ConfigError(
                ["train.packing packs every sample once per epoch; it cannot draw samples by class"],
                hint="set train.class_balance: loss (weights each sample's loss) or train.packing: false",
            )
        count = processor.token_counter()
        rows = PackedRows(records, [count(r) for r in records], cfg.data.max_seq_length, seed=cfg.run.seed)
        fill = round(rows.fill_ratio(), 4)
        log.info("packed %d samples into %d rows, %.1f%% filled", len(records), len(rows), 100 * fill)
        return Batching(PackedRowSampler(rows), loss_weights, None, rows, fill)
    lengths = None
    if cfg.train.group_by_length:
        count = processor.token_counter()
        lengths = [min(count(r), cfg.data.max_seq_length) for r in records]  # classifiers truncate
    sampler = EpochSampler(
        len(records),
        seed=cfg.run.seed,
        batch_size=cfg.train.batch_size,
        lengths=lengths,
        weights=weights if cfg.train.class_balance == "sampler" else None,
    )
    fraction = None
    if lengths is not None:
        fraction = round(padding_fraction(lengths, sampler.indices(0), cfg.train.batch_size), 4)
        log.info("length-grouped batches: %.1f%% padding in the first epoch", 100 * fraction)
    return Batching(sampler, loss_weights, fraction, records)


def classifier_labels(cfg: Config, family, records: list) -> list[str] | None:
    """A classifier family's classes in index order (training/sequence.py), checked; None for chat models."""
    from tuneline.training.sequence import check_classifier_config, class_labels

    if not family.is_classifier:
        return None
    check_classifier_config(cfg, family)
    labels = class_labels(cfg.eval.labels, records)
    if len(labels) < 2:
        raise DataError(
            f"a {family.name} sequence classifier needs at least two classes, "
            f"the training split has {labels}",
            hint="give the records a label field with every class, or set eval.labels",
        )
    return labels


def image_feature_cache(cfg: Config, model, family):
    """An ImageFeatureCache when it cannot change training (frozen vision side, no dropout), else None."""
    from tuneline.training.image_cache import ImageFeatureCache, cache_is_exact

    if not (cfg.train.cache_image_features and family.multimodal and cfg.train.image_cache_gb > 0):
        return None
    vision_config = getattr(model.config, "vision_config", None)
    exact, why = cache_is_exact(model, vision_config)
    if not exact:
        log.info("image feature cache off: %s", why)
        return None
    return ImageFeatureCache(int(cfg.train.image_cache_gb * 1e9))


def live_mlflow(cfg: Config, run: RunDir) -> list:
    """[MlflowMetricsCallback] logging the training curve to this run's MLflow run, or [] when off."""
    if not (cfg.registry.enabled and cfg.registry.live_metrics and is_main_process()):
        return []
    from tuneline.errors import RegistryError
    from tuneline.registry import store
    from tuneline.training.callbacks import MlflowMetricsCallback

    try:
        client = store.client(cfg.registry.tracking_uri)
        run_id = store.open_run(client, cfg.experiment_name, run, cfg.registry.tracking_uri)
    except RegistryError as exc:
        log.warning("%s; training goes on, metrics are sent at register", exc)
        return []
    return [MlflowMetricsCallback(client, run_id, run)]
