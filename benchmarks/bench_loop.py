"""Benchmark: the closed loop on data no model has seen, strategy by strategy at the same labelling budget.

A champion is trained on distribution A (sklearn's bundled digits, 8x8). Production traffic then comes from
distribution B: other digits through a new "camera" (a one-pixel shift, a blur, lower contrast and a
brightness cast). The drift monitor's PSI (serving/drift.py) on the image statistics says whether it alerts.
Each strategy of ``tuneline loop select`` (loop/select.py: the same scores and the same near-duplicate
de-dup against each other and against the training images, data/neardup.py) picks ``budget`` requests of a
B pool; the simulated labeller answers from the truth; the model is retrained warm from the champion on the
champion's training data + the new labels; then its accuracy on a B test split and on A's frozen test split
is measured, over several seeds (mean ± standard deviation). The loop's gate guard: the frozen-test accuracy
may drop by at most ``--max-regression`` from the champion's.

The classifier is scikit-learn's multinomial logistic regression on the pixels (warm-started from the
champion's coefficients; convex, so the comparison is of the data each strategy selects, not of optimiser
noise), not a fine-tuned transformer: what this measures is the selection, at a cost this CPU allows for
many seeds.

    OMP_NUM_THREADS=1 python benchmarks/bench_loop.py [--seeds 3] [--budgets 30 60 120]
        [--max-regression 0.02]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from tuneline.loop import select
from tuneline.serving.drift import psi

STRATEGIES = ("uncertainty", "margin", "entropy", "disagreement", "drift", "random")


def camera_b(x: np.ndarray) -> np.ndarray:
    """The shifted camera: 8x8 digits (0..16) shifted one pixel right, blurred, dimmer, with a cast."""
    img = x.reshape(-1, 8, 8)
    img = np.roll(img, 1, axis=2)
    img[:, :, 0] = 0
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blur = sum(pad[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)) / 9.0
    img = 0.5 * img + 0.5 * blur
    return np.clip(img * 0.7 + 3.0, 0, 16).reshape(len(x), 64)


def hashes(x: np.ndarray, folder: Path, tag: str) -> list[tuple[int | None, int | None]]:
    """Perceptual hashes as data validation computes them (images written as upscaled PNGs)."""
    from PIL import Image

    paths = []
    for i, row in enumerate(x):
        p = folder / f"{tag}-{i}.png"
        Image.fromarray((row.reshape(8, 8) * 15.9).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(p)
        paths.append(str(p))
    return select.image_hashes(paths)


def fit(x, y, seed: int, warm=None):
    """Multinomial logistic regression on the pixels; warm-started from ``warm``'s coefficients."""
    from sklearn.linear_model import LogisticRegression

    model = (
        copy.deepcopy(warm) if warm is not None else LogisticRegression(C=0.5, max_iter=300, warm_start=True)
    )
    model.set_params(random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x / 16.0, y)
    return model


def run_seed(seed: int, budgets: list[int], folder: Path, diversities: list[str]) -> dict:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    a_train, a_test, b_pool, b_test = np.split(order, [700, 1000, 1500])
    xb_pool, xb_test = camera_b(x[b_pool]), camera_b(x[b_test])
    champion = fit(x[a_train], y[a_train], seed)
    # a second model for the disagreement strategy's challenger: trained on a bootstrap resample of A
    boot = np.random.default_rng(seed + 1000).choice(a_train, len(a_train))
    other = fit(x[boot], y[boot], seed + 1000)
    acc = lambda m, xs, ys: float((m.predict(xs / 16.0) == ys).mean())  # noqa: E731
    out = {"champion": {"B": acc(champion, xb_test, y[b_test]), "A": acc(champion, x[a_test], y[a_test])}}
    # the drift monitor's verdict on brightness and contrast (PSI >= 0.25 on a feature: shifted)
    feats = lambda xs: np.stack([xs.mean(axis=1), xs.std(axis=1)], axis=1)  # noqa: E731
    fa, fb = feats(x[a_train]), feats(xb_pool)
    out["psi"] = max(psi(fa[:, k], fb[:, k], 10) for k in range(2))
    # de-dup: near duplicates among the pool and of the training images (data validation's index)
    of_train, pairs = select.near_duplicates(
        hashes(xb_pool, folder, f"b{seed}"), hashes(x[a_train], folder, f"a{seed}")
    )
    out["excluded_as_training_duplicates"] = len(of_train)
    p_champ = champion.predict_proba(xb_pool / 16.0)
    p_other = other.predict_proba(xb_pool / 16.0)
    for strategy in STRATEGIES:
        scores = select.strategy_scores(
            strategy,
            len(b_pool),
            probs=p_champ,
            other=p_other,
            features=xb_pool,
            reference=x[a_train],
            seed=seed,
        )
        for diversity in diversities if strategy in select.DIVERSE_STRATEGIES else ("none",):
            name = strategy if diversity == "none" else f"{strategy}+{diversity}"
            for budget in budgets:
                picked = select.select_batch(
                    strategy,
                    scores,
                    budget,
                    features=xb_pool,  # the pixels: what the classifier sees
                    diversity=diversity,
                    exclude=of_train,
                    pairs=pairs,
                    seed=seed,
                )
                xs = np.concatenate([x[a_train], xb_pool[picked]])
                ys = np.concatenate([y[a_train], y[b_pool][picked]])  # the labeller answers from the truth
                model = fit(xs, ys, seed, warm=champion)
                out[(name, budget)] = {
                    "B": acc(model, xb_test, y[b_test]),
                    "A": acc(model, x[a_test], y[a_test]),
                }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", type=int, nargs="+", default=[30, 60, 120])
    ap.add_argument("--max-regression", type=float, default=0.02)
    ap.add_argument(
        "--diversity",
        nargs="+",
        default=["none", "cluster"],
        choices=["none", "cluster"],
        help="loop.diversity settings to compare for the uncertainty-type strategies (rows name+cluster)",
    )
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(s, args.budgets, Path(tmp), args.diversity) for s in range(args.seeds)]

    def ms(values) -> str:
        v = np.asarray(values)
        return f"{v.mean():.3f} ± {v.std():.3f}"

    champ_a = [r["champion"]["A"] for r in runs]
    print(f"digits, champion on A (700 train), traffic from camera B; {args.seeds} seeds, mean ± sd")
    psis = [r["psi"] for r in runs]
    print(f"drift monitor: max PSI on brightness/contrast {ms(psis)} -> "
          f"{'ALERT' if min(psis) >= 0.25 else 'no alert on every seed'} (threshold 0.25)")  # fmt: skip
    excl = [r["excluded_as_training_duplicates"] for r in runs]
    print(f"pool requests skipped as near duplicates of training images: {ms(excl)} of 500\n")
    print(
        f"{'strategy':<20} {'budget':>6}  {'accuracy on B':>15}  {'A frozen test':>15}  "
        f"{'A within max_reg':>16}"
    )
    print(
        f"{'champion':<20} {'-':>6}  {ms([r['champion']['B'] for r in runs]):>15}  {ms(champ_a):>15}  "
        f"{'-':>16}"
    )
    table: dict[tuple[str, int], list[float]] = {}
    names = [
        s if d == "none" else f"{s}+{d}"
        for s in STRATEGIES
        for d in (args.diversity if s in select.DIVERSE_STRATEGIES else ["none"])
    ]
    for budget in args.budgets:
        for strategy in names:
            b = [r[(strategy, budget)]["B"] for r in runs]
            a = [r[(strategy, budget)]["A"] for r in runs]
            ok = sum(ai >= ca - args.max_regression for ai, ca in zip(a, champ_a, strict=True))
            table[(strategy, budget)] = b
            print(f"{strategy:<20} {budget:>6}  {ms(b):>15}  {ms(a):>15}  {f'{ok}/{len(runs)} seeds':>16}")
        print()
    for budget in args.budgets:
        rnd = np.mean(table[("random", budget)])
        for d in args.diversity:
            cands = [s if d == "none" else f"{s}+{d}" for s in ("uncertainty", "margin")]
            best = max(cands, key=lambda s: np.mean(table[(s, budget)]))
            gain = np.mean(table[(best, budget)]) - rnd
            verdict = "beats" if gain > 0 else "does NOT beat"
            print(f"budget {budget}: {best} {verdict} random on B by {gain:+.3f}")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
