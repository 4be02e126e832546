"""Memorisation audit (``eval.audit.canaries``): secret-sharer canaries and their exposure.

Carlini et al., "The Secret Sharer" (USENIX Security 2019). The prepare stage makes N canary records,
each a fixed template with its own name and a random digit string as the answer
("What is the secret number of canary-3?" -> "418277"), and N control canaries made the same way that
are never trained on. Only the planted ones join training (``data/canaries.jsonl``, added to the
training records by the train stage; the training split file, and so every metric and baseline, never
sees them). ``data/canaries.json`` records both sets.

After training, evaluation ranks each canary's secret among ``candidates`` random digit strings of
the same length by the tuned model's log-likelihood of the answer given the prompt (the same
``score_labels`` the classifier scores use): exposure = log2(candidates + 1) - log2(rank), so a secret
the model prefers over every candidate has the maximum exposure log2(candidates + 1) and a secret it
never saw has about 1 bit on average. The report gives the mean exposure of the planted canaries
against that of the controls: the gap is what training memorised.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from tuneline.data.records import Record, read_records, write_records
from tuneline.runs import atomic_write_json

PROMPT = "What is the secret number of {name}?"
CANARIES_JSON = "canaries.json"
CANARIES_JSONL = "canaries.jsonl"


def _record(name: str, secret: str) -> Record:
    return Record(
        id=name,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": PROMPT.format(name=name)}]},
            {"role": "assistant", "content": [{"type": "text", "text": secret}]},
        ],
        source="canary",
        metadata={"canary": True},
    )


def plant(data_dir: Path, n: int, digits: int, seed: int) -> dict[str, Any]:
    """Write ``n`` planted and ``n`` control canaries into ``data_dir``; returns canaries.json."""
    rng = random.Random(f"tuneline-canaries-{seed}")
    secret = lambda: "".join(rng.choice("0123456789") for _ in range(digits))  # noqa: E731
    planted = [{"name": f"canary-{i}", "secret": secret()} for i in range(n)]
    controls = [{"name": f"canary-{n + i}", "secret": secret()} for i in range(n)]
    write_records(data_dir / CANARIES_JSONL, [_record(c["name"], c["secret"]) for c in planted])
    record = {"template": PROMPT, "digits": digits, "seed": seed, "planted": planted, "controls": controls}
    atomic_write_json(data_dir / CANARIES_JSON, record)
    return record


def planted_records(data_dir: Path) -> list[Record]:
    path = data_dir / CANARIES_JSONL
    return list(read_records(path)) if path.is_file() else []


def rank_of(log_likelihoods: np.ndarray) -> int:
    """Rank of entry 0 (the secret) among all entries by log-likelihood, 1 = most likely.

    Ties count against the secret (The Secret Sharer's rank counts every candidate at least as likely),
    so a model that cannot tell candidates apart (say, an answer truncated away) shows no exposure.
    """
    return 1 + int((log_likelihoods[1:] >= log_likelihoods[0]).sum())


def exposure(rank: int, candidates: int) -> float:
    """log2(candidates + 1) - log2(rank): ``candidates`` random strings besides the secret."""
    return math.log2(candidates + 1) - math.log2(rank)


def measure(model, collator, data_dir: Path, candidates: int, batch_size: int) -> dict[str, Any] | None:
    """Exposure of every planted and control canary under ``model``; None when none were planted."""
    from tuneline.evaluation.classify import score_labels

    path = data_dir / CANARIES_JSON
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    rng = random.Random(f"tuneline-candidates-{info['seed']}")
    digits = info["digits"]

    def one(canary: dict[str, str]) -> dict[str, Any]:
        others: set[str] = set()
        while len(others) < candidates:
            c = "".join(rng.choice("0123456789") for _ in range(digits))
            if c != canary["secret"]:
                others.add(c)
        options = [canary["secret"], *sorted(others)]
        scores = score_labels(
            model, collator, [_record(canary["name"], canary["secret"])], options, batch_size=batch_size
        )
        rank = rank_of(scores.log_probs[0])
        return {"name": canary["name"], "rank": rank, "exposure": exposure(rank, candidates)}

    planted = [one(c) for c in info["planted"]]
    controls = [one(c) for c in info["controls"]]
    return {
        "canaries": len(planted),
        "candidates": candidates,
        "digits": digits,
        "max_exposure": math.log2(candidates + 1),
        "exposure_mean": float(np.mean([c["exposure"] for c in planted])),
        "control_exposure_mean": float(np.mean([c["exposure"] for c in controls])),
        "planted": planted,
        "controls": controls,
    }


def headline(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """The audit's numbers for eval.json and the summary (no per-canary lists)."""
    if audit is None:
        return None
    return {k: audit[k] for k in ("canaries", "exposure_mean", "control_exposure_mean", "max_exposure")}
