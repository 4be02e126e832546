"""Make the ISIC-shaped synthetic sets that ``bench_validate.py --commands --data OUT`` times.

    OMP_NUM_THREADS=1 python benchmarks/isic_sets.py /work/data --parts 3

* ``isic33k``: SIIM-ISIC 2020's shape: 2,056 patients, 1-31 lesions each (32,955 images, ISIC has
  33,126), 1.76% malignant, 512x512 JPEGs from ``tuneline_synth.dermoscopy.render``;
* ``isic16k``, ``isic4k``, ``isic1k``: the first N lesions in image-name order (names are random
  ids, so a random sample of lesions), as filtered ``train.csv`` files over hardlinks to the 33k
  set's files (no second copy, no second drawing);
* ``isic_large``: ``--large`` lesions (default 1,000) drawn at 1024 px, stretched to 4000x3000 and
  given camera-like grain, so the JPEGs carry a photo's entropy (~4 MB each).

Acceptance of a drawing: it must not be a near duplicate of an earlier one by the validator's own
default rule (phash <= 12 and phash + dhash <= 19; the generator's stricter default margins need
~25 redraws per image past ~10k images). ``--parts K`` draws K index ranges in K processes; each
range checks only against itself, so a pair across ranges is not ruled out (rare: ~2% of drawings
needed a redraw within a range). Measured here: ~20 images/s per process on an idle core.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from tuneline_synth import dermoscopy as d

PATIENTS, LESIONS, PREVALENCE, SIDE = 2056, (1, 31), 0.0176, 512
LARGE = (4000, 3000)


def _rows(patients: int) -> list:
    return d._plan(patients, *LESIONS, PREVALENCE, 0, False)[1]


def _render(rng: np.random.Generator, size: int, malignant: bool, large: bool) -> Image.Image:
    im = d.render(rng, size, malignant)
    if not large:
        return im
    big = im.resize(LARGE, Image.Resampling.BICUBIC)
    grain = Image.effect_noise(LARGE, 8).convert("RGB")
    return ImageChops.add(big, grain, scale=1.0, offset=-128)


def draw_range(out: Path, patients: int, start: int, stop: int, size: int, large: bool) -> int:
    """Draw rows [start, stop) into out/jpeg/train; returns how many were drawn."""
    rows = _rows(patients)[start:stop]
    folder = out / "jpeg" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    phash = np.zeros(0, np.uint64)
    dhash = np.zeros(0, np.uint64)
    t0 = time.time()
    for k, row in enumerate(rows):
        best = None
        for attempt in range(d._Painter.MAX_TRIES):
            rng = np.random.default_rng([0, 0, start + k, attempt])
            data = d._jpeg(_render(rng, size, row.malignant, large), 90)
            p, h = d._hashes(data)
            dp = np.bitwise_count(phash ^ p).astype(np.int64)
            dd = np.bitwise_count(dhash ^ h).astype(np.int64)
            margin = int(np.maximum(dp - 13, dp + dd - 20).min()) if len(phash) else 1
            if best is None or margin > best[0]:
                best = (margin, data, p, h)
            if margin >= 0:
                break
        assert best is not None
        _, data, p, h = best
        phash, dhash = np.append(phash, p), np.append(dhash, h)
        (folder / f"{row.image_name}.jpg").write_bytes(data)
        if (k + 1) % 500 == 0:
            rate = (k + 1) / (time.time() - t0)
            print(f"  [{start}:{stop}] {k + 1}/{len(rows)}, {rate:.1f} img/s", file=sys.stderr, flush=True)
    return len(rows)


def write_csv(folder: Path, rows: list) -> None:
    with open(folder / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(d.HEADER)
        for r in rows:
            writer.writerow(r.fields(False))


def draw(out: Path, patients: int, n: int, size: int, large: bool, parts: int) -> None:
    bounds = [round(n * k / parts) for k in range(parts + 1)]
    with ProcessPoolExecutor(parts) as pool:
        futures = [
            pool.submit(draw_range, out, patients, a, b, size, large)
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]
        for f in futures:
            f.result()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--parts", type=int, default=max(1, len(os.sched_getaffinity(0))))
    ap.add_argument("--patients", type=int, default=PATIENTS)
    ap.add_argument("--subsets", default="16000,4000,1000")
    ap.add_argument("--large", type=int, default=1000, help="4000x3000 images (0: none)")
    args = ap.parse_args(argv)

    big = args.out / "isic33k"
    rows = _rows(args.patients)
    print(f"{big}: {len(rows)} images, {sum(r.malignant for r in rows)} malignant", file=sys.stderr)
    draw(big, args.patients, len(rows), SIDE, False, args.parts)
    write_csv(big, rows)
    for n in (int(x) for x in args.subsets.split(",") if x):
        folder = args.out / (f"isic{n // 1000}k" if n >= 1000 else f"isic{n}")
        (folder / "jpeg" / "train").mkdir(parents=True, exist_ok=True)
        for r in rows[:n]:
            dst = folder / "jpeg" / "train" / f"{r.image_name}.jpg"
            if not dst.exists():
                os.link(big / "jpeg" / "train" / f"{r.image_name}.jpg", dst)
        write_csv(folder, rows[:n])
    if args.large:
        # ~16 lesions per patient: enough patients for the count, then the first ``large`` rows
        large_rows = _rows(max(2, round(args.large / 14.7)))[: args.large]
        folder = args.out / "isic_large"
        draw(folder, max(2, round(args.large / 14.7)), len(large_rows), 1024, True, args.parts)
        write_csv(folder, large_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
