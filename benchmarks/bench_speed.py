"""Benchmark: the speed bounds that used to be wall-clock asserts inside tests.

A test asserts behaviour; how fast it runs depends on the machine and on whatever else runs on it, so
the time limits live here, measured one after the other on an otherwise idle machine. Each case is the
workload of the test named beside it (the tests still check its result), timed without its setup; the
table prints the measured time against the bound the test held. Exits 1 when any case exceeds its bound.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the workloads are the tests' own generators (tests/ is a package)

Timed = Callable[[], object]


def pii_ordinary_text() -> Timed:
    """tests/data/test_pii.py::test_speed_on_one_megabyte_of_ordinary_text (was < 1 s)."""
    from tests.data.test_pii import _ordinary_text

    from tuneline.data.checks.pii import find_pii

    text = _ordinary_text(1_000_000)
    return lambda: find_pii(text)


def pii_sprinkled() -> Timed:
    """tests/data/test_pii.py::test_speed_with_pii_sprinkled_in (was < 1 s)."""
    from tests.data.test_pii import _ordinary_text

    from tuneline.data.checks.pii import find_pii

    pii = " Contact jane@example.com or 555-123-4567, card 4111 1111 1111 1111. "
    text = pii.join(_ordinary_text(10_000, seed=i) for i in range(100))
    return lambda: find_pii(text)


def bootstrap_metrics() -> Timed:
    """tests/evaluation/test_stats.py::test_bootstrap_metrics_speed (was < 15 s)."""
    from tests.evaluation.test_stats import _binary

    from tuneline.evaluation.stats import bootstrap_metrics as run

    y, _, P = _binary(5000, seed=6)
    return lambda: run(y, P, [0, 1], n_resamples=1000, seed=0)


def near_duplicates() -> Timed:
    """tests/data/test_neardup.py::test_many_random_hashes_are_not_quadratic (was < 5 s)."""
    import numpy as np

    from tuneline.data.neardup import near_duplicate_pairs

    rng = np.random.default_rng(0)
    n = 20_000
    ph = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
    dh = [int(x) for x in rng.integers(0, 2**64, n, dtype=np.uint64)]
    return lambda: near_duplicate_pairs(ph, dh)


def data_report_100k() -> Timed:
    """tests/data/test_report_html.py::test_hundred_thousand_sizes_render_quickly (was < 5 s)."""
    from tests.data.test_report_html import _finding

    from tuneline.data.report_html import render_html

    rng = random.Random(0)
    findings = [
        _finding("duplicate_near", "warning", f"r{i}", "near copy", related=[f"r{i + 1}"])
        for i in range(20_000)
    ]
    sizes = [[rng.randint(16, 6000), rng.randint(16, 6000)] for _ in range(100_000)]
    report = {
        "summary": {"records_in": 100_000, "records_out": 100_000, "labels": {"a": 60_000, "b": 40_000}},
        "findings": findings,
        "dropped": [],
        "images": {"sizes": sizes, "formats": {"JPEG": 100_000}},
    }
    out = Path(tempfile.mkdtemp()) / "big.html"
    return lambda: render_html(report, {}, out, max_rows=1000)


def end_to_end() -> Timed:
    """tests/cli/test_end_to_end.py::test_run_end_to_end: `tuneline run` on the tiny config (was < 60 s)."""
    from tests.conftest import TINY_RUN, write_config
    from typer.testing import CliRunner

    from tuneline.cli import app
    from tuneline_synth.shapes import generate

    tmp = Path(tempfile.mkdtemp())
    generate(tmp / "shapes", n=48, seed=3)
    config = write_config(tmp, TINY_RUN.format(data=tmp / "shapes" / "data.jsonl", steps=6))

    def run() -> None:
        os.chdir(tmp)  # runs/ and .tuneline/ land in the temporary folder
        result = CliRunner().invoke(app, ["run", str(config)])
        assert result.exit_code == 0, result.output

    return run


# name -> (setup returning the timed call, the bound in seconds the test held)
CASES: dict[str, tuple[Callable[[], Timed], float]] = {
    "pii-1mb-ordinary": (pii_ordinary_text, 1.0),
    "pii-1mb-sprinkled": (pii_sprinkled, 1.0),
    "bootstrap-1000x5000": (bootstrap_metrics, 15.0),
    "neardup-20k": (near_duplicates, 5.0),
    "data-report-100k": (data_report_100k, 5.0),
    "tuneline-run-tiny": (end_to_end, 60.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    args = parser.parse_args()
    failed = 0
    print(f"{'case':<22} {'seconds':>8} {'bound':>7} {'ratio':>6}")
    for name, (setup, bound) in CASES.items():
        if args.only and name not in args.only:
            continue
        timed = setup()
        start = time.perf_counter()
        timed()
        elapsed = time.perf_counter() - start
        ratio = elapsed / bound
        failed += ratio > 1
        print(
            f"{name:<22} {elapsed:>8.2f} {bound:>7.1f} {ratio:>6.2f}{'  OVER' if ratio > 1 else ''}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
