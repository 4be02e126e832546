"""Select for labelling (active learning): the N requests worth a human's time.

    tuneline loop select CONFIG [--budget N] [--strategy uncertainty|margin|entropy|disagreement|drift|random]

Each strategy gives every candidate a score (higher: more worth a label):

- uncertainty: 1 - the champion's top class probability (least confident first);
- margin: minus the gap between its two most probable classes;
- entropy: the entropy of its class distribution;
- disagreement: champion and challenger predict different classes (1), plus half the total-variation
  distance between their distributions (below 1: ties broken by how far apart they are);
- drift: the mean absolute z-score of the image statistics the drift monitor uses, against the training
  split's (farthest from the training profile first);
- random: a seeded uniform draw (the baseline every other strategy must beat).

Then candidates are taken best first, skipping any that is a near duplicate (the perceptual-hash index of
data validation, data/neardup.py, same thresholds) of one already taken or of a training record, so the
budget is not spent on ten copies of one photo or on what the model was trained on. Candidates that
already carry a corrected label from ``/v1/feedback`` need no human and are not selected.

Batch diversity (``loop.diversity: cluster``, the default, for uncertainty, margin, entropy and
disagreement): one batch taken purely best-first is redundant (many uncertain copies of one confusion), so,
as in cluster-margin / diverse mini-batch active learning (Zhdanov 2019), the ``loop.diversity_factor`` x
budget best-scored candidates (de-duplicated as above) are split by k-means (seeded) into ``budget``
clusters on the candidates' features and the best-scored of each cluster is taken. Without features it
falls back to plain best-first ranking (and says so).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from tuneline.config.schema.loop import DIVERSE_STRATEGIES, STRATEGIES

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- scores (arrays in, arrays out)
def uncertainty(p: np.ndarray) -> np.ndarray:
    return 1.0 - p.max(axis=1)


def margin(p: np.ndarray) -> np.ndarray:
    top = np.sort(p, axis=1)
    return -(top[:, -1] - top[:, -2]) if p.shape[1] > 1 else np.zeros(len(p))


def entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(q * np.log(q)).sum(axis=1)


def disagreement(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    differ = (p.argmax(axis=1) != q.argmax(axis=1)).astype(np.float64)
    return differ + 0.5 * (0.5 * np.abs(p - q).sum(axis=1))


def drift(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean |z| of each row of ``features`` against the rows of ``reference`` (same columns)."""
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0) + 1e-6
    return np.abs((features - mu) / sd).mean(axis=1)


def strategy_scores(
    strategy: str,
    n: int,
    *,
    probs: np.ndarray | None = None,
    other: np.ndarray | None = None,
    features: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    if strategy == "random":
        return np.random.default_rng(seed).random(n)
    if strategy == "drift":
        if features is None or reference is None:
            raise ValueError(
                "the drift strategy needs image features of the candidates and the training data"
            )
        return drift(features, reference)
    if probs is None:
        raise ValueError(f"the {strategy} strategy needs class probabilities (loop collect scores the pool)")
    if strategy == "disagreement":
        if other is None:
            raise ValueError("the disagreement strategy needs a challenger's probabilities too")
        return disagreement(probs, other)
    return {"uncertainty": uncertainty, "margin": margin, "entropy": entropy}[strategy](probs)


# ---------------------------------------------------------------- near duplicates
def near_duplicates(
    cand_hashes: Sequence[tuple[int | None, int | None]],
    train_hashes: Sequence[tuple[int | None, int | None]],
    max_distance: int | None = None,
) -> tuple[set[int], list[tuple[int, int]]]:
    """(candidates that near-duplicate a training image, near-duplicate pairs among the candidates)."""
    from tuneline.data.neardup import DEFAULT_MAX_DISTANCE, near_duplicate_pairs

    both = list(train_hashes) + list(cand_hashes)
    t = len(train_hashes)
    pairs = near_duplicate_pairs(
        [h[0] for h in both],
        [h[1] for h in both],
        max_distance if max_distance is not None else DEFAULT_MAX_DISTANCE,
    )
    of_train: set[int] = set()
    among: list[tuple[int, int]] = []
    for i, j, _ in pairs:
        if i < t <= j:
            of_train.add(j - t)
        elif i >= t:
            among.append((i - t, j - t))
    return of_train, among


def image_hashes(paths: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """(phash, dhash) of each image file, computed as data validation computes them."""
    from tuneline.data.images import inspect_image

    out = []
    for p in paths:
        info = inspect_image(p)
        out.append((info.phash, info.dhash))
    return out


def text_key(texts: Sequence[str]) -> str:
    return hashlib.sha256(" ".join(" ".join(texts).lower().split()).encode()).hexdigest()


def rank(
    scores: np.ndarray,
    budget: int,
    *,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
    pairs: Sequence[tuple[int, int]] = (),
) -> list[int]:
    """Indexes of the ``budget`` best-scored candidates, no two near duplicates, none in ``exclude``."""
    linked: dict[int, set[int]] = {}
    for i, j in pairs:
        linked.setdefault(i, set()).add(j)
        linked.setdefault(j, set()).add(i)
    order = np.argsort(-scores, kind="stable")
    taken: list[int] = []
    blocked = set(exclude)
    for i in map(int, order):
        if len(taken) >= budget:
            break
        if i in blocked:
            continue
        taken.append(i)
        blocked |= linked.get(i, set())
    return taken


def diverse_rank(
    scores: np.ndarray,
    budget: int,
    features: np.ndarray | None,
    *,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
    pairs: Sequence[tuple[int, int]] = (),
    factor: int = 5,
    seed: int = 0,
) -> list[int]:
    """Like :func:`rank`, but spread over the feature space: the best-scored of each of ``budget`` k-means
    clusters of the ``factor * budget`` best-scored candidates (no near duplicates, none in ``exclude``).

    Without ``features`` (or with fewer candidates than the budget) it is :func:`rank`; best first."""
    if features is None or len(features) != len(scores):
        log.warning(
            "batch diversity needs per-candidate features and there are none: plain best-first ranking"
        )
        return rank(scores, budget, exclude=exclude, pairs=pairs)
    top = rank(scores, max(budget, factor * budget), exclude=exclude, pairs=pairs)
    if len(top) <= budget:
        return top
    import warnings

    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)[top]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    with warnings.catch_warnings():  # identical points give fewer distinct clusters: filled below
        warnings.simplefilter("ignore")
        labels = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(x)
    best: dict[int, int] = {}
    for i, lab in zip(top, labels, strict=True):  # ``top`` is best first: the first of each cluster wins
        best.setdefault(int(lab), i)
    taken = set(best.values())
    picked = [i for i in top if i in taken]
    picked += [i for i in top if i not in taken][: budget - len(picked)]
    return sorted(picked, key=lambda i: (-scores[i], top.index(i)))


def select_batch(
    strategy: str,
    scores: np.ndarray,
    budget: int,
    *,
    features: np.ndarray | None = None,
    diversity: str = "cluster",
    factor: int = 5,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
    pairs: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> list[int]:
    """The batch ``loop select`` takes: diverse for the uncertainty-type strategies, else best first."""
    if diversity == "cluster" and strategy in DIVERSE_STRATEGIES:
        return diverse_rank(scores, budget, features, exclude=exclude, pairs=pairs, factor=factor, seed=seed)
    return rank(scores, budget, exclude=exclude, pairs=pairs)
