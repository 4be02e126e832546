"""Exact and near duplicates among images, from the hashes ``images.inspect_image`` computes.

Near duplicates are pairs whose 64-bit perceptual hashes (imagehash ``phash`` and ``dhash``) are
close in Hamming distance. Comparing every pair is quadratic (50,000 images = 1.25 billion
pairs), so the search uses a multi-index hashing (MIH) index: the code is cut into bands, and by
the pigeonhole principle two codes within distance ``r`` agree to within ``floor(r / m)`` bits on
at least one of ``m`` bands (more precisely: if the per-band radii ``r_b`` satisfy
``sum(r_b + 1) >= r + 1``, some band is within its ``r_b``). Each band is a bucket table; a code
looks up the buckets of its band value XOR every mask of at most ``r_b`` bits. With ``r_b = 0``
this is the classic "split into r+1 bands, one band must match exactly" rule; allowing 1-3 bit
probes lets bands be ~16 bits wide, so random codes share a bucket with probability ~2^-16 instead
of ~2^-6, which is what keeps the candidate count far below n^2. Candidates are then confirmed
with vectorised (numpy) Hamming distances on both hashes.

No library we depend on does this, hence our own index below (imagehash only compares two hashes;
sklearn's BallTree accepts a Hamming metric but degrades to brute force on 128 binary dimensions:
measured 70 s for a radius query over 20,000 codes, against 0.2 s here). Reference: Norouzi,
Punjani, Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012.

Default thresholds, calibrated: a pair is a near duplicate when ``phash <= 12`` and
``phash + dhash <= 19`` (the Hamming distance of the 128-bit concatenated code, so a pair that is
very close on one hash may be noisier on the other). Measured through the production path
(``inspect_image``: reduced decode, imagehash) on generated images: 150 "lesions" (brown blobs on
noisy beige skin), 28 crops of the sklearn sample photos and 80 sklearn digits upscaled from 8x8,
each with 13 copies, plus 800 further lesions for look-alike pairs:

* re-encoded (JPEG q60-95) and resized (0.5x-2x) copies, 1,806: phash <= 2, dhash <= 12; all found;
* copies cropped by 0-5% per side at random, alone or with 0.6x resize + q65, 1,032: phash median
  4-6 but up to 22; 93.4% found. Cropped by exactly 5% on every side (alone or with 1.7x + q60),
  516: median 8, up to 26; 78.3% found. Cropping moves content against the frame and the low DCT
  frequencies phash keeps are not shift invariant, so some crops land further apart than distinct
  look-alikes do: no threshold on these two hashes finds them all without false pairs;
* distinct look-alikes: 319,600 lesion pairs, phash as low as 2: 28 flagged (8.8e-5 per pair);
  sample-photo crops (phash >= 20) and digits of different classes (phash >= 14): none flagged.
  Two writers' digits of the *same* class, upscaled from 8x8, can be phash 4 / dhash 1 apart: a
  64-bit hash cannot separate those at any threshold (21 of 289 such pairs flagged).

Trade-off if you change them: ``phash <= 10, total <= 18`` halves the lesion false pairs (14) and
finds 89.6% / 72.1% of the crops; ``phash <= 12, total <= 21`` finds 95.8% / 86.0% with 50 false
pairs; above ``phash`` 12 digits of different classes start to pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from math import comb

import numpy as np

DEFAULT_MAX_DISTANCE = 12  # phash Hamming distance bound (of 64 bits)
DEFAULT_MAX_TOTAL_DISTANCE = 19  # phash + dhash bound: both hashes must agree overall
# When a caller sets only max_distance, the total bound follows it with the calibrated margin, so
# raising or lowering the one knob moves the rule as a whole.
_TOTAL_MARGIN = DEFAULT_MAX_TOTAL_DISTANCE - DEFAULT_MAX_DISTANCE

_MIN_BAND, _MAX_BAND = 4, 22  # band widths in bits; 2^22 buckets is the largest table (32 MiB)
_BATCH = 1 << 20  # elements per vectorised step, keeps memory flat whatever n is


def exact_duplicate_groups(sha256s: Sequence[str | None]) -> list[list[int]]:
    """Indexes sharing a content hash: groups of size >= 2, each in input order, by first index."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(sha256s):
        if h is not None:
            groups.setdefault(h, []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def near_duplicate_pairs(
    phashes: Sequence[int | None],
    dhashes: Sequence[int | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_total_distance: int | None = None,
) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, phash_distance)``, ``i < j``, of near-duplicate images, sorted.

    A pair qualifies when its phash distance is ``<= max_distance`` and phash + dhash distance is
    ``<= max_total_distance`` (default: ``max_distance + 7``, i.e. 19 with the defaults). Entries
    where either hash is None (unreadable images) are skipped.
    Exact duplicates (distance 0) are included; pass one image per exact-duplicate group to keep
    the output small. Hashes are 64-bit (``hash_size=8``).
    """
    i, j, d = unique_pairs(near_duplicate_batches(phashes, dhashes, max_distance, max_total_distance))
    return [(int(a), int(b), int(c)) for a, b, c in zip(i.tolist(), j.tolist(), d.tolist(), strict=True)]


Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, phash distance), input indexes, i < j


def near_duplicate_batches(
    phashes: Sequence[int | None],
    dhashes: Sequence[int | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_total_distance: int | None = None,
) -> Iterator[Batch]:
    """The qualifying pairs of ``near_duplicate_pairs`` as a stream of arrays (a pair may come more
    than once: ``unique_pairs`` sorts and dedupes), so a caller can filter them further without ever
    holding every pair as Python tuples (millions, on large sets of similar-looking images)."""
    if max_total_distance is None:
        max_total_distance = max_distance + _TOTAL_MARGIN
    idx, ph, dh = _valid(phashes, dhashes)
    if len(idx) < 2:
        return
    if _use_blocks(ph, dh, max_distance, max_total_distance):
        for a, b, dp in _block_pairs(ph, dh, max_distance, max_total_distance):
            yield idx[a], idx[b], dp
        return
    for a, b in _candidates(ph, dh, max_distance, max_total_distance):
        dp = np.bitwise_count(ph[a] ^ ph[b])
        dd = np.bitwise_count(dh[a] ^ dh[b])
        ok = (dp <= max_distance) & (dp.astype(np.int64) + dd <= max_total_distance)
        if ok.any():
            yield idx[a[ok]], idx[b[ok]], dp[ok]


def unique_pairs(batches: Iterator[Batch] | list[Batch]) -> Batch:
    """Concatenate batches, keep one of each (i, j), sorted by (i, j)."""
    got = list(batches)
    if not got:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    i = np.concatenate([b[0] for b in got]).astype(np.int64)
    j = np.concatenate([b[1] for b in got]).astype(np.int64)
    d = np.concatenate([b[2] for b in got]).astype(np.int64)
    key = i * (int(j.max()) + 1) + j
    _, first = np.unique(key, return_index=True)
    return i[first], j[first], d[first]


# Measured on this machine: the index costs ~150 ns per candidate it expands (gather, popcount,
# dedupe), the blocked all-pairs scan ~6 ns per pair. Hashes of similar-looking images (one
# camera, one body site) cluster, and then the index expands nearly every pair: 12.8M candidates
# of 18M pairs on 6,000 synthetic lesions, where the scan is ~20x faster.
_CANDIDATE_VS_PAIR_COST = 25


def _use_blocks(ph: np.ndarray, dh: np.ndarray, max_distance: int, max_total: int) -> bool:
    """Whether the all-pairs scan beats the band index here: the index's candidate count is
    counted exactly (bucket sizes per probe, no expansion) and priced against the n^2/2 scan."""
    n = len(ph)
    pairs = n * (n - 1) / 2
    chosen = _chosen_plan(ph, dh, max_distance, max_total)
    if chosen is None:
        return True
    bands, words = chosen
    budget = pairs / _CANDIDATE_VS_PAIR_COST
    total = 0
    for word, shift, width, radius in bands:
        vals = ((words[:, word] >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        total += _probe_count(vals, width, radius)
        if total > budget:
            return True
    return False


def _block_pairs(
    ph: np.ndarray, dh: np.ndarray, max_distance: int, max_total: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair i < j within both bounds, by blocks of rows against the later columns (flat memory)."""
    n = len(ph)
    rows = max(1, _BATCH // n)
    for r0 in range(0, n - 1, rows):
        r1 = min(n - 1, r0 + rows)
        dp = np.bitwise_count(ph[r0:r1, None] ^ ph[None, r0 + 1 :])
        a, b = np.nonzero(dp <= max_distance)  # phash first: usually few pass, dhash only for them
        if not a.size:
            continue
        i, j = a + r0, b + r0 + 1
        d = dp[a, b]
        ok = (j > i) & (d.astype(np.int16) + np.bitwise_count(dh[i] ^ dh[j]) <= max_total)
        if ok.any():
            yield i[ok], j[ok], d[ok]


def candidate_pairs(
    phashes: Sequence[int | None],
    dhashes: Sequence[int | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_total_distance: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The index's unconfirmed candidates, as batches of (i, j) arrays over the *valid* entries.

    For tests and benchmarks: the total shows how much of the n^2 space the index touches.
    """
    if max_total_distance is None:
        max_total_distance = max_distance + _TOTAL_MARGIN
    _, ph, dh = _valid(phashes, dhashes)
    if len(ph) >= 2:
        yield from _candidates(ph, dh, max_distance, max_total_distance)


def _valid(
    phashes: Sequence[int | None], dhashes: Sequence[int | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(phashes) != len(dhashes):
        raise ValueError(f"{len(phashes)} phashes but {len(dhashes)} dhashes")
    idx = [
        i for i, (p, d) in enumerate(zip(phashes, dhashes, strict=True)) if p is not None and d is not None
    ]
    try:
        ph = np.array([phashes[i] for i in idx], dtype=np.uint64)
        dh = np.array([dhashes[i] for i in idx], dtype=np.uint64)
    except OverflowError as exc:
        raise ValueError("hashes must be 64-bit non-negative ints (hash_size=8)") from exc
    return np.array(idx, dtype=np.int64), ph, dh


# --------------------------------------------------------------------------------------------
# The index (our own code: see the module docstring)


def _candidates(
    ph: np.ndarray, dh: np.ndarray, max_distance: int, max_total: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate pairs (i < j) that include every pair within both bounds; duplicates possible.

    Two codes can be indexed: the phash alone with radius ``max_distance``, or the 128-bit
    phash+dhash code with radius ``max_total``; both are complete for the rule, and a cost model
    picks the cheaper (the joint code usually: it spreads the slack over twice as many bits).
    If no band plan beats comparing all pairs (tiny inputs, huge radii), all pairs are compared.
    """
    chosen = _chosen_plan(ph, dh, max_distance, max_total)
    if chosen is None:
        yield from _all_pairs(len(ph))
        return
    bands, words = chosen
    for word, shift, width, radius in bands:
        vals = ((words[:, word] >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        yield from _probe(vals, width, radius)


def _chosen_plan(
    ph: np.ndarray, dh: np.ndarray, max_distance: int, max_total: int
) -> tuple[list[tuple[int, int, int, int]], np.ndarray] | None:
    """The cheaper band plan and its words, or None when comparing all pairs is cheaper."""
    n = len(ph)
    options = []
    if max_distance >= 0:
        options.append((_plan(n, 1, max_distance), np.stack([ph], axis=1)))
    if max_total >= 0:
        options.append((_plan(n, 2, max_total), np.stack([ph, dh], axis=1)))
    if not options:
        return None
    (cost, bands), words = min(options, key=lambda o: o[0][0])
    if cost >= _brute_cost(n):
        return None
    return bands, words


def _probe_count(vals: np.ndarray, width: int, radius: int) -> int:
    """How many candidates ``_probe`` would expand (before its i < j filter), without expanding them."""
    n = len(vals)
    counts = np.bincount(vals, minlength=1 << width)
    masks = _masks(width, radius)
    step = max(1, _BATCH // n)
    total = 0
    for m0 in range(0, len(masks), step):
        batch = masks[m0 : m0 + step]
        q = vals[None, :] ^ batch[:, None]
        total += int(np.where((q > vals[None, :]) | (batch[:, None] == 0), counts[q], 0).sum())
    return total


def _probe(vals: np.ndarray, width: int, radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs (i < j) whose band values differ by at most ``radius`` bits, via a bucket table."""
    n = len(vals)
    order = np.argsort(vals, kind="stable")
    counts = np.bincount(vals, minlength=1 << width)
    starts = np.cumsum(counts) - counts
    masks = _masks(width, radius)
    step = max(1, _BATCH // n)
    for m0 in range(0, len(masks), step):
        batch = masks[m0 : m0 + step]
        q = vals[None, :] ^ batch[:, None]  # the bucket each (mask, i) looks up
        # With mask x != 0, the pair (i, j) is found from i (v_i ^ x = v_j) and from j: look up
        # only from the side with the smaller band value, which halves the work. Mask 0 (same
        # bucket) is filtered by i < j below instead.
        c = np.where((q > vals[None, :]) | (batch[:, None] == 0), counts[q], 0).ravel()
        q = q.ravel()
        hit = np.flatnonzero(c)
        if not hit.size:
            continue
        qi, qc, qs = hit % n, c[hit], starts[q[hit]]
        # Expand each (i, bucket) into its members, in slices so a huge bucket cannot blow memory.
        ends = np.cumsum(qc)
        lo = 0
        while lo < len(hit):
            hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + _BATCH, side="right"))
            hi = max(hi, lo + 1)
            cnt = qc[lo:hi]
            first = np.repeat(np.cumsum(cnt) - cnt, cnt)
            i = np.repeat(qi[lo:hi], cnt)
            j = order[np.repeat(qs[lo:hi], cnt) + np.arange(int(cnt.sum())) - first]
            a, b = np.minimum(i, j), np.maximum(i, j)
            keep = a != b
            if keep.any():
                yield a[keep], b[keep]
            lo = hi


def _all_pairs(n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rows = max(1, _BATCH // n)
    for r0 in range(0, n, rows):
        i, j = np.nonzero(np.arange(r0, min(n, r0 + rows))[:, None] < np.arange(n)[None, :])
        yield i + r0, j


def _plan(n: int, words: int, radius: int) -> tuple[float, list[tuple[int, int, int, int]]]:
    """Cheapest band layout: (estimated cost, [(word, shift, width, probe radius), ...]).

    Each 64-bit word is cut into k near-equal bands. The probe radii r_b are spread so that
    sum(r_b + 1) >= radius + 1 (pigeonhole), giving extra slack to the narrowest bands, where
    probing costs least. Cost per band = masks * (n lookups + n^2 / 2^width expected candidates,
    weighted 2x: each is expanded, gathered and confirmed), assuming roughly uniform hashes. Only
    the smaller-valued side of a pair looks it up, so the candidate term is n^2/2 per mask pair.
    """
    best: tuple[float, list[tuple[int, int, int, int]]] = (float("inf"), [])
    for k in range(1, 17):
        widths = [64 // k + (1 if b < 64 % k else 0) for b in range(k)]
        if not (_MIN_BAND <= min(widths) and max(widths) <= _MAX_BAND):
            continue
        bands = []
        for w in range(words):
            shift = 0
            for width in widths:
                bands.append((w, shift, width))
                shift += width
        bands.sort(key=lambda b: b[2])  # narrowest first: they take the extra slack
        need = radius + 1
        if need <= len(bands):  # r_b = 0 on the widest `need` bands is enough
            radii = [-1] * (len(bands) - need) + [0] * need
        else:
            base, extra = divmod(need, len(bands))
            radii = [base - 1 + (1 if b < extra else 0) for b in range(len(bands))]
        if max(radii) > 6:
            continue  # C(width, >6) masks: never the cheapest, and slow to enumerate
        plan = [(w, s, width, r) for (w, s, width), r in zip(bands, radii, strict=True) if r >= 0]
        cost = sum(_n_masks(width, r) * (n + 2.0 * n * n / 2**width) for _, _, width, r in plan)
        if cost < best[0]:
            best = (cost, plan)
    return best


def _brute_cost(n: int) -> float:
    return 3.0 * n * (n - 1) / 2


def _n_masks(width: int, radius: int) -> int:
    return sum(comb(width, k) for k in range(radius + 1))


@lru_cache(maxsize=64)
def _masks(width: int, radius: int) -> np.ndarray:
    """All ``width``-bit values with at most ``radius`` bits set (the XOR probes of one band)."""
    if radius == 0:
        return np.zeros(1, dtype=np.int64)
    allv = np.arange(1 << width, dtype=np.uint32)
    return np.flatnonzero(np.bitwise_count(allv) <= radius).astype(np.int64)
