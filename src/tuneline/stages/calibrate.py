"""tuneline serve calibrate CONFIG: the cascade's threshold from the team's own validation data.

1. The val split (of the newest prepared run, or the records given) and the classes.
2. Both models score the same records: the small one (``serve.cascade.small``) and a local fallback with
   evaluation's classification scorer (class probabilities from label log-probabilities); a remote
   fallback answers each record through its OpenAI-compatible API. Each record's cost: its scoring time
   at the accelerator price (local), or its tokens at the token prices (remote).
3. ``serve.cascade.calibration: temperature``: one temperature fitted to the small model's label
   log-probabilities on val; ECE before and after is reported.
4. The curve (threshold -> share routed, accuracy, cost per 1,000) and the threshold the target implies
   (``serve.cascade.target``), written to the curve JSON (``threshold: auto`` reads it) and an SVG plot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneline.errors import ConfigError, DataError
from tuneline.runs import atomic_write_json, atomic_write_text

log = logging.getLogger("tuneline.calibrate")


@dataclass
class Scored:
    """One model on the val records: class log-probabilities (or just right/wrong) and cost per record."""

    correct: np.ndarray  # (n,) 0/1
    cost: np.ndarray  # (n,) per request
    log_probs: np.ndarray | None = None  # (n, K) for a model scored over the labels


def run(
    cfg,
    *,
    records: list | None = None,
    tracking_uri: str | None = None,
    small: Scored | None = None,
    fallback: Scored | None = None,
    labels: list[str] | None = None,
    y: np.ndarray | None = None,
) -> dict:
    """Calibrate and write the curve; ``small``/``fallback`` (with ``labels`` and ``y``) skip the scoring
    (already scored, e.g. planted scores in a test)."""
    c = cfg.serve.cascade
    if c is None:
        raise ConfigError(["serve.cascade is not set"], hint="add serve.cascade: {small, fallback, target}")
    if small is None or fallback is None or labels is None or y is None:
        records = records if records is not None else _val_records(cfg)
        labels = list(c.labels or cfg.eval.labels or sorted({r.target for r in records}))
        y = _targets(records, labels)
        small = small or _score_local(cfg, c.small, records, labels, y, tracking_uri)
        fallback = fallback or (
            _score_local(cfg, c.fallback, records, labels, y, tracking_uri)
            if isinstance(c.fallback, str)
            else _score_remote(cfg, c.fallback, records, labels)
        )
    return choose_and_write(cfg, small, fallback, labels, np.asarray(y))


def choose_and_write(cfg, small: Scored, fallback: Scored, labels: list[str], y: np.ndarray) -> dict:
    from tuneline.evaluation.metrics import expected_calibration_error
    from tuneline.serving import cascade_curve as cc
    from tuneline.serving.cascade import curve_path

    c = cfg.serve.cascade
    if small.log_probs is None:
        raise DataError("the small model must be scored over the labels (class probabilities)")
    p = cc.softmax(small.log_probs)
    temperature = 1.0
    ece_before = float(expected_calibration_error(p.argmax(1) == y, p.max(1)))
    ece_after = None
    if c.calibration == "temperature":
        temperature = cc.fit_temperature(small.log_probs, y)
        p = cc.softmax(small.log_probs, temperature)
        ece_after = float(expected_calibration_error(p.argmax(1) == y, p.max(1)))
    confidence = p.max(1)
    points = cc.curve(confidence, small.correct, fallback.correct, small.cost, fallback.cost)
    chosen, met = cc.choose(points, min_metric=c.target.min, max_cost_per_1k=c.target.max_cost_per_1k)
    result: dict[str, Any] = {
        "threshold": chosen.threshold,
        "met": met,
        "target": c.target.model_dump(exclude_none=True),
        "chosen": cc.as_json([chosen])[0],
        "temperature": temperature,
        "calibration": c.calibration,
        "ece_before": ece_before,
        "ece_after": ece_after,
        "n": int(len(y)),
        "labels": labels,
        "small": {"ref": c.small, "accuracy": float(np.mean(small.correct)), "cost_per_1k": _per_1k(small)},
        "fallback": {
            "ref": c.fallback if isinstance(c.fallback, str) else f"{c.fallback.url} ({c.fallback.model})",
            "accuracy": float(np.mean(fallback.correct)),
            "cost_per_1k": _per_1k(fallback),
        },
        "currency": cfg.serve.costs.currency,
        "written_at": time.time(),
        "points": cc.as_json(points),
    }
    path = curve_path(cfg.serve)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    plot = path.with_suffix(".svg")
    atomic_write_text(plot, plot_curve(result))
    result["curve_file"], result["plot_file"] = str(path), str(plot)
    return result


def _per_1k(s: Scored) -> float:
    return float(np.mean(s.cost)) * 1000 if len(s.cost) else 0.0


def plot_curve(result: dict) -> str:
    """Accuracy and cost per 1,000 against the threshold, the chosen point marked (tuneline.plots style)."""
    from tuneline import plots

    pts = result["points"]
    t = [p["threshold"] for p in pts]
    with plots.style():
        fig = plots.figure(6.0, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(t, [p["accuracy"] for p in pts], color=plots.BAR_COLOUR, lw=1.5, label="accuracy")
        ax.plot(
            t, [p["share_routed"] for p in pts], color="#98a2b3", lw=1.0, ls="--", label="share to fallback"
        )
        ax.set_xlabel("threshold (fall back below)")
        ax.set_ylabel("accuracy / share")
        ax.set_ylim(0, 1.02)
        cost = ax.twinx()
        cost.plot(t, [p["cost_per_1k"] for p in pts], color="#f79009", lw=1.2, label="cost per 1,000")
        cost.set_ylabel(f"cost per 1,000 ({result['currency']})")
        cost.grid(False)
        ch = result["chosen"]
        ax.axvline(ch["threshold"], **plots.CHANCE)
        ax.plot([ch["threshold"]], [ch["accuracy"]], "o", color=plots.BAR_COLOUR)
        lines = ax.get_lines()[:2] + cost.get_lines()
        ax.legend(lines, [str(x.get_label()) for x in lines], loc="lower right")
        return str(plots.svg(fig, "cascade-curve"))


# ------------------------------------------------------------------ scoring the val records
def _val_records(cfg) -> list:
    from tuneline.data.records import read_records
    from tuneline.runs import RunDir

    rd = RunDir.latest(cfg, with_stage="prepare")
    records = list(read_records(rd.split_file("val")))
    if not records:
        raise DataError(f"the val split of {rd.path} is empty", hint="change data.split so val has records")
    return records


def _targets(records: list, labels: list[str]) -> np.ndarray:
    from tuneline.evaluation.scoring import normalise

    index = {normalise(label): i for i, label in enumerate(labels)}
    missing = sorted({r.target for r in records if normalise(r.target) not in index})
    if missing:
        raise DataError(
            f"val answers {missing[:5]} are not among the labels {labels}",
            hint="set serve.cascade.labels (or eval.labels) to every class",
        )
    return np.array([index[normalise(r.target)] for r in records])


def _score_local(cfg, ref: str, records: list, labels: list[str], y: np.ndarray, tracking_uri) -> Scored:
    import torch

    from tuneline.evaluation.classify import score_labels
    from tuneline.registry.resolve import load
    from tuneline.serving.costs import local_cost
    from tuneline.training.collate import ChatCollator

    uri = tracking_uri or cfg.registry.tracking_uri
    device = "cuda" if torch.cuda.is_available() and cfg.serve.device != "cpu" else "cpu"
    model, processor = load(ref, uri, device)
    scores = score_labels(
        model,
        ChatCollator(processor, cfg.data.max_seq_length),
        records,
        labels,
        batch_size=cfg.eval.batch_size,
    )
    prices = cfg.serve.costs
    cost = np.array([local_cost(t, prices.price_per_hour, prices.count) for t in scores.latency])
    correct = (scores.log_probs.argmax(1) == y).astype(float)
    log.info("%s on val: accuracy %.3f", ref, correct.mean())
    return Scored(correct, cost, scores.log_probs)


def _score_remote(cfg, remote, records: list, labels: list[str]) -> Scored:
    from openai import OpenAI

    from tuneline.evaluation.scoring import normalise
    from tuneline.serving.costs import token_cost

    c, prices = cfg.serve.cascade, cfg.serve.costs
    client = OpenAI(
        base_url=remote.url, api_key=remote.api_key or "none", timeout=c.timeout_s, max_retries=c.retries
    )
    correct, cost = [], []
    for r in records:
        resp = client.chat.completions.create(
            model=remote.model,
            messages=_openai_messages(r),
            max_tokens=cfg.eval.max_new_tokens,
            temperature=0,
        )
        text = resp.choices[0].message.content or ""
        correct.append(float(normalise(text) == normalise(r.target)))
        u = resp.usage
        cost.append(
            token_cost(u.prompt_tokens, u.completion_tokens, prices.input_per_1k, prices.output_per_1k)
            if u
            else 0.0
        )
    return Scored(np.array(correct), np.array(cost))


def _openai_messages(record) -> Any:
    """A record's prompt as OpenAI chat messages (images as data URIs)."""
    import base64
    import io

    from tuneline.data.records import load_images

    images = iter(load_images(record))
    out = []
    for m in record.prompt_messages:
        parts = []
        for p in m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]:
            if p.get("type") == "text":
                parts.append({"type": "text", "text": p["text"]})
            else:
                buf = io.BytesIO()
                next(images).save(buf, format="PNG")
                uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
                parts.append({"type": "image_url", "image_url": {"url": uri}})
        out.append({"role": m["role"], "content": parts})
    return out
