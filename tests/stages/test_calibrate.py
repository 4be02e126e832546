"""tuneline serve calibrate on planted scores: the threshold the target implies, the curve JSON and plot,
temperature scaling's ECE, and ``threshold: auto`` reading the curve (issue 19, acceptance 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneline.config import load_config
from tuneline.stages import calibrate

CONFIG = """
run: {{name: cascade}}
model: {{base: "tiny:gemma3"}}
data: {{sources: [{{type: jsonl, path: data.jsonl}}]}}
serve:
  state_dir: state
  cascade:
    small: m@small
    fallback: {{url: "http://127.0.0.1:9/v1", model: big}}
    threshold: auto
    calibration: {calibration}
    target: {target}
  costs: {{price_per_hour: 3.6}}
"""

LABELS = ["cat", "dog"]
# planted: the small model's log-probabilities over two labels; record i's true class y[i]
Y = np.array([0, 0, 1, 1, 0])
CONF = np.array([0.95, 0.9, 0.8, 0.7, 0.6])  # the small model's top-class probability
PRED = np.array([0, 0, 0, 0, 0])  # its answer: right on 0, 1, 4; wrong on 2, 3


def _planted():
    p_pred = CONF
    probs = np.stack([np.where(PRED == 0, p_pred, 1 - p_pred), np.where(PRED == 1, p_pred, 1 - p_pred)], 1)
    small = calibrate.Scored(
        correct=(PRED == Y).astype(float), cost=np.full(5, 0.001), log_probs=np.log(probs)
    )
    fallback = calibrate.Scored(correct=np.ones(5), cost=np.full(5, 0.01))
    return small, fallback


def _cfg(tmp_path, target: str, calibration: str = "none"):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(target=target, calibration=calibration))
    (tmp_path / "data.jsonl").write_text("")
    return load_config(path, [])


@pytest.mark.parametrize(
    ("target", "threshold", "accuracy", "share"),
    [
        ("{min: 1.0}", 0.85, 1.0, 0.6),  # both small errors (0.8, 0.7) must go: fall back below 0.85
        ("{min: 0.8}", 0.75, 0.8, 0.4),  # one of them is enough, and cheaper
        ("{max_cost_per_1k: 5.0}", 0.75, 0.8, 0.4),  # 1 + 0.4 x 10 = 5 per 1,000: the best within the cap
        ("{max_cost_per_1k: 1.0}", 0.0, 0.6, 0.0),  # only the small model fits
    ],
)
def test_calibrate_picks_the_threshold_the_target_implies(tmp_path, target, threshold, accuracy, share):
    cfg = _cfg(tmp_path, target)
    small, fallback = _planted()
    result = calibrate.run(cfg, small=small, fallback=fallback, labels=LABELS, y=Y)
    assert result["threshold"] == pytest.approx(threshold)
    assert result["met"] is True
    assert result["chosen"]["accuracy"] == pytest.approx(accuracy)
    assert result["chosen"]["share_routed"] == pytest.approx(share)
    curve = json.loads((tmp_path / "state" / "cascade" / "curve.json").read_text())
    assert curve["threshold"] == pytest.approx(threshold)
    assert [p["share_routed"] for p in curve["points"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["small"]["cost_per_1k"] == pytest.approx(1.0)
    assert curve["fallback"]["cost_per_1k"] == pytest.approx(10.0)
    svg = (tmp_path / "state" / "cascade" / "curve.svg").read_text()
    assert svg.startswith("<svg") and "cascade-curve" in svg


def test_threshold_auto_reads_the_curve_and_temperature_is_reported(tmp_path):
    from tuneline.serving.cascade import Cascade
    from tuneline.serving.costs import CostTracker
    from tuneline.serving.metrics import Metrics

    cfg = _cfg(tmp_path, "{min: 0.8}", calibration="temperature")
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    margin = rng.normal(1.0, 1.0, n) * np.where(y == 0, 1, -1)  # > 0 favours class 0
    log_probs = np.stack([4 * margin / 2, -4 * margin / 2], 1)  # overconfident by about 4x
    pred = log_probs.argmax(1)
    small = calibrate.Scored((pred == y).astype(float), np.full(n, 0.001), log_probs)
    fallback = calibrate.Scored(np.ones(n), np.full(n, 0.01))
    result = calibrate.run(cfg, small=small, fallback=fallback, labels=LABELS, y=y)
    assert result["temperature"] > 1.5  # cooled down
    assert result["ece_after"] < result["ece_before"]
    metrics = Metrics()
    cascade = Cascade(cfg, "m", metrics, CostTracker(cfg.serve, metrics, None))
    assert cascade.threshold == pytest.approx(result["threshold"])
    assert cascade.temperature == pytest.approx(result["temperature"])


def test_threshold_auto_without_a_curve_says_to_calibrate(tmp_path):
    from tuneline.errors import ConfigError
    from tuneline.serving.cascade import Cascade
    from tuneline.serving.costs import CostTracker
    from tuneline.serving.metrics import Metrics

    cfg = _cfg(tmp_path, "{min: 0.8}")
    metrics = Metrics()
    with pytest.raises(ConfigError, match="serve calibrate"):
        Cascade(cfg, "m", metrics, CostTracker(cfg.serve, metrics, None))
