"""Benchmark: image validation (inspect_images + near_duplicate_pairs) against the decode-only floor.

The floor is what any validator that looks at pixels must pay at least once: open + full ``load()``
of every file, with the same number of processes. Our path also hashes the bytes, computes
perceptual hashes and searches near duplicates, but decodes JPEGs at a reduced size, so it should
beat the floor: goals are ours/floor >= 1.0 on 512x512 images and >= 1.5 on 4000x3000 photos.

    OMP_NUM_THREADS=1 python benchmarks/bench_validate.py --small 2000 --large 100 --workers 2

Generated images are cached in ``--out`` (default: a folder in the temp dir) between runs.

``--commands`` instead times what a user runs, end to end: ``tuneline data validate`` and
``tuneline data prepare`` as subprocesses on synthetic dermoscopy in ISIC's layout (``tuneline data
synth dermoscopy``, 1.76% malignant, ~3 lesions per synthetic patient), at each of ``--sizes``
images, plus ``--large-count`` images at ``--large-side`` px. Each row gives wall, images/s, peak
RSS (``os.wait4``'s ru_maxrss: the largest single process of the command, workers included), and
the decode floor (open + full load of the same files, same workers); the last lines give the
growth exponent (log-log slope between the smallest and largest size) of time and RSS.

    OMP_NUM_THREADS=1 python benchmarks/bench_validate.py --commands --sizes 1000,4000 --workers 1

``--data DIR`` runs the commands on sets made beforehand instead (generating 33k images takes
over an hour here): every ``DIR/isic*`` folder with a ``train.csv`` and ``jpeg/train``, smallest
first, the 4000x3000 set last; a subset is a filtered ``train.csv`` over hardlinks to the big
set's files, and the floor decodes exactly the files its CSV names. The README table comes from

    OMP_NUM_THREADS=1 python benchmarks/bench_validate.py --commands --data /work/data --workers 2 \
        --config examples/melanoma/config.yaml --sets isic1k,isic4k,isic33k,isic_large
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from tuneline.data.images import inspect_images, pool_context
from tuneline.data.neardup import candidate_pairs, near_duplicate_pairs

GENERATOR_VERSION = "2"


# ---------------------------------------------------------------- data


def small_image(seed: int, size: int = 512) -> Image.Image:
    """Varied, photo-like content: gradient, multi-scale texture, shapes, lines, sensor noise.

    The texture matters: decode cost grows with entropy, and flat synthetic images decode several
    times faster than photos. At q90 these average ~0.32 bytes/pixel; the sklearn sample photos
    are 0.5-0.7, so the floor here is, if anything, on the fast side.
    """
    rng = np.random.default_rng(seed)
    c0, c1 = rng.integers(0, 256, (2, 3))
    t = np.linspace(0, 1, size)[:, None, None]
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    arr = c0 * (1 - t) + c1 * t
    for cells, amplitude in ((4, 40), (16, 25), (64, 15)):
        cells_img = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        texture = np.asarray(cells_img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        arr = arr + (texture - 128) * amplitude / 128
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        x1, y1 = x0 + int(rng.integers(10, size // 2)), y0 + int(rng.integers(10, size // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            d.ellipse([x0, y0, x1, y1], fill=fill)
        elif shape == 1:
            d.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            d.line([x0, y0, x1, y1], fill=fill, width=int(rng.integers(1, 12)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0))))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, float(rng.uniform(3, 10)), (size, size, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def photo(seed: int, size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    """A camera-sized picture: smooth shapes upscaled from a small sketch, plus fine grain noise."""
    sketch = small_image(seed, 512).resize((400, 300))
    base = sketch.resize(size, Image.Resampling.BICUBIC)
    grain = Image.effect_noise(size, 10).convert("RGB")
    return ImageChops.add(base, grain, scale=1.0, offset=-128)


def ensure(folder: Path, n: int, make: Callable[[int], Image.Image], copy_every: int = 0) -> list[Path]:
    """Generate missing files only: the set is cached between runs (photos take ~1 s each)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".generator-v{GENERATOR_VERSION}"
    if not marker.exists():
        for old in folder.glob("*.jpg"):
            old.unlink()
        marker.touch()
    paths = []
    made = 0
    for i in range(n):
        p = folder / f"{i:06d}.jpg"
        if not p.exists():
            if copy_every and i % copy_every == copy_every - 1:
                img = make(i - 1)  # a near duplicate of the previous file: resized and re-encoded
                img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
                img.save(p, "JPEG", quality=75)
            else:
                make(i).save(p, "JPEG", quality=90)
            made += 1
            if made % 50 == 0:
                print(f"  generated {made} in {folder.name}", file=sys.stderr)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- the two paths


def _decode_chunk(paths: list[str]) -> int:
    for p in paths:
        with Image.open(p) as img:
            img.load()
    return len(paths)


def floor(paths: list[Path], workers: int) -> float:
    """Decode-only floor: open + full load() of every file, chunked like inspect_images does it."""
    items = [str(p) for p in paths]
    t0 = time.perf_counter()
    if workers <= 1:
        _decode_chunk(items)
    else:
        chunk = max(1, min(64, -(-len(items) // (workers * 4))))
        with ProcessPoolExecutor(workers, mp_context=pool_context()) as ex:  # same start method as ours
            list(ex.map(_decode_chunk, [items[i : i + chunk] for i in range(0, len(items), chunk)]))
    return time.perf_counter() - t0


def ours(paths: list[Path], workers: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    infos = inspect_images(paths, workers=workers)
    pairs = near_duplicate_pairs([i.phash for i in infos], [i.dhash for i in infos])
    elapsed = time.perf_counter() - t0
    bad = sum(not i.ok for i in infos)
    return elapsed, len(pairs), bad


def warm_page_cache(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass


# ---------------------------------------------------------------- near-dup scaling


def neardup_scaling() -> list[tuple[int, float, int]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in (10_000, 50_000):
        ph = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
        dh = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
        t0 = time.perf_counter()
        near_duplicate_pairs(ph, dh)
        elapsed = time.perf_counter() - t0
        cands = sum(len(i) for i, _ in candidate_pairs(ph, dh))
        rows.append((n, elapsed, cands))
    return rows


# ---------------------------------------------------------------- the commands, end to end

CONFIG = """run: {{name: bench, seed: 0}}
model: {{base: tiny:gemma3}}
data:
  sources:
    - type: manifest
      path: {root}/train.csv
      image_dir: {root}/jpeg/train
      image_extension: .jpg
      label_column: target
      labels: {{"0": benign, "1": malignant}}
      group_column: patient_id
      metadata_columns: [sex, age_approx, anatom_site_general_challenge]
      prompt: "Dermoscopy image of a skin lesion. Is it benign or malignant?"
  split: {{strategy: stratified_group, train: 0.7, val: 0.15, test: 0.15}}
  images: {{max_side: 64}}
  workers: {workers}
  checks: {{min_class_fraction: 0.01}}
"""
LESIONS_PER_PATIENT = 3.0  # what the synthetic generator draws on average
TUNELINE = [sys.executable, "-m", "tuneline.cli"]  # this interpreter's install, not whatever is on PATH


def dermoscopy(folder: Path, images: int, side: int) -> list[Path]:
    """A synthetic ISIC-layout set of about ``images`` images (cached: reused when present)."""
    jpegs = sorted((folder / "jpeg" / "train").glob("*.jpg"))
    if not (folder / "train.csv").is_file():
        patients = max(2, round(images / LESIONS_PER_PATIENT))
        print(f"  generating {folder.name}: {patients} patients at {side}px ...", file=sys.stderr)
        cmd = ["tuneline", "data", "synth", "dermoscopy", str(folder), "--n", str(patients)]
        subprocess.run([*cmd, "--size", str(side), "--prevalence", "0.0176"], check=True)
        jpegs = sorted((folder / "jpeg" / "train").glob("*.jpg"))
    return jpegs


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS GB of the largest process, exit status) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: the dataset failed its checks, still a full run
        print(proc.stderr.read().decode()[-2000:] if proc.stderr else "", file=sys.stderr)
    return wall, usage.ru_maxrss / 2**20, proc.returncode


def listed(folder: Path) -> list[Path]:
    """The images a set's train.csv names (a subset may hardlink into a bigger set's folder)."""
    import csv

    with open(folder / "train.csv", newline="") as fh:
        names = [row["image_name"] for row in csv.DictReader(fh)]
    return [folder / "jpeg" / "train" / f"{name}.jpg" for name in names]


def prepared_sets(root: Path, only: list[str] | None = None) -> list[tuple[Path, int]]:
    """``--data``: the ISIC-shaped sets made beforehand (isic1k ... isic33k, isic_large), in size
    order then the large-image set: (folder, side of its first image)."""
    found = []
    folders = [f for f in root.glob("isic*") if (f / "train.csv").is_file() and (not only or f.name in only)]
    for folder in sorted(folders, key=lambda f: (f.name == "isic_large", len(listed(f)))):
        if (folder / "train.csv").is_file():
            with Image.open(listed(folder)[0]) as im:
                found.append((folder, max(im.size)))
    return found


def commands(args: argparse.Namespace) -> int:
    if args.data:
        prepared = prepared_sets(args.data, args.sets.split(",") if args.sets else None)
        sets = [(len(listed(f)), side) for f, side in prepared]
        folders = [f for f, _ in prepared]
    else:
        sets = [(n, args.side) for n in args.sizes] + (
            [(args.large_count, args.large_side)] if args.large_count else []
        )
        folders = [args.out / f"dermoscopy_{n}_{side}" for n, side in sets]
    print(f"cpus: {len(os.sched_getaffinity(0))}, workers: {args.workers}, data in {args.data or args.out}")
    head = (
        f"{'images':>7} {'side':>5} {'command':<9} {'wall s':>8} {'img/s':>7} {'peak RSS GB':>11} "
        f"{'floor img/s':>11} {'x floor':>7}"
    )
    lines = [head, "-" * len(head)]
    rows: dict[str, list[tuple[int, float, float]]] = {"validate": [], "prepare": []}
    for (n, side), folder in zip(sets, folders, strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        jpegs = listed(folder) if args.data else dermoscopy(folder, n, side)
        cfg = folder / "bench.yaml"
        cfg.write_text(CONFIG.format(root=folder, workers=args.workers))
        over: list[str] = []
        if args.config:  # the user's config (e.g. the melanoma example), pointed at this set
            cfg = args.config.resolve()
            for key, value in (
                ("data.sources.0.path", folder / "train.csv"),
                ("data.sources.0.image_dir", folder / "jpeg" / "train"),
                ("data.workers", args.workers),
            ):
                over += ["--set", f"{key}={value}"]
        warm_page_cache(jpegs)
        t_floor = floor(jpegs, args.workers)
        for name, cmd in (
            ("validate", [*TUNELINE, "data", "validate", str(cfg), *over, "--out", str(folder / "report")]),
            ("prepare", [*TUNELINE, "data", "prepare", str(cfg), *over]),
        ):
            if name == "prepare":
                shutil.rmtree(folder / ".tuneline", ignore_errors=True)  # a new snapshot, not a reuse
            wall, rss, rc = timed(cmd, folder)
            count = len(jpegs)
            if side == args.side:
                rows[name].append((count, wall, rss))
            lines.append(
                f"{count:>7} {side:>5} {name:<9} {wall:>8.1f} {count / wall:>7.1f} {rss:>11.2f} "
                f"{count / t_floor:>11.1f} {t_floor / wall:>7.2f}" + ("" if rc in (0, 1) else f"  exit {rc}")
            )
            print(lines[-1], file=sys.stderr)
    print("\n".join(lines))
    for name, pts in rows.items():
        if len(pts) >= 2:
            (n0, t0, r0), (n1, t1, r1) = pts[0], pts[-1]
            k = math.log(n1 / n0)
            print(
                f"{name}: growth exponent of time {math.log(t1 / t0) / k:.2f}, "
                f"of peak RSS {math.log(r1 / r0) / k:.2f}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="512x512 JPEGs (default 2000)")
    ap.add_argument("--large", type=int, default=100, help="4000x3000 JPEG photos (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="process count for the second row (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tuneline-bench-images")
    ap.add_argument("--commands", action="store_true", help="time tuneline data validate/prepare end to end")
    ap.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 4000, 16000, 33000]
    )
    ap.add_argument("--side", type=int, default=512, help="--commands: image side (default 512)")
    ap.add_argument("--large-count", type=int, default=1000, help="--commands: large images (0: none)")
    ap.add_argument("--large-side", type=int, default=4000, help="--commands: their side (default 4000)")
    ap.add_argument("--sets", help="--data: only these folders (comma-separated names)")
    ap.add_argument(
        "--config",
        type=Path,
        help="--commands: time this config (its first source pointed at each set), not the built-in one",
    )
    ap.add_argument(
        "--data",
        type=Path,
        help="--commands: prepared ISIC-layout sets (DATA/isic*/train.csv, jpeg/train), not generated ones",
    )
    args = ap.parse_args(argv)
    if args.commands:
        return commands(args)

    print(
        f"cpus: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, images in {args.out}"
    )
    sets = [
        ("512x512", ensure(args.out / "small_512", args.small, small_image, copy_every=50), 1.0),
        ("4000x3000", ensure(args.out / "large_4000x3000", args.large, photo), 1.5),
    ]
    worker_counts = sorted({1, max(1, args.workers)})
    header = (
        f"{'set':<10} {'files':>6} {'workers':>7} {'floor img/s':>12} {'ours img/s':>11} {'ours/floor':>10}"
    )
    lines = [header + f"  {'goal':>6}  result   notes", "-" * (len(header) + 30)]
    all_pass = True
    for name, paths, goal in sets:
        if not paths:
            continue
        warm_page_cache(paths)
        for w in worker_counts:
            # Best of --repeat runs, alternating the two paths: this box is shared and noisy, and
            # the minimum is the least disturbed measurement of each.
            t_floor = t_ours = float("inf")
            for _ in range(args.repeat):
                t_floor = min(t_floor, floor(paths, w))
                elapsed, n_pairs, n_bad = ours(paths, w)
                t_ours = min(t_ours, elapsed)
            ratio = t_floor / t_ours
            ok = ratio >= goal
            all_pass &= ok
            n = len(paths)
            lines.append(
                f"{name:<10} {n:>6} {w:>7} {n / t_floor:>12.1f} {n / t_ours:>11.1f} "
                f"{ratio:>10.2f}  >={goal:<4}  {'PASS' if ok else 'FAIL'}     "
                f"{n_pairs} near-dup pairs, {n_bad} bad files"
            )
            print(lines[-1], file=sys.stderr)
    print()
    print("\n".join(lines))

    print("\nnear-duplicate search on random 64-bit hashes (phash + dhash):")
    rows = neardup_scaling()
    for n, t, c in rows:
        print(f"  n={n:>6}: {t:6.3f} s, {c:>10,} candidates = {c / (n * (n - 1) / 2):.2%} of all pairs")
    (n0, t0, _), (n1, t1, _) = rows
    print(
        f"  {n1 // n0}x the hashes took {t1 / t0:.1f}x the time (empirical exponent "
        f"{math.log(t1 / t0) / math.log(n1 / n0):.2f}; all-pairs would be {(n1 / n0) ** 2:.0f}x, exponent 2)"
    )
    print("\nALL PASS" if all_pass else "\nSOME GOALS FAILED")
    return 0 if all_pass else 1


if __name__ == "__main__":
    raise SystemExit(main())
