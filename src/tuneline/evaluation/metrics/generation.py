"""Generation metrics: exact match, token F1, ROUGE-L on normalised text; perplexity."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Generation metrics
# ---------------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Strip, casefold and collapse runs of whitespace to one space (punctuation is kept)."""
    return _SPACE.sub(" ", str(text).strip().casefold())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalise_text(prediction) == normalise_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-tokens F1 over whitespace tokens of the normalised texts.

    Unlike SQuAD's script, articles and punctuation are not removed (language-neutral). Both empty:
    1.0; one empty: 0.0.
    """
    pred, ref = normalise_text(prediction).split(), normalise_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over whitespace tokens of the normalised texts.

    Own LCS implementation (no rouge-score dependency); its tokenizer differs from rouge-score's,
    which also drops non-alphanumerics. Both empty: 1.0; one empty: 0.0.
    """
    pred, ref = normalise_text(prediction).split(), normalise_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class GenerationMetrics:
    n: int
    exact_match: float
    token_f1: float
    rouge_l: float


GENERATION_METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example exact match, token F1 and ROUGE-L (arrays, e.g. for :func:`stats.bootstrap_ci`)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return {
        name: np.fromiter((fn(p, r) for p, r in zip(predictions, references, strict=True)), np.float64)
        for name, fn in GENERATION_METRICS.items()
    }


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> GenerationMetrics:
    """Means of :func:`generation_scores` (NaN when there are no examples)."""
    scores = generation_scores(predictions, references)
    n = len(predictions)
    means = {k: float(v.mean()) if n else math.nan for k, v in scores.items()}
    return GenerationMetrics(n=n, **means)


def perplexity(nll_sum: Any, n_tokens: Any) -> float:
    """Corpus perplexity ``exp(sum(nll) / sum(tokens))`` from summed natural-log NLLs and token counts.

    Accepts scalars or per-example arrays; NaN when there are no tokens.
    """
    total_nll = float(np.sum(nll_sum))
    total_tokens = float(np.sum(n_tokens))
    if total_tokens <= 0:
        return math.nan
    return math.exp(total_nll / total_tokens)
