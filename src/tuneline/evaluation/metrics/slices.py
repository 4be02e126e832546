"""Metrics per slice of the evaluated records (a column's values, age bands, quantile bands)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneline.evaluation.metrics.classification import (
    ClassificationInput,
    _num,
    _py,
    metrics_from_input,
    prepare,
)

# ---------------------------------------------------------------------------------------------
# Slices
# ---------------------------------------------------------------------------------------------

MISSING = "missing"


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics per slice value; slices with fewer than ``min_size`` rows are only counted."""

    name: str
    min_size: int
    slices: dict  # str(value) -> ClassificationMetrics
    too_small: dict  # str(value) -> n


def slice_labels(values: Any) -> np.ndarray:
    """Slice values as strings; None and NaN become ``"missing"``."""
    out = []
    for v in np.asarray(values, dtype=object).tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(MISSING)
        else:
            out.append(str(_py(v)))
    return np.asarray(out, dtype=object)


def metrics_by_slice(
    y: Any,
    P: Any,
    slice_values: Any,
    classes: Sequence,
    *,
    positive: Any = None,
    threshold: float = 0.5,
    min_size: int = 30,
    name: str = "slice",
    n_bins: int = 10,
) -> SliceMetrics:
    """Per slice value (e.g. sex, site, age band): its metrics, skipping slices below ``min_size``."""
    inp = prepare(y, P, classes, positive=positive, threshold=threshold)
    labels = slice_labels(slice_values)
    if len(labels) != inp.n:
        raise ValueError(f"slice_values has {len(labels)} rows, y {inp.n}")
    slices, too_small = {}, {}
    for value in sorted(set(labels.tolist())):
        mask = labels == value
        n = int(mask.sum())
        if n < min_size:
            too_small[value] = n
            continue
        slices[value] = metrics_from_input(subset(inp, mask), n_bins=n_bins)
    return SliceMetrics(name=name, min_size=min_size, slices=slices, too_small=too_small)


def subset(inp: ClassificationInput, rows: Any) -> ClassificationInput:
    """The same task on a subset of rows (boolean mask or indices)."""
    return dataclasses.replace(inp, y=inp.y[rows], y_idx=inp.y_idx[rows], P=inp.P[rows])


def age_bands(ages: Any, edges: Sequence[float] = (30, 50, 70)) -> np.ndarray:
    """Numeric ages to bands: edges (30, 50, 70) give "<30", "30-49", "50-69", "70+" (missing: "missing").

    Band "30-49" holds 30 <= age < 50. Non-integer edges are written as "[a, b)".
    """
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must be strictly increasing, got {edges}")
    integral = all(e.is_integer() for e in edges)
    names = [f"<{_num(edges[0])}"]
    for lo, hi in zip(edges, edges[1:], strict=False):
        names.append(f"{_num(lo)}-{_num(hi - 1)}" if integral else f"[{_num(lo)}, {_num(hi)})")
    names.append(f"{_num(edges[-1])}+")
    return _bands(ages, np.asarray(edges), names)


def quantile_bands(values: Any, n_bands: int = 4) -> np.ndarray:
    """Bands at the quantiles of ``values`` ("Q1 [18, 35)", ..., last band closed); ties merge bands."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if len(finite) == 0:
        return np.full(len(x), MISSING, dtype=object)
    cuts = np.unique(np.quantile(finite, np.linspace(0, 1, n_bands + 1)))
    inner = cuts[1:-1]
    bounds = list(zip(cuts[:-1], cuts[1:], strict=True)) or [(cuts[0], cuts[0])]
    names = []
    for i, (lo, hi) in enumerate(bounds):
        close = "]" if i == len(bounds) - 1 else ")"
        names.append(f"Q{i + 1} [{_num(lo)}, {_num(hi)}{close}")
    return _bands(x, inner, names)


def _bands(values: Any, inner_edges: np.ndarray, names: list[str]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(inner_edges, x, side="right")
    out = np.asarray(names, dtype=object)[np.minimum(idx, len(names) - 1)]
    out[~np.isfinite(x)] = MISSING
    return out
