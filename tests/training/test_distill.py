"""Issue 16, distillation: train.teacher / train.distill config, the KL + hard-label loss, and (slow) a
distilled tiny:gemma3@s student on digits against the same student on hard labels alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.errors import ConfigError

BASE = "model: {base: 'tiny:gemma3'}\ndata: {sources: [{type: jsonl, path: d.jsonl}]}\n"


def _problems(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, BASE + text), env={})
    return " | ".join(info.value.problems)


def test_teacher_and_distill_settings_are_validated(tmp_path):
    cfg = load_config(write_config(tmp_path, BASE + "train: {teacher: 'digits@champion'}\n"), env={})
    assert (cfg.train.teacher, cfg.train.distill.temperature, cfg.train.distill.alpha) == (
        "digits@champion",
        2.0,
        0.5,
    )
    assert load_config(write_config(tmp_path, BASE), env={}).train.teacher is None
    # A resolved config writes the defaults out: train.distill at its defaults without a teacher is fine.
    defaults = "train: {distill: {temperature: 2.0, alpha: 0.5}}\n"
    assert load_config(write_config(tmp_path, BASE + defaults), env={}).train.teacher is None
    assert "train.teacher" in _problems(tmp_path, "train: {distill: {alpha: 0.3}}\n")
    assert "alpha" in _problems(tmp_path, "train: {teacher: t@a, distill: {alpha: 1.5}}\n")
    assert "temperature" in _problems(tmp_path, "train: {teacher: t@a, distill: {temperature: 0}}\n")
    assert "tempreature" in _problems(tmp_path, "train: {teacher: t@a, distill: {tempreature: 2}}\n")
    assert "train.packing" in _problems(tmp_path, "train: {teacher: t@a, packing: true}\n")
    assert "class_balance" in _problems(tmp_path, "train: {teacher: t@a, class_balance: loss}\n")
    gen = _problems(tmp_path, "train: {teacher: t@a}\neval: {task: generation}\n")
    assert "classification tasks only" in gen and "train.teacher" in gen


class _Toy(torch.nn.Module):
    """A stand-in causal LM: logits from an embedding, answering logits_to_keep as a (B, T) mask."""

    def __init__(self, vocab=7):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.config = None

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None):
        logits = self.emb(input_ids)
        return type("Out", (), {"logits": logits[logits_to_keep]})()


def _inputs(teacher):
    # 2 records x 2 labels; label k's answer is token 3 + k at position 2 (labels shifted: target at 2)
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 4, 0], [1, 5, 3, 0], [1, 5, 4, 0]])
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    return {
        "input_ids": ids,
        "distill_labels": labels,
        "distill_target": torch.tensor([0, 1]),
        "teacher_scores": torch.tensor(teacher, dtype=torch.float32),
    }


def test_distill_loss_mixes_hard_cross_entropy_and_tempered_kl():
    from tuneline.training.distill import distill_loss

    torch.manual_seed(0)
    model = _Toy()
    teacher = [[-0.2, -1.8], [-2.5, -0.1]]
    inputs = _inputs(teacher)
    hard, _ = distill_loss(model, inputs, temperature=2.0, alpha=1.0)
    soft, _ = distill_loss(model, inputs, temperature=2.0, alpha=0.0)
    mixed, _ = distill_loss(model, inputs, temperature=2.0, alpha=0.3)
    assert mixed.item() == pytest.approx(0.3 * hard.item() + 0.7 * soft.item(), rel=1e-5)
    # By hand: student label scores are log-softmax at the answer token given the previous token.
    lp = torch.log_softmax(model.emb.weight, dim=-1)
    s = torch.stack([lp[2, [3, 4]], lp[5, [3, 4]]])
    assert hard.item() == pytest.approx(-(s[0, 0] + s[1, 1]).item() / 2, rel=1e-5)
    q = torch.log_softmax(s / 2, -1)
    p = torch.log_softmax(torch.tensor(teacher) / 2, -1)
    assert soft.item() == pytest.approx((4 * (p.exp() * (p - q)).sum(-1).mean()).item(), rel=1e-5)
    # A student that already matches the teacher has no soft loss.
    same, _ = distill_loss(model, _inputs(s.detach().tolist()), temperature=2.0, alpha=0.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    soft.backward()
    assert model.emb.weight.grad.abs().sum() > 0


DIGITS = """
run: {{name: {name}, seed: 0}}
model: {{base: "{base}"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified, train: 0.6, val: 0.1, test: 0.3}}
  max_seq_length: 64
train:
  lora: {{r: 16, alpha: 32}}
  train_projector: true
  learning_rate: 2.0e-3
  batch_size: 16
  max_steps: {steps}
  logging_steps: 10
  save_steps: 1000
{teacher}
eval:
  task: classification
  max_new_tokens: 3
  batch_size: 64
  gate: {{enabled: false}}
"""


def _run(workdir, data, name, base, steps, teacher=""):
    from tuneline.cli import app

    text = DIGITS.format(name=name, base=base, data=data, steps=steps, teacher=teacher)
    result = CliRunner().invoke(app, ["run", str(write_config(workdir, text, f"{name}.yaml"))])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / name).iterdir()
    return run_dir


def _log_loss(run_dir, model="tuned"):
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    return report["models"][model]["metrics"]["log_loss"], report


@pytest.mark.slow
def test_distilled_student_beats_hard_label_student_on_digits(workdir):
    from tuneline.cli import app

    result = CliRunner().invoke(app, ["data", "synth", "digits", str(workdir / "digits"), "--n", "400"])
    assert result.exit_code == 0, result.output
    data = workdir / "digits" / "data.jsonl"
    # The same step budget for all three (at 30 steps both @s students stayed at the prior's log loss).
    teacher_dir = _run(workdir, data, "teacher", "tiny:gemma3@m", 150)
    hard_dir = _run(workdir, data, "hard", "tiny:gemma3@s", 150)
    distill = f"  teacher: '{teacher_dir}'\n  distill: {{temperature: 2.0, alpha: 0.5}}"
    student_dir = _run(workdir, data, "student", "tiny:gemma3@s", 150, distill)

    cache = student_dir / "data" / "teacher_probs.npz"
    with np.load(cache) as z:
        meta = json.loads(str(z["meta"]))
        n_train = len((student_dir / "data" / "train.jsonl").read_text().splitlines())
        # the training records (val too only with train.eval_steps, which this run does not set)
        assert len(z["ids"]) == n_train and z["probabilities"].shape == (n_train, 10)
        assert np.allclose(z["probabilities"].sum(1), 1.0)
    assert meta["teacher"]["run_id"] == teacher_dir.name
    prov = json.loads((student_dir / "provenance.json").read_text())
    assert prov["teacher"]["kind"] == "run" and prov["teacher"]["run_id"] == teacher_dir.name
    summary = json.loads((student_dir / "summary.json").read_text())
    assert summary["train"]["distill"]["alpha"] == 0.5

    student_ll, report = _log_loss(student_dir)
    hard_ll, _ = _log_loss(hard_dir)
    teacher_ll = report["models"]["teacher"]["metrics"]["log_loss"]
    (vs_teacher,) = [c for c in report["comparisons"] if c["a"] == "teacher" and c["metric"] == "log_loss"]
    print(
        f"\nlog loss: distilled student {student_ll:.4f}, hard-label student {hard_ll:.4f}, "
        f"teacher {teacher_ll:.4f}; student - teacher {vs_teacher}"
    )
    assert len(vs_teacher["ci"]) == 2 and all(np.isfinite(vs_teacher["ci"]))

    # The same teacher named by its registry version gives the label scores the run directory gave.
    from tuneline.data.records import read_records
    from tuneline.evaluation.classify import score_labels
    from tuneline.training.collate import ChatCollator
    from tuneline.training.distill import load_teacher

    cfg = load_config(student_dir / "config.resolved.yaml", env={})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"teacher": "teacher/1"})})
    registered = load_teacher(cfg)
    assert (registered.identity["kind"], registered.identity["name"]) == ("registry", "teacher")
    records = list(read_records(student_dir / "data" / "train.jsonl"))[:8]
    collator = ChatCollator(registered.processor, cfg.data.max_seq_length)
    again = score_labels(registered.model, collator, records, meta["labels"], batch_size=40).log_probs
    with np.load(cache) as z:
        cached = dict(zip([str(i) for i in z["ids"]], z["log_scores"], strict=True))
    assert np.allclose(again, np.stack([cached[r.id] for r in records]), atol=1e-4)

    assert student_ll < hard_ll


def test_teacher_scores_are_computed_once_and_reused(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tuneline.evaluation import classify
    from tuneline.training import distill

    calls = []

    def fake_score(model, collator, records, labels, *, batch_size):
        calls.append(len(records))
        log_scores = np.log(np.tile([[0.7, 0.3]], (len(records), 1)))
        return classify._label_scores(labels, log_scores, np.zeros(len(records)))

    processor = SimpleNamespace(image_token_ids=[])
    identity = {"kind": "run", "reference": "teacher-run", "run_id": "t1"}
    monkeypatch.setattr(distill, "load_teacher", lambda cfg: distill.Teacher(None, processor, identity))
    monkeypatch.setattr(classify, "score_labels", fake_score)
    run = SimpleNamespace(data_dir=tmp_path)
    records = [SimpleNamespace(id=f"r{i}", target="yes" if i % 2 else "no") for i in range(3)]

    def cfg(teacher="teacher-run"):
        return SimpleNamespace(
            train=SimpleNamespace(teacher=teacher),
            data=SimpleNamespace(max_seq_length=32),
            eval=SimpleNamespace(batch_size=4),
        )

    scores, who = distill.teacher_scores(cfg(), run, records, ["no", "yes"])
    assert calls == [3] and who == identity and set(scores) == {"r0", "r1", "r2"}
    assert np.allclose(np.exp(scores["r1"]), [0.7, 0.3])
    again, who_again = distill.teacher_scores(cfg(), run, records, ["no", "yes"])  # a resumed run
    assert calls == [3] and who_again == identity and np.allclose(again["r2"], scores["r2"])
    distill.teacher_scores(cfg("other@champion"), run, records, ["no", "yes"])  # another teacher
    assert calls == [3, 3]
