"""The order in which training samples are drawn: shuffled, length-grouped, optionally class-balanced.

Our own sampler rather than the Trainer's ``group_by_length``: the Trainer's grouped sampler draws
from the global RNG, so a resumed run does not see the batches an uninterrupted one would
(shared/notes/training-facts.md). Here every epoch's order is a pure function of (seed, epoch): a
run resumed mid-epoch skips the batches it already trained on and gets exactly the rest.

Length grouping follows the well-known "megabatch" scheme (as in transformers' LengthGroupedSampler):
shuffle, cut into megabatches of ``megabatch_factor`` micro-batches, sort each by length so that a
micro-batch holds samples of similar length (little padding), and put the longest micro-batch
first so that an out-of-memory shows up at step 1, not hours in.

Lengths within ``LENGTH_SLACK_TOKENS`` tokens or ``LENGTH_SLACK_FRACTION`` of each other count as
equal and stay in shuffled order: sorting by exact length would otherwise sort by label whenever the
prompts have one length and the answers differ by a token or two (``b enign`` vs ``mal ign ant`` on
the melanoma example), giving micro-batches of one class each. The model is then pulled towards one
class and back at every step and learns the prior instead of the image (measured there: loss spikes
to 3.0, nearly the same malignant probability for every image, test ROC-AUC 0.65; mixed: 0.84).
Mixing near-equal lengths costs a few percent of padding at most.

Class balance (``train.class_balance: sampler``) draws samples with replacement, with probability
inversely proportional to their class frequency, so every class is seen equally often in
expectation; ``loss`` instead keeps the natural order and weights each sample's loss by
:func:`class_weights`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

LENGTH_SLACK_TOKENS = 4
LENGTH_SLACK_FRACTION = 0.05


def class_weights(labels: Sequence[str | None]) -> list[float]:
    """Per-sample weights ∝ 1 / class frequency, normalised to mean 1 (unlabelled samples weigh 1)."""
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return [1.0] * len(labels)
    per_class = {c: 1.0 / (len(counts) * n) for c, n in counts.items()}  # each class totals 1/K
    labelled = sum(counts.values())
    raw = [per_class[label] * labelled if label is not None else 1.0 for label in labels]
    return raw


class EpochSampler(Sampler[int]):
    """Indices for one epoch, determined by (seed, epoch) alone.

    ``lengths``: token length per sample, enables length grouping. ``weights``: sampling weight per
    sample, enables weighted sampling with replacement (class balance).
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        batch_size: int,
        lengths: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        megabatch_factor: int = 50,
    ) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} samples")
        if weights is not None and len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} samples")
        self.n = n
        self.seed = seed
        self.batch_size = batch_size
        self.lengths = list(lengths) if lengths is not None else None
        self.weights = torch.tensor(list(weights), dtype=torch.double) if weights is not None else None
        self.megabatch = max(1, megabatch_factor) * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        else:
            order = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is None:
            return order
        lengths = self.lengths
        groups = [
            _mix_near_lengths(sorted(order[i : i + self.megabatch], key=lambda j: -lengths[j]), lengths, g)
            for i in range(0, len(order), self.megabatch)
        ]
        batches = [g[i : i + self.batch_size] for g in groups for i in range(0, len(g), self.batch_size)]
        longest = max(range(len(batches)), key=lambda b: max(lengths[j] for j in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
        return [j for b in batches for j in b]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch))


def _mix_near_lengths(ordered: list[int], lengths: Sequence[int], g: torch.Generator) -> list[int]:
    """``ordered`` (longest first) with each run of near-equal lengths shuffled (see the module doc)."""
    out: list[int] = []
    start = 0
    while start < len(ordered):
        top = lengths[ordered[start]]
        floor = top - max(LENGTH_SLACK_TOKENS, LENGTH_SLACK_FRACTION * top)
        end = start + 1
        while end < len(ordered) and lengths[ordered[end]] >= floor:
            end += 1
        run = ordered[start:end]
        out += [run[k] for k in torch.randperm(len(run), generator=g).tolist()]
        start = end
    return out


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Share of padded positions when ``order`` is cut into micro-batches padded to their longest."""
    padded = real = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i : i + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0
