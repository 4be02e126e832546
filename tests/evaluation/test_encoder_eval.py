"""Evaluation of a classifier family (tiny bert): the head's softmax for base and tuned on the same inputs
with the same threshold procedure, the frozen-embedding baseline, and settings an encoder cannot honour."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import write_config
from tests.evaluation.recompute import assert_report_matches
from tuneline.config import load_config
from tuneline.config.schema import ModelConfig
from tuneline.data.records import read_records
from tuneline.errors import ConfigError
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: enc-eval, seed: 0}}
model: {{base: "tiny:bert"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified_group, train: 0.6, val: 0.2, test: 0.2}}
  max_seq_length: 32
  checks: {{actions: {{token_budget_exceeded: warn}}}}
train: {{learning_rate: 2.0e-3, batch_size: 8, max_steps: 4, save_steps: 4}}
eval:
  positive_label: negative
  bootstrap_resamples: 200
  gate: {{primary: roc_auc, against: embedding_logreg, ci_excludes_zero: false, min_improvement: -1.0}}
registry: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    from tuneline_synth.reviews import generate

    return generate(tmp_path_factory.mktemp("reviews"), n=120, seed=2)


def test_base_and_tuned_read_the_same_inputs_and_share_the_threshold_procedure(
    tmp_path, reviews, monkeypatch
):
    import tuneline.evaluation.baselines as bl
    import tuneline.evaluation.classify as classify
    import tuneline.evaluation.metrics as metrics

    monkeypatch.chdir(tmp_path)
    cfg = load_config(write_config(tmp_path, CONFIG.format(data=reviews)))
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    run_stage("train", cfg, run)

    seen: dict[str, list] = {}
    real_classify, real_embed, real_choose = classify.classify_sequences, bl.embed, metrics.choose_threshold

    def classify_spy(model, collator, records, **kw):
        batch = collator(records)
        who = "tuned" if hasattr(model, "peft_config") else "base"
        seen.setdefault(who, []).append(([r.id for r in records], batch["input_ids"].tolist()))
        scores = real_classify(model, collator, records, **kw)
        # The probabilities are the softmax of the head's logits on exactly these inputs.
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        assert np.allclose(scores.probabilities, torch.softmax(logits.double(), -1).numpy(), atol=1e-6)
        return scores

    embedded: list[int] = []

    def embed_spy(model, processor, records, batch_size, **kw):
        embedded.append(len(records))
        assert kw["max_length"] == cfg.data.max_seq_length
        return real_embed(model, processor, records, batch_size, **kw)

    thresholds = []

    def choose_spy(y, p, method="youden", target=0.9):
        thresholds.append((method, target, len(y)))
        return real_choose(y, p, method=method, target=target)

    monkeypatch.setattr(classify, "classify_sequences", classify_spy)
    monkeypatch.setattr(bl, "embed", embed_spy)
    monkeypatch.setattr(metrics, "choose_threshold", choose_spy)
    run_stage("evaluate", cfg, run)

    assert set(seen) == {"base", "tuned"} and seen["base"] == seen["tuned"]  # same records, same tokens
    assert len(seen["base"]) == 2  # test and val (the threshold is chosen on val)
    assert (
        len(thresholds) == 4 and len(set(thresholds)) == 1
    )  # base, prior, tuned, embedding_logreg: one procedure
    n_train = len(list(read_records(run.split_file("train"))))
    assert embedded[0] == n_train  # the probe is fitted on the training split's embeddings

    report = json.loads((run.eval_dir / "report.json").read_text())
    assert set(report["models"]) == {"base", "prior", "tuned", "embedding_logreg"}
    assert report["gate"]["against"] == "embedding_logreg" and report["threshold"]["split"] == "val"
    assert report["models"]["tuned"]["invalid_label_rate"] is None  # nothing generated
    assert report["models"]["tuned"]["latency"]["n"] == report["n"]
    assert_report_matches(report, run.eval_dir / "predictions.parquet")
    # The reported loss is the cross-entropy of the true class.
    import pyarrow.parquet as pq

    table = pq.read_table(run.eval_dir / "predictions.parquet").to_pylist()
    rows = [r for r in table if r["model"] == "tuned"]
    assert rows[0]["generated"] is None
    ce = -np.mean([np.log(r[f"p_{r['label']}"]) for r in rows])
    assert abs(ce - report["models"]["tuned"]["loss"]) < 1e-9

    # "base" is the pretrained encoder with the head drawn from run.seed: redrawing it gives the same numbers.
    from transformers import set_seed

    from tuneline.evaluation.classify import classify_sequences
    from tuneline.training.sequence import SequenceCollator

    base = resolve_base(cfg.model)
    set_seed(cfg.run.seed)
    fresh = load_model(base, labels=report["labels"])
    test = list(read_records(run.split_file("test")))
    again = classify_sequences(
        fresh, SequenceCollator(load_processor(base), 32, report["labels"]), test, batch_size=16
    )
    base_rows = {r["record_id"]: r for r in table if r["model"] == "base"}
    stored = np.array([[base_rows[r.id][f"p_{label}"] for label in report["labels"]] for r in test])
    assert np.allclose(again.probabilities, stored, atol=1e-6)


def test_encoder_embeddings_are_the_mean_of_the_last_layer():
    from tuneline.data.records import Record
    from tuneline.evaluation.baselines import embed

    resolved = resolve_base(ModelConfig(base="tiny:bert"))
    processor = load_processor(resolved)
    model = load_model(resolved, labels=["a", "b"]).eval()
    texts = ["short", "a much longer review that goes on and on about the battery"]
    records = [
        Record(
            id=str(i),
            source="t",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": t}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            ],
        )
        for i, t in enumerate(texts)
    ]
    got = embed(model, processor, records, batch_size=2, max_length=12)
    for i, text in enumerate(texts):  # one at a time: no padding at all
        enc = processor.tokenizer([text], truncation=True, max_length=12, return_tensors="pt")
        with torch.no_grad():
            hidden = model.bert(**enc).last_hidden_state[0]
        assert np.allclose(got[i], hidden.mean(0).double().numpy(), atol=1e-5)


def test_settings_an_encoder_cannot_honour_are_refused_before_training(tmp_path, reviews, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = CONFIG.format(data=reviews).replace(
        "  positive_label: negative\n", "  positive_label: negative\n  baselines: {few_shot: 2}\n"
    )
    cfg = load_config(
        write_config(tmp_path, text), ["train.packing=true", "eval.task=generation", "eval.gate.against=base"]
    )
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    with pytest.raises(ConfigError) as refused:
        run_stage("train", cfg, run)
    problems = refused.value.problems
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {"train.packing", "eval.task", "eval.baselines.few_shot"}
    assert not run.adapter_dir.exists()
