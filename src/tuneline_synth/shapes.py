"""Coloured shapes on a noisy background, with a question and a one-word answer.

Impossible to answer without looking at the image, and written in the same chat JSONL layout a
user's data would have. Question kinds:

- ``colour``: one shape; "What colour is the shape?"
- ``shape``: one shape; "What shape is this?"
- ``left``: two shapes of different colours side by side; "What colour is the shape on the left?"
  The quickstart's task: the answer binds a colour to a position, so a linear probe on the base
  model's mean-pooled embeddings (which carry both colours, but not which one is where) stays near
  0.5 balanced accuracy, while a fine-tune that adapts the vision tower learns to look at one side.
  (Asking left or right at random was tried: the toy model did not learn to follow the question
  in a CPU minute; it learned which two colours are present and stayed at 0.5.)
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from tuneline_synth._io import write_jsonl

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
    "left": "What colour is the shape on the left?",
}


def _background(size: int, rng: random.Random) -> Image.Image:
    bg = tuple(rng.randint(150, 235) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    px = img.load()
    assert px is not None  # a new in-memory image always has its pixels
    for _ in range(size * size // 12):  # speckle noise, so the background is not a flat colour
        x, y = rng.randrange(size), rng.randrange(size)
        px[x, y] = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in bg)
    return img


def _shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    colour: tuple[int, int, int],
    cx: float,
    cy: float,
    r: float,
    a: float,
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=colour)
    else:
        pts = [
            (cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        draw.polygon(pts, fill=colour)


def _draw(shape: str, colour: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    img = _background(size, rng)
    r = rng.uniform(0.28, 0.42) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    a = rng.uniform(0, 2 * math.pi) if shape == "triangle" else 0.0
    _shape(ImageDraw.Draw(img), shape, colour, cx, cy, r, a)
    return img


def _draw_pair(
    shapes: tuple[str, str], colours: tuple[tuple[int, int, int], ...], size: int, rng: random.Random
) -> Image.Image:
    """Two shapes, one in each half of the image (left first), never crossing the midline."""
    img = _background(size, rng)
    draw = ImageDraw.Draw(img)
    half = size / 2
    for k, (shape, colour) in enumerate(zip(shapes, colours, strict=True)):
        r = rng.uniform(0.2, 0.24) * size
        cx = k * half + rng.uniform(r, half - r)
        cy = rng.uniform(r, size - r)
        a = rng.uniform(0, 2 * math.pi) if shape == "triangle" else 0.0
        _shape(draw, shape, colour, cx, cy, r, a)
    return img


def generate(
    out: Path, *, n: int = 400, seed: int = 0, size: int = 48, questions: tuple[str, ...] = ("colour",)
) -> Path:
    """Write ``n`` images under ``out/images`` and ``out/data.jsonl``; return the JSONL path."""
    unknown = set(questions) - set(QUESTIONS)
    if not questions:
        raise ValueError(f"no question kind given; choose from {sorted(QUESTIONS)}")
    if unknown:
        raise ValueError(f"unknown question kind(s) {sorted(unknown)}; choose from {sorted(QUESTIONS)}")
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        kind = questions[i % len(questions)]
        name = f"images/shape-{i:05d}.png"
        extra: dict[str, str] = {}
        if kind == "left":
            pair = rng.sample(sorted(COLOURS), 2)  # two different colours: only the position tells
            kinds = (rng.choice(SHAPES), rng.choice(SHAPES))
            _draw_pair(kinds, (COLOURS[pair[0]], COLOURS[pair[1]]), size, rng).save(out / name)
            colour, shape = pair[0], kinds[0]
            extra = {"right_colour": pair[1], "right_shape": kinds[1]}
        else:
            colour = rng.choice(sorted(COLOURS))
            shape = rng.choice(SHAPES)
            _draw(shape, COLOURS[colour], size, rng).save(out / name)
        answer = shape if kind == "shape" else colour
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
                **extra,
            }
        )
    return write_jsonl(out / "data.jsonl", lines)
