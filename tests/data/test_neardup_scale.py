"""Near duplicates on large sets of similar-looking images: the blocked all-pairs scan finds what
the index finds, the candidate stream stays arrays, and pixel confirmation is the same in one
process and in a pool (each image decoded and gridded once)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.data.test_neardup import brute_force, clustered_hashes, lesion
from tuneline.data import neardup
from tuneline.data.checks import duplicates
from tuneline.data.images import centre_rgb, inspect_images
from tuneline.data.neardup import near_duplicate_batches, near_duplicate_pairs, unique_pairs


@pytest.mark.parametrize("p_max,total_max", [(3, 5), (12, 19), (20, 36)])
def test_block_scan_and_index_agree_with_brute_force(monkeypatch, p_max, total_max):
    ph, dh = clustered_hashes(300, centres=6, flips=12, seed=p_max)
    ph[3] = None
    want = sorted(brute_force(ph, dh, p_max, total_max))
    monkeypatch.setattr(neardup, "_use_blocks", lambda *a: True)
    assert near_duplicate_pairs(ph, dh, p_max, total_max) == want
    monkeypatch.setattr(neardup, "_use_blocks", lambda *a: False)
    assert near_duplicate_pairs(ph, dh, p_max, total_max) == want


def test_clustered_hashes_choose_the_scan_random_ones_the_index():
    ph, dh = clustered_hashes(3000, centres=4, flips=10, seed=1)
    a, b = np.array(ph, dtype=np.uint64), np.array(dh, dtype=np.uint64)
    assert neardup._use_blocks(a, b, 20, 36)  # nearly every pair is a candidate: scan
    rng = np.random.default_rng(0)
    r1, r2 = (rng.integers(0, 2**64, 3000, dtype=np.uint64) for _ in range(2))
    assert not neardup._use_blocks(r1, r2, 12, 19)


def test_batches_are_arrays_and_unique_pairs_sorts_and_dedupes():
    ph, dh = clustered_hashes(200, centres=3, flips=10, seed=2)
    batches = list(near_duplicate_batches(ph, dh, 20, 36))
    assert all(isinstance(x, np.ndarray) for b in batches for x in b)
    doubled = batches + batches
    i, j, d = unique_pairs(doubled)
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == near_duplicate_pairs(ph, dh, 20, 36)
    assert all(len(x) == 0 for x in unique_pairs([]))


def test_base_is_the_grid_row_and_centre_colour_is_the_central_mean():
    rng = np.random.default_rng(3)
    for shape in ((64, 64, 3), (40, 57, 3)):
        small = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.abs(duplicates._base(small) - duplicates._grid(small)[duplicates._BASE]).max() < 1e-5
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[15:85, 15:85] = (200, 100, 50)  # the central 70%: the border does not count
    assert centre_rgb(Image.fromarray(arr)) == (200.0, 100.0, 50.0)


def test_confirmation_in_a_pool_equals_one_process(tmp_path, monkeypatch):
    paths = []
    for k in range(12):
        im = lesion(k, 160)
        p = tmp_path / f"{k}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
        if k % 3 == 0:  # a cropped, resized copy of every third lesion
            w, h = im.size
            copy = tmp_path / f"{k}_copy.jpg"
            im.crop((4, 4, w - 4, h - 4)).resize((120, 120)).save(copy, quality=80)
            paths.append(str(copy))
    infos = inspect_images(paths)
    assert all(x.centre_rgb is not None and x.thumb is not None for x in infos)
    i, j, _ = duplicates._nominated(infos, np.arange(len(infos)), 20, 36)
    assert len(i)
    monkeypatch.setattr(duplicates, "POOL_MIN_IMAGES", 0)  # a pool even for these few images
    serial = duplicates._confirm(infos, i, j, workers=1)
    pooled = duplicates._confirm(infos, i, j, workers=2)
    assert serial.tolist() == pooled.tolist()
    copies = {(a, b) for a, b, s in zip(i.tolist(), j.tolist(), serial.tolist(), strict=True) if s}
    want = {
        (paths.index(str(tmp_path / f"{k}.jpg")), paths.index(str(tmp_path / f"{k}_copy.jpg")))
        for k in (0, 3, 6, 9)
    }
    assert want <= copies
