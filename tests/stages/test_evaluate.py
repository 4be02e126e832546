"""The evaluation stage: the gate refuses a broken fine-tune and passes a good one; base and tuned are
scored on the same records with the same prompts and the same threshold procedure."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.data.records import read_records
from tuneline.runs import RunDir
from tuneline.stages.pipeline import run_stage

CONFIG = """
run: {{name: gate, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified, train: 0.7, val: 0.15, test: 0.15}}
  max_seq_length: 64
train: {{train_projector: true, learning_rate: 2.0e-3, batch_size: 8, max_steps: {steps}, logging_steps: 10,
        save_steps: 100}}
eval:
  task: classification
  batch_size: 32
  max_new_tokens: 2
  bootstrap_resamples: 200
  baselines: {{embedding_logreg: false, few_shot: 2}}
  gate:
    primary: balanced_accuracy
    min_improvement: 0.1
    ci_excludes_zero: true
    guards: [{{metric: roc_auc, min: 0.6}}]
registry: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from tuneline_synth.shapes import generate

    out = tmp_path_factory.mktemp("gate_shapes")
    generate(out, n=240, seed=11)
    return out / "data.jsonl"


def _prepared(tmp_path, data, steps: int):
    cfg = load_config(write_config(tmp_path, CONFIG.format(data=data, steps=steps)))
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    return cfg, run


def test_gate_refuses_a_fine_tune_on_mislabelled_data_and_passes_a_good_one(tmp_path, shapes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, good = _prepared(tmp_path, shapes, steps=90)
    run_stage("train", cfg, good)
    run_stage("evaluate", cfg, good)
    gate = good.summary()["eval"]["gate"]
    assert gate["passed"], gate
    report = json.loads((good.eval_dir / "report.json").read_text())
    assert set(report["models"]) == {"base", "prior", "few_shot", "tuned"}
    assert {(c["a"], c["metric"]) for c in report["comparisons"]} >= {
        ("base", "roc_auc"),
        ("few_shot", "roc_auc"),
    }

    # The same data with the training answers mapped wrongly (every colour named as the next one: the
    # label-mapping bug of a botched export). The model learns it well, and is wrong on every test image.
    # (Shuffled labels are the slow test_null_models.py: on this task a shuffled-label model learns a
    # random colour -> answer map, and about 1 in 4 such maps gets 2 of the 4 colours right by chance, a
    # model that is then better than chance on the test split and passes any gate with no stronger
    # reference model; the default gate's embedding_logreg is that reference.)
    cfg, broken = _prepared(tmp_path, shapes, steps=90)
    train_file = broken.split_file("train")
    records = list(read_records(train_file))
    colours = sorted({r.answer for r in records})
    wrong = {c: colours[(i + 1) % len(colours)] for i, c in enumerate(colours)}
    lines = []
    for r in records:
        answer = {"role": "assistant", "content": [{"type": "text", "text": wrong[r.answer]}]}
        lines.append(json.dumps({**json.loads(r.to_json()), "messages": [*r.messages[:-1], answer]}))
    tmp = train_file.with_suffix(".tmp")  # a new file: never write through a link into the snapshot
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(train_file)
    run_stage("train", cfg, broken)
    run_stage("evaluate", cfg, broken)
    refused = broken.summary()["eval"]["gate"]
    assert not refused["passed"], refused
    assert not refused["rules"][0]["passed"]  # not better than the strongest model by 0.1
    failed = {r["rule"] for r in refused["rules"] if not r["passed"]}
    assert "sanity: beats the prior baseline on balanced_accuracy" in failed

    # The CLI turns a failed gate into exit code 7, after writing the whole evaluation.
    from typer.testing import CliRunner

    from tuneline.cli import app

    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "config.yaml"), "--run-dir", str(broken.path)]
    )
    assert result.exit_code == 7 and "gate" in result.output
    assert (broken.eval_dir / "report.json").is_file() and (broken.eval_dir / "predictions.parquet").is_file()


def test_base_and_tuned_share_records_prompts_and_threshold_procedure(tmp_path, shapes, monkeypatch):
    import tuneline.evaluation.classify as classify
    import tuneline.evaluation.metrics as metrics

    monkeypatch.chdir(tmp_path)
    text = (
        CONFIG.format(data=shapes, steps=4)
        .replace("few_shot: 2", "few_shot: 0")
        .replace("task: classification", "task: classification\n  labels: [red, other]")
    )
    # Make it binary: every non-red answer becomes "other".
    rows = [json.loads(line) for line in shapes.read_text().splitlines()]
    for row in rows:
        if row["messages"][-1]["content"] != "red":
            row["messages"][-1]["content"] = "other"
    data = tmp_path / "binary.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import shutil

    shutil.copytree(shapes.parent / "images", tmp_path / "images")
    cfg = load_config(write_config(tmp_path, text.replace(str(shapes), str(data))))
    run = RunDir.create(cfg, None)
    run_stage("prepare", cfg, run)
    run_stage("train", cfg, run)

    seen: list[tuple[str, list[str], list[str]]] = []
    real_score = classify.score_labels

    def spy(model, collator, records, labels, **kw):
        from tuneline.evaluation.classify import with_answer

        prompts = [
            collator.processor.render(with_answer(r, labels[0], kw.get("prefix")).messages) for r in records
        ]
        seen.append(("tuned" if hasattr(model, "peft_config") else "base", [r.id for r in records], prompts))
        return real_score(model, collator, records, labels, **kw)

    thresholds = []
    real_choose = metrics.choose_threshold

    def choose_spy(y, p, method="youden", target=0.9):
        thresholds.append((method, target, len(y)))
        return real_choose(y, p, method=method, target=target)

    monkeypatch.setattr(classify, "score_labels", spy)
    monkeypatch.setattr(metrics, "choose_threshold", choose_spy)
    run_stage("evaluate", cfg, run)

    by_model = {}
    for who, ids, prompts in seen:
        by_model.setdefault(who, []).append((ids, prompts))
    assert set(by_model) == {"base", "tuned"}
    assert by_model["base"] == by_model["tuned"]  # same records and prompts, for val and test alike
    assert len(by_model["base"]) == 2  # test split and val split (the threshold is chosen on val)
    # one procedure, same val records, for base, the prior baseline and tuned
    assert len(thresholds) == 3 and thresholds[0] == thresholds[1] == thresholds[2]
    report = json.loads((run.eval_dir / "report.json").read_text())
    assert report["threshold"]["split"] == "val" and set(report["threshold"]["per_model"]) == {
        "base",
        "prior",
        "tuned",
    }
