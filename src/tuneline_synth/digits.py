"""Real handwritten digits (scikit-learn's bundled ``load_digits``) as a chat-JSONL image dataset.

A second, non-synthetic example that needs no download: 1,797 scans of 8x8 digits, upscaled
so a vision-language model's image processor has something to look at, with a one-word answer.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from tuneline_synth._io import write_jsonl

QUESTION = "Which digit is this?"


def generate(out: Path, *, seed: int = 0, size: int = 32, n: int | None = None) -> Path:
    """Write ``out/images/digit-NNNNN.png`` and ``out/data.jsonl``; return the JSONL path.

    The records are shuffled with ``seed`` (so a prefix is a fair sample) and ``n`` keeps the
    first ``n`` of them; ``None`` keeps all 1,797.
    """
    from sklearn.datasets import load_digits  # heavy import, only when generating

    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    digits = load_digits()
    order = list(range(len(digits.target)))
    random.Random(seed).shuffle(order)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        order = order[:n]
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, i in enumerate(order, start=1):
        grey = np.clip(digits.images[i] * (255 / 16), 0, 255).round().astype(np.uint8)
        im = Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
        rid = f"digit-{k:05d}"
        rel = f"images/{rid}.png"
        im.save(out / rel)
        label = str(int(digits.target[i]))
        lines.append(
            {
                "id": rid,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "path": rel}, {"type": "text", "text": QUESTION}],
                    },
                    {"role": "assistant", "content": label},
                ],
                "label": label,
            }
        )
    return write_jsonl(out / "data.jsonl", lines)
