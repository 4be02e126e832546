"""The metric-name Literal types the config fields use agree with the tuples the code iterates."""

from typing import get_args

from tuneline.config.metric_names import METRICS, MetricName
from tuneline.config.schema.sweep import SWEEP_COSTS, SweepCost


def test_metric_name_literal_matches_metrics_tuple():
    assert get_args(MetricName) == METRICS


def test_sweep_cost_literal_matches_tuple():
    assert get_args(SweepCost) == SWEEP_COSTS
    assert SWEEP_COSTS[0] == "cost_per_1k"
