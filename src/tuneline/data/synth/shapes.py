"""Coloured shapes on a noisy background, with a question and a one-word answer.

The quickstart's dataset: learnable by a tiny vision-language model in a minute on a CPU,
impossible to answer without looking at the image (the answer is the shape's colour, or its
kind), and written in the same chat JSONL layout a user's data would have.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is this?",
}


def _draw(shape: str, colour: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    bg = tuple(rng.randint(150, 235) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    px = img.load()
    for _ in range(size * size // 12):  # speckle noise, so the background is not a flat colour
        x, y = rng.randrange(size), rng.randrange(size)
        px[x, y] = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in bg)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.28, 0.42) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=colour)
    else:
        a = rng.uniform(0, 2 * math.pi)
        pts = [
            (cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        draw.polygon(pts, fill=colour)
    return img


def generate(
    out: Path, *, n: int = 400, seed: int = 0, size: int = 48, questions: tuple[str, ...] = ("colour",)
) -> Path:
    """Write ``n`` images under ``out/images`` and ``out/data.jsonl``; return the JSONL path."""
    unknown = set(questions) - set(QUESTIONS)
    if unknown:
        raise ValueError(f"unknown question kind(s) {sorted(unknown)}; choose from {sorted(QUESTIONS)}")
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour = rng.choice(sorted(COLOURS))
        shape = rng.choice(SHAPES)
        kind = questions[i % len(questions)]
        name = f"images/shape-{i:05d}.png"
        _draw(shape, COLOURS[colour], size, rng).save(out / name)
        answer = colour if kind == "colour" else shape
        lines.append(
            {
                "id": f"shape-{i:05d}",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "path": name},
                            {"type": "text", "text": QUESTIONS[kind]},
                        ],
                    },
                    {"role": "assistant", "content": answer},
                ],
                "colour": colour,
                "shape": shape,
            }
        )
    path = out / "data.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tmp.replace(path)
    return path
