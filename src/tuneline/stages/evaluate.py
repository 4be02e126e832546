"""evaluate: the base model and the tuned model side by side on the held-out split.

    tuneline evaluate CONFIG [--run-dir RUN_DIR]

Both are scored on the same records: answer-token loss and exact-match accuracy of the
greedy answer. The tuned model is the base with the run's adapter loaded on top.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from tuneline.config import Config
from tuneline.data.records import read_records
from tuneline.errors import DataError
from tuneline.runs import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger("tuneline.evaluate")


@dataclass(frozen=True)
class EvalResult:
    base: dict[str, float] | None
    tuned: dict[str, float]


def run(cfg: Config, run: RunDir) -> EvalResult:
    import torch
    from peft import PeftModel

    from tuneline.evaluation.scoring import score
    from tuneline.models.load import load_model, load_processor, resolve_base

    run.require("train")
    records = list(read_records(run.split_file(cfg.eval.split)))[: cfg.eval.max_samples]
    if not records:
        raise DataError(f"the {cfg.eval.split} split is empty", hint="change data.split or eval.split")
    options = {
        "batch_size": cfg.eval.batch_size,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "max_seq_length": cfg.data.max_seq_length,
    }

    # 1. The base model, through the same loading path as training.
    base = resolve_base(cfg.model)
    processor = load_processor(base)
    model = load_model(base, cfg.model.dtype)
    if torch.cuda.is_available():
        model = model.to("cuda")
    base_scores = score(model, processor, records, **options) if cfg.eval.compare_base else None
    if base_scores:
        log.info("base: loss %.4f accuracy %.3f", base_scores.loss, base_scores.accuracy)

    # 2. The tuned model as it will be deployed: the base (4-bit for QLoRA) with the run's adapter on
    # top, or, for a full fine-tune, the saved model itself.
    if cfg.train.method == "full":
        tuned_model = load_model(base, cfg.model.dtype, folder=run.adapter_dir)
    else:
        if cfg.train.method == "qlora":
            model = load_model(base, cfg.model.dtype, quantize_4bit=True)
        tuned_model = PeftModel.from_pretrained(model, run.adapter_dir)
    if torch.cuda.is_available():
        tuned_model = tuned_model.to("cuda")
    tuned_scores = score(tuned_model, processor, records, **options)
    log.info("tuned: loss %.4f accuracy %.3f", tuned_scores.loss, tuned_scores.accuracy)

    # 3. Write predictions, then eval.json (the record that evaluation finished).
    rows = []
    for i, rec in enumerate(records):
        row = {"id": rec.id, "reference": rec.answer, "tuned": tuned_scores.predictions[i]}
        if base_scores:
            row["base"] = base_scores.predictions[i]
        rows.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(run.predictions_file, "\n".join(rows) + "\n")
    result = EvalResult(base=base_scores.headline() if base_scores else None, tuned=tuned_scores.headline())
    atomic_write_json(
        run.eval_file,
        {
            "split": cfg.eval.split,
            "n": len(records),
            "metric": "exact_match",
            "base": result.base,
            "tuned": result.tuned,
            "delta": {
                "loss": tuned_scores.loss - base_scores.loss,
                "accuracy": tuned_scores.accuracy - base_scores.accuracy,
            }
            if base_scores
            else None,
        },
    )
    run.update_summary(
        eval={"split": cfg.eval.split, "n": len(records), "base": result.base, "tuned": result.tuned}
    )
    return result
