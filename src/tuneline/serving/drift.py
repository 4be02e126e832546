"""Drift: how far live traffic has moved from what the model was trained on.

A reference profile is computed at training time from the training split of the data snapshot and saved
beside the adapter (``drift_reference.json``, so it travels with the registered version):

* per-image features: width, height, brightness (mean luma), contrast (luma std), mean red/green/blue,
  saturation; per-prompt features: characters and words of the user's text;
* image embeddings: the base model's vision encoder (mean-pooled last hidden state) where the family has
  one that works on its own, otherwise a fixed cheap embedding (an 8x8 grey thumbnail and 8-bin colour
  histograms);
* label rates (answers of the training records), compared with the live prediction rates.

The server keeps a rolling window of the same features from live requests and computes, per feature,
the population stability index (PSI, on the reference's quantile bins) and the two-sample
Kolmogorov-Smirnov test, and on embeddings the maximum mean discrepancy (RBF kernel, median bandwidth)
with a permutation test. A feature counts as shifted when its PSI reaches ``psi_threshold`` and its KS
p-value is below ``ks_alpha``. The drift score is the largest PSI among features whose KS test rejects
(a PSI alone is noisy on small windows); the alert is raised when the score reaches the threshold or
the MMD p-value is below ``mmd_alpha``. Prediction rates are reported (a PSI against the training label
rates) but do not raise
the alert: they move with the model's errors as much as with the inputs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

log = logging.getLogger("tuneline.serve")

REFERENCE_FILE = "drift_reference.json"
IMAGE_FEATURES = ("width", "height", "brightness", "contrast", "red", "green", "blue", "saturation")
TEXT_FEATURES = ("prompt_chars", "prompt_words")
OTHER = "<other>"
_EPS = 1e-4


# ------------------------------------------------------------------ features
def image_features(img) -> dict[str, float]:
    """Cheap statistics of one image, on a thumbnail (decoding cost aside, about 0.1 ms)."""
    w, h = img.size
    small = img.convert("RGB")
    small.thumbnail((64, 64))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return {
        "width": float(w),
        "height": float(h),
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "red": float(rgb[..., 0].mean()),
        "green": float(rgb[..., 1].mean()),
        "blue": float(rgb[..., 2].mean()),
        "saturation": float(sat.mean()),
    }


def text_features(text: str) -> dict[str, float]:
    return {"prompt_chars": float(len(text)), "prompt_words": float(len(text.split()))}


def histogram_embedding(img) -> np.ndarray:
    """A fixed 88-dimensional embedding: 8x8 grey thumbnail and 8-bin histograms of R, G and B."""
    rgb = img.convert("RGB")
    grey = np.asarray(rgb.convert("L").resize((8, 8)), dtype=np.float32).ravel() / 255.0
    arr = np.asarray(rgb.resize((32, 32)), dtype=np.int64)
    hists = [np.bincount(arr[..., c].ravel() // 32, minlength=8) / arr[..., c].size for c in range(3)]
    return np.concatenate([grey, *hists]).astype(np.float32)


def vision_embeddings(model, processor, images: list[Any]) -> np.ndarray | None:
    """Mean-pooled output of the base model's vision encoder, one row per image; None when the family's
    encoder does not take plain pixel batches (e.g. Qwen-VL's packed patches) or there is none."""
    import torch

    family = processor.family
    if not family.multimodal or not family.vision_modules or not images:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tower = base
    try:
        for part in family.vision_modules[0].split("."):
            tower = getattr(tower, part)
        image_processor = processor.inner.image_processor
        pixels = image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pv = pixels["pixel_values"].to(next(tower.parameters()).device, next(tower.parameters()).dtype)
        with torch.inference_mode():
            out = tower(pixel_values=pv)
        hidden = getattr(out, "last_hidden_state", out)
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or hidden.shape[0] != len(images):
            return None
        return hidden.float().mean(dim=1).cpu().numpy()
    except Exception:  # noqa: BLE001 - any family quirk: fall back to the histogram embedding
        log.debug("vision embedding unavailable for %s", family.name, exc_info=True)
        return None


def normalise_label(text: str) -> str:
    return " ".join(text.lower().strip().strip(".!?").split())


# ------------------------------------------------------------------ reference profile
def build_reference(
    records: Iterable[Any],
    *,
    embed: Callable[[list[Any]], np.ndarray | None] | None = None,
    max_records: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile of training records (canonical Records with image paths): features, embeddings, labels.

    ``embed`` maps a list of PIL images to vision-encoder embeddings (None: the histogram embedding).
    """
    from PIL import Image

    records = list(records)
    rng = np.random.default_rng(seed)
    if len(records) > max_records:
        records = [records[i] for i in sorted(rng.choice(len(records), max_records, replace=False))]
    features: dict[str, list[float]] = {k: [] for k in (*IMAGE_FEATURES, *TEXT_FEATURES)}
    images = []
    labels: Counter[str] = Counter()
    for rec in records:
        prompt = " ".join(
            p["text"]
            for m in rec.prompt_messages
            if m["role"] == "user"
            for p in m["content"]
            if p["type"] == "text"
        )
        for k, v in text_features(prompt).items():
            features[k].append(v)
        for path in rec.images:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGB")
            for k, v in image_features(img).items():
                features[k].append(v)
            images.append(img)
        labels[normalise_label(rec.target)] += 1
    kind, emb = "histogram", None
    if images and embed is not None:
        emb = embed(images)
        if emb is not None:
            kind = "vision"
    if images and emb is None:
        emb = np.stack([histogram_embedding(im) for im in images])
    total = sum(labels.values()) or 1
    return {
        "format": 1,
        "created": time.time(),
        "n_records": len(records),
        "features": {k: v for k, v in features.items() if v},
        "embedding_kind": kind if images else None,
        "embeddings": np.round(emb, 5).tolist() if emb is not None else [],
        "label_rates": {k: v / total for k, v in labels.most_common()},
    }


# ------------------------------------------------------------------ statistics
def psi(reference: np.ndarray, live: np.ndarray, bins: int) -> float:
    """Population stability index of ``live`` against ``reference`` on the reference's quantile bins."""
    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    # Plus a bin below the reference's minimum and one above its maximum: live values outside the range
    # seen in training (or a new value of a constant feature) land in bins the reference leaves empty.
    lo, hi = float(reference.min()), float(np.nextafter(reference.max(), np.inf))
    edges = np.unique(np.concatenate([[lo], inner, [hi]]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    cur = np.bincount(np.searchsorted(edges, live, side="right"), minlength=edges.size + 1)
    p = np.maximum(ref / ref.sum(), _EPS)
    q = np.maximum(cur / cur.sum(), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical_psi(reference: dict[str, float], live: list[str]) -> float:
    cats = list(reference) + [OTHER]
    counts = Counter(x if x in reference else OTHER for x in live)
    p = np.maximum(np.array([reference.get(c, 0.0) for c in cats]), _EPS)
    q = np.maximum(np.array([counts[c] / max(len(live), 1) for c in cats]), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-distance bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    med = np.median(d2[np.triu_indices_from(d2, k=1)])
    k = np.exp(-d2 / max(med, 1e-12))
    n, m = len(x), len(y)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        kxx, kyy, kxy = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
        return float(
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )

    idx = np.arange(n + m)
    observed = stat(idx)
    rng = np.random.default_rng(seed)
    exceed = sum(stat(rng.permutation(idx)) >= observed for _ in range(permutations))
    return observed, (1 + exceed) / (1 + permutations)


# ------------------------------------------------------------------ the live monitor
class DriftMonitor:
    """A rolling window of live features compared with a reference profile."""

    def __init__(
        self, cfg, reference: dict | None, *, embed: Callable[[list], np.ndarray | None] | None = None
    ):
        self.cfg = cfg
        self.embed = embed
        self._lock = threading.Lock()
        self._window: deque[dict[str, float]] = deque(maxlen=cfg.window)
        self._emb: deque[np.ndarray] = deque(maxlen=cfg.window)
        self._pending_images: list[Any] = []
        self._predictions: deque[str] = deque(maxlen=cfg.window)
        self._since_check = 0
        self._checking = False
        self.report: dict[str, Any] = {"status": "collecting", "alert": False, "score": None}
        self.on_report: Callable[[dict], None] | None = None
        self.set_reference(reference)

    def set_reference(self, reference: dict | None) -> None:
        with self._lock:
            self.reference = reference
            kind = (reference or {}).get("embedding_kind")
            if self.cfg.embedding != "auto":
                kind = self.cfg.embedding if kind == self.cfg.embedding else None
            self.embedding_kind = kind
            self._ref_emb = np.asarray((reference or {}).get("embeddings") or [], dtype=np.float32)

    def add(self, images: list[Any], prompt: str, prediction: str | None = None) -> bool:
        """Record one request; True when a recomputation is due (run ``check`` off the event loop)."""
        if self.reference is None:
            return False
        row = text_features(prompt)
        with self._lock:
            for img in images or [None]:
                feats = dict(row)
                if img is not None:
                    feats.update(image_features(img))
                    if self.embedding_kind == "histogram":
                        self._emb.append(histogram_embedding(img))
                    elif self.embedding_kind == "vision":
                        thumb = img.convert("RGB")
                        thumb.thumbnail((448, 448))
                        self._pending_images.append(thumb)
                self._window.append(feats)
            if prediction is not None:
                self._predictions.append(normalise_label(prediction))
            self._since_check += 1
            due = self._since_check >= self.cfg.check_every and not self._checking
            if due:
                self._checking = True
                self._since_check = 0
        return due

    def check(self) -> dict[str, Any]:
        """Recompute the report (a few tens of ms); thread-safe."""
        try:
            with self._lock:
                pending, self._pending_images = self._pending_images, []
            if pending and self.embed is not None:
                emb = self.embed(pending)
                if emb is not None:
                    with self._lock:
                        self._emb.extend(np.asarray(emb, dtype=np.float32))
            with self._lock:
                window = list(self._window)
                emb_live = np.asarray(list(self._emb), dtype=np.float32)
                preds = list(self._predictions)
            report = self._compute(window, emb_live, preds)
        finally:
            with self._lock:
                self._checking = False
        self.report = report
        if self.on_report:
            self.on_report(report)
        return report

    def _compute(self, window: list[dict[str, float]], emb_live: np.ndarray, preds: list[str]) -> dict:
        from scipy.stats import ks_2samp

        cfg, ref = self.cfg, self.reference or {}
        out: dict[str, Any] = {
            "status": "collecting",
            "window": len(window),
            "min_samples": cfg.min_samples,
            "psi_threshold": cfg.psi_threshold,
            "alert": False,
            "score": None,
            "features": {},
            "shifted": [],
            "embedding": None,
            "predictions": None,
        }
        if self.reference is None:
            out["status"] = "no_reference"
            return out
        if len(window) < cfg.min_samples:
            return out
        out["status"] = "ok"
        scores = []
        for name, ref_values in ref.get("features", {}).items():
            live = np.array([w[name] for w in window if name in w], dtype=np.float64)
            if live.size < cfg.min_samples:
                continue
            r = np.asarray(ref_values, dtype=np.float64)
            p = psi(r, live, cfg.bins)
            ks = ks_2samp(r, live)
            shifted = p >= cfg.psi_threshold and float(ks.pvalue) < cfg.ks_alpha
            out["features"][name] = {
                "psi": round(p, 4),
                "ks": round(float(ks.statistic), 4),
                "ks_pvalue": float(ks.pvalue),
                "reference_mean": float(r.mean()),
                "live_mean": float(live.mean()),
                "shifted": shifted,
            }
            # A PSI on a window of a few hundred requests is noisy (about (bins - 1) * (1/n + 1/m) from
            # sampling alone): it counts towards the score only where the KS test says the shift is real.
            scores.append(p if float(ks.pvalue) < cfg.ks_alpha else 0.0)
            if shifted:
                out["shifted"].append(name)
        out["score"] = round(max(scores), 4) if scores else None
        if self.embedding_kind and self._ref_emb.size and len(emb_live) >= cfg.min_samples:
            rng = np.random.default_rng(0)
            x = self._ref_emb
            if len(x) > 200:
                x = x[rng.choice(len(x), 200, replace=False)]
            y = emb_live[-200:]
            if x.shape[1] == y.shape[1]:
                mmd, pval = mmd_test(x, y, cfg.mmd_permutations)
                out["embedding"] = {
                    "kind": self.embedding_kind,
                    "mmd2": round(mmd, 6),
                    "pvalue": pval,
                    "shifted": pval < cfg.mmd_alpha,
                }
        if ref.get("label_rates") and len(preds) >= cfg.min_samples:
            live_rates = Counter(p if p in ref["label_rates"] else OTHER for p in preds)
            out["predictions"] = {
                "psi": round(categorical_psi(ref["label_rates"], preds), 4),
                "reference_rates": ref["label_rates"],
                "live_rates": {k: v / len(preds) for k, v in live_rates.most_common()},
            }
        out["alert"] = bool(out["shifted"]) or bool(out["embedding"] and out["embedding"]["shifted"])
        if not math.isfinite(out["score"] or 0.0):
            out["score"] = None
        return out
