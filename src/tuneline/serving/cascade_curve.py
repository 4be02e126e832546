"""The cascade's threshold from data: the curve (threshold -> share routed, accuracy, cost per 1,000) and
the choice the target implies; and temperature scaling of class log-probabilities. Pure numpy.

A request falls back when its confidence is *below* the threshold. The small model always answers
first, so a request costs the small model's cost plus, when routed, the fallback's. Candidate thresholds
are 0 (never fall back), the midpoints between consecutive distinct confidences, and one above the
largest confidence (always fall back): every distinct routing of the val records appears once.

Choice: with ``min`` (e.g. accuracy >= 0.9), the cheapest threshold that meets it (ties: the higher
accuracy, then the lower threshold); with ``max_cost_per_1k``, the most accurate threshold within the cap
(ties: the cheaper, then the lower). When nothing meets the target, the closest point is returned with
``met: false`` (the most accurate, or the cheapest).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    share_routed: float
    accuracy: float
    cost_per_1k: float


def thresholds(confidence: np.ndarray) -> np.ndarray:
    u = np.unique(np.asarray(confidence, dtype=np.float64))
    mids = (u[1:] + u[:-1]) / 2 if u.size > 1 else np.array([])
    top = np.nextafter(u[-1], np.inf) if u.size else 1.0
    return np.concatenate([[0.0], mids, [top]])


def curve(
    confidence: np.ndarray,
    small_correct: np.ndarray,
    fallback_correct: np.ndarray,
    small_cost: np.ndarray | float,
    fallback_cost: np.ndarray | float,
) -> list[CurvePoint]:
    """One point per candidate threshold, lowest first."""
    conf = np.asarray(confidence, dtype=np.float64)
    n = conf.size
    s_ok = np.asarray(small_correct, dtype=np.float64)
    f_ok = np.asarray(fallback_correct, dtype=np.float64)
    s_cost = np.broadcast_to(np.asarray(small_cost, dtype=np.float64), (n,))
    f_cost = np.broadcast_to(np.asarray(fallback_cost, dtype=np.float64), (n,))
    points = []
    for t in thresholds(conf):
        routed = conf < t
        acc = float(np.where(routed, f_ok, s_ok).mean()) if n else 0.0
        cost = float((s_cost + routed * f_cost).mean()) * 1000 if n else 0.0
        points.append(CurvePoint(float(t), float(routed.mean()) if n else 0.0, acc, cost))
    return points


def choose(
    points: list[CurvePoint], *, min_metric: float | None = None, max_cost_per_1k: float | None = None
):
    """(the chosen point, whether it meets the target)."""
    if (min_metric is None) == (max_cost_per_1k is None):
        raise ValueError("choose needs exactly one of min_metric and max_cost_per_1k")
    if not points:
        raise ValueError("no curve points")
    eps = 1e-12
    if min_metric is not None:
        ok = [p for p in points if p.accuracy >= min_metric - eps]
        if ok:
            return min(ok, key=lambda p: (p.cost_per_1k, -p.accuracy, p.threshold)), True
        return max(points, key=lambda p: (p.accuracy, -p.cost_per_1k, -p.threshold)), False
    assert max_cost_per_1k is not None
    ok = [p for p in points if p.cost_per_1k <= max_cost_per_1k + eps]
    if ok:
        return max(ok, key=lambda p: (p.accuracy, -p.cost_per_1k, -p.threshold)), True
    return min(points, key=lambda p: (p.cost_per_1k, p.threshold)), False


def as_json(points: list[CurvePoint]) -> list[dict]:
    return [asdict(p) for p in points]


# ------------------------------------------------------------------ temperature scaling
def softmax(log_scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities over the last axis (one request's label scores, or a row per record)."""
    z = np.asarray(log_scores, dtype=np.float64) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def nll(log_scores: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(log_scores, temperature)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())


def fit_temperature(log_scores: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature minimising the val negative log-likelihood (grid over log T, then golden section)."""
    y = np.asarray(y, dtype=np.int64)
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), 60))
    losses = [nll(log_scores, y, t) for t in grid]
    i = int(np.argmin(losses))
    a, b = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - g * (b - a), a + g * (b - a)
        if nll(log_scores, y, float(np.exp(c))) < nll(log_scores, y, float(np.exp(d))):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))
