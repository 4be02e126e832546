"""serve.cascade / serve.costs / serve.budget: strict, with errors that name the key (issue 19)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneline.config.schema import ServeConfig


def _cascade(**kw):
    return ServeConfig(cascade={"small": "m@small", "fallback": "m@large", **kw})


def test_defaults_and_both_fallback_shapes():
    c = _cascade().cascade
    assert (c.threshold, c.calibration, c.target.metric, c.target.min) == ("auto", "none", "accuracy", 0.9)
    remote = ServeConfig(
        cascade={"small": "m@s", "fallback": {"url": "http://h:1/v1", "model": "big", "api_key": "k"}}
    ).cascade.fallback
    assert (remote.url, remote.model, remote.api_key) == ("http://h:1/v1", "big", "k")
    assert _cascade(threshold=0.4, target={"max_cost_per_1k": 2}).cascade.target.max_cost_per_1k == 2
    cfg = ServeConfig(costs={"price_per_hour": 2}, budget={"per_day": 5, "action": "small_only"})
    assert (cfg.costs.price_per_hour, cfg.budget.per_day, cfg.budget.action) == (2, 5, "small_only")
    assert ServeConfig().cascade is None and ServeConfig().budget.per_day is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"small": "m"}, "NAME@alias"),
        ({"fallback": "m@small"}, "must differ"),
        ({"threshold": 1.5}, "[0, 1]"),
        ({"threshold": "sometimes"}, "threshold"),
        ({"target": {"min": 0.9, "max_cost_per_1k": 1}}, "either"),
        ({"target": {}}, "either"),
        ({"calibration": "platt"}, "calibration"),
        ({"fallback": {"url": "ftp://x", "model": "b"}}, "http://"),
        ({"fallback": {"url": "http://x/v1"}}, "model"),
        ({"treshold": 0.5}, "treshold"),
        ({"breaker": {"failures": 0}}, "failures"),
    ],
)
def test_bad_cascade_settings_name_the_key(kw, message):
    with pytest.raises(ValidationError) as exc:
        _cascade(**kw)
    assert message in str(exc.value)


def test_costs_and_budget_are_strict():
    with pytest.raises(ValidationError, match="price_per_hr"):
        ServeConfig(costs={"price_per_hr": 1})
    with pytest.raises(ValidationError, match="per_day"):
        ServeConfig(budget={"per_day": -1})
    with pytest.raises(ValidationError, match="action"):
        ServeConfig(budget={"action": "panic"})
