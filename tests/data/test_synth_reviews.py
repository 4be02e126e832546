"""The synthetic product reviews: deterministic, valid chat JSONL, both classes, not solvable by keywords."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.data.validate import validate
from tuneline_synth import reviews


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return _rows(reviews.generate(tmp_path_factory.mktemp("reviews"), n=1500, seed=0))


def test_deterministic_per_seed(tmp_path):
    a = reviews.generate(tmp_path / "a", n=60, seed=3).read_text()
    b = reviews.generate(tmp_path / "b", n=60, seed=3).read_text()
    c = reviews.generate(tmp_path / "c", n=60, seed=4).read_text()
    assert a == b and a != c


def test_records_are_labelled_grouped_and_distinct(rows):
    assert len(rows) == 1500 and len({r["id"] for r in rows}) == 1500
    texts = [" ".join(r["messages"][1]["content"].lower().split()) for r in rows]
    assert len(set(texts)) == len(texts)  # no identical inputs, so no contradictory duplicates
    labels = Counter(r["label"] for r in rows)
    assert set(labels) == {"negative", "positive"} and 0.4 < labels["positive"] / len(rows) < 0.7
    assert all(r["messages"][-1] == {"role": "assistant", "content": r["label"]} for r in rows)
    assert all(r["messages"][0]["role"] == "system" for r in rows)
    assert set(Counter(r["style"] for r in rows)) == set(reviews.STYLES)
    assert set(Counter(r["category"] for r in rows)) == set(reviews.CATEGORIES)
    by_group = Counter(r["group"] for r in rows)
    assert 50 < len(by_group) and max(by_group.values()) < 60  # many products, several reviews each


def test_the_hard_cases_carry_their_meaning(rows):
    sarcastic = [r["label"] for r in rows if r["style"] == "sarcasm"]
    assert Counter(sarcastic)["negative"] / len(sarcastic) > 0.85  # praise words, negative reviews
    not_bad = [r["label"] for r in rows if "not bad at all" in r["messages"][1]["content"].lower()]
    assert len(not_bad) > 5 and Counter(not_bad)["positive"] / len(not_bad) > 0.8


def test_keywords_do_not_solve_it(rows):
    """A bag-of-words model learns a lot but not everything: contrast, negation, sarcasm and label noise."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [r["messages"][1]["content"] for r in rows]
    y = [r["label"] for r in rows]
    vec = CountVectorizer(lowercase=True)
    x = vec.fit_transform(texts)
    model = LogisticRegression(max_iter=2000).fit(x[:1000], y[:1000])
    accuracy = model.score(x[1000:], y[1000:])
    assert 0.65 < accuracy < 0.97, accuracy


def test_cli_writes_data_that_validates(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "reviews", str(tmp_path / "data"), "--n", "80"])
    assert result.exit_code == 0, result.output
    config = write_config(
        tmp_path,
        "model: {base: 'tiny:bert'}\n"
        "data: {sources: [{type: jsonl, path: data/data.jsonl}], split: {strategy: stratified_group}}\n",
    )
    validation = validate(load_config(config, []))
    assert validation.passed and validation.summary["errors"] == 0
    assert len(_rows(tmp_path / "data" / "data.jsonl")) == 80
