"""Operational figures and serialisation: latency percentiles, cost per 1k predictions, JSON-safe values."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneline.evaluation.metrics.classification import _py

# ---------------------------------------------------------------------------------------------
# Latency and cost
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    n: int
    p50_s: float
    p95_s: float
    mean_s: float
    predictions_per_s: float


def latency_summary(latencies_s: Any, *, wall_seconds: float | None = None) -> LatencySummary:
    """p50/p95 (numpy's linear-interpolation percentiles) and throughput of per-prediction latencies.

    Throughput is ``n / wall_seconds`` when the wall time is given (batched or concurrent serving),
    else ``n / sum(latencies)`` (one prediction at a time).
    """
    lat = np.asarray(latencies_s, dtype=np.float64)
    n = len(lat)
    if n == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    if (lat < 0).any() or not np.isfinite(lat).all():
        raise ValueError("latencies must be finite and non-negative")
    elapsed = float(lat.sum()) if wall_seconds is None else float(wall_seconds)
    p50, p95 = np.percentile(lat, [50, 95])
    return LatencySummary(
        n=n,
        p50_s=float(p50),
        p95_s=float(p95),
        mean_s=float(lat.mean()),
        predictions_per_s=n / elapsed if elapsed > 0 else math.nan,
    )


def cost_per_1k(price_per_hour: float, predictions_per_s: float) -> float:
    """Cost of 1,000 predictions at ``price_per_hour`` and a sustained throughput."""
    if not predictions_per_s or predictions_per_s <= 0 or not math.isfinite(predictions_per_s):
        return math.nan
    return float(price_per_hour) / 3600.0 / predictions_per_s * 1000.0


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def nan_to_none(value: Any) -> Any:
    """NaN and ±inf floats become ``None``, recursively through dicts, lists and tuples."""
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return value


def to_json_dict(obj: Any) -> Any:
    """Dataclasses, numpy scalars/arrays, dicts and sequences to plain JSON values (NaN -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(_py(k)): to_json_dict(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_json_dict(v) for v in obj.tolist()]
    if isinstance(obj, list | tuple):
        return [to_json_dict(v) for v in obj]
    return nan_to_none(_py(obj))
