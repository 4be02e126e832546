"""Class probabilities from label log-probabilities: the same numbers as a direct full-logit computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tuneline.config.schema import ModelConfig
from tuneline.data.records import Record
from tuneline.evaluation.classify import score_labels, with_answer
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.collate import IGNORE, ChatCollator


def _record(i: int, image: str | None) -> Record:
    content = ([{"type": "image", "path": image}] if image else []) + [
        {"type": "text", "text": f"Lesion {i}?"}
    ]
    return Record(
        id=f"r{i}",
        source="t",
        messages=[
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": "benign"}]},
        ],
        label="benign",
    )


@pytest.mark.parametrize("name", ["gemma3", "llama", "qwen2_vl"])
def test_label_log_probs_equal_a_direct_computation(name, tmp_path):
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    torch.manual_seed(0)
    model = load_model(resolved).eval()
    image = tmp_path / "x.png"
    Image.new("RGB", (48, 40), (180, 60, 60)).save(image)
    records = [_record(i, str(image) if resolved.family.multimodal else None) for i in range(3)]
    labels = ["benign", "malignant", "mal"]
    collator = ChatCollator(processor, 256)
    scores = score_labels(model, collator, records, labels, batch_size=4)  # batches split across records
    assert scores.log_probs.shape == (3, 3) and np.allclose(scores.probabilities.sum(axis=1), 1.0)
    for i, r in enumerate(records):
        for j, label in enumerate(labels):
            batch = collator([with_answer(r, label)])
            targets = batch.pop("labels")[0, 1:]
            with torch.no_grad():
                logp = torch.log_softmax(model(**batch).logits[0, :-1].double(), -1)
            mask = targets != IGNORE
            direct = logp[mask].gather(-1, targets[mask][:, None]).sum().item()
            assert scores.log_probs[i, j] == pytest.approx(direct, abs=1e-4)
    assert (scores.latency > 0).all()


def test_few_shot_prefix_shows_every_class_and_is_deterministic():
    from tuneline.evaluation.baselines import few_shot_prefix

    train = [_record(i, None) for i in range(10)]
    for i, r in enumerate(train):
        r.messages[-1]["content"][0]["text"] = "malignant" if i < 2 else "benign"
    train = [
        Record(id=r.id, source=r.source, messages=r.messages, label=r.messages[-1]["content"][0]["text"])
        for r in train
    ]
    prefix = few_shot_prefix(train, ["benign", "malignant"], k=4, seed=0)
    answers = [m["content"][0]["text"] for m in prefix if m["role"] == "assistant"]
    assert len(answers) == 4 and answers.count("malignant") == 2  # the rare class is shown too
    assert prefix == few_shot_prefix(train, ["benign", "malignant"], k=4, seed=0)


def test_logistic_probe_returns_probabilities_in_label_order():
    from tuneline.evaluation.baselines import logistic_probe

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(3, 1, (40, 3))])
    y = ["b"] * 40 + ["a"] * 40
    probs = logistic_probe(x, y, np.array([[0.0, 0, 0], [3.0, 3, 3]]), ["b", "a", "c"], seed=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1)
    assert probs[0, 0] > 0.9 and probs[1, 1] > 0.9 and (probs[:, 2] == 0).all()  # c never seen: no mass
