"""Product reviews with a sentiment label (positive / negative), as chat JSONL for text classification.

No text dataset ships offline, so this writes one that behaves like real review data rather than a
keyword lookup: reviews of ~110 products in five categories, built from category-specific aspects
(battery life, fit, taste, plot, ...) and generic ones (price, delivery, customer service), each said
in many ways. What makes it hard, as in real data:

* contrast: praise first, then the problem that decides it ("Great sound. Sadly it stopped charging
  after two weeks, so back it goes.") - the overall verdict, not the majority of words, sets the label;
* negation: "not bad at all", "can't complain", "not exactly sturdy", "no longer works";
* sarcasm: "Oh great, another charger that gives up in a week.";
* mixed reviews with no clear verdict: the label is the reviewer's weighing of the aspects, so some
  are ambiguous to any reader;
* label noise: 4% of the labels are flipped (annotators disagree), so no model can reach 100%;
* surface noise: typos, lower case, missing punctuation, exclamation marks.

Each product has a latent quality that sets how likely its reviews are positive, and ``group`` is the
product: a grouped split keeps a product's reviews together and the bootstrap resamples products.
``metadata``: ``category``, ``product`` and ``style`` (plain, contrast, negation, sarcasm, mixed) for
per-slice metrics. The system turn is an instruction for chat models; encoders read the review only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from tuneline_synth._io import write_jsonl

LABELS = ("negative", "positive")
SYSTEM = "Classify the sentiment of this product review as positive or negative."
LABEL_NOISE = 0.04
STYLES = {"plain": 0.42, "contrast": 0.2, "negation": 0.16, "sarcasm": 0.07, "mixed": 0.15}

# category -> (products, {aspect: (positive phrasings, negative phrasings)}); "{p}" is the product.
CATEGORIES: dict[str, tuple[list[str], dict[str, tuple[list[str], list[str]]]]] = {
    "electronics": (
        ["headphones", "phone charger", "bluetooth speaker", "smartwatch", "webcam", "e-reader", "keyboard"],
        {
            "battery": (
                ["the battery easily lasts two days", "battery life is excellent", "it charges really fast"],
                ["the battery is dead by lunchtime", "it takes forever to charge", "battery life is a joke"],
            ),
            "sound": (
                [
                    "the sound is crisp and clear",
                    "audio quality is superb",
                    "the bass is rich without being muddy",
                ],
                [
                    "the sound is tinny and thin",
                    "there is a constant hiss",
                    "audio cuts out every few minutes",
                ],
            ),
            "setup": (
                ["pairing took ten seconds", "setup was painless", "it connected on the first try"],
                [
                    "pairing fails half the time",
                    "the app keeps crashing during setup",
                    "it drops the connection constantly",
                ],
            ),
            "build": (
                [
                    "it feels solid and well made",
                    "the build quality is impressive",
                    "the buttons have a nice click",
                ],
                [
                    "it feels flimsy and cheap",
                    "the plastic creaks when you hold it",
                    "a button broke off in a week",
                ],
            ),
        },
    ),
    "kitchen": (
        ["blender", "coffee grinder", "frying pan", "kettle", "knife set", "toaster", "rice cooker"],
        {
            "performance": (
                [
                    "it crushes ice like nothing",
                    "it heats evenly",
                    "it does exactly what it should, every time",
                ],
                [
                    "it leaves chunks in everything",
                    "it burns one side and leaves the other cold",
                    "it struggles with anything harder than a banana",
                ],
            ),
            "cleaning": (
                ["it is a breeze to clean", "everything goes in the dishwasher", "nothing sticks to it"],
                [
                    "cleaning it is a nightmare",
                    "food gets stuck in every corner",
                    "the coating started peeling after a few washes",
                ],
            ),
            "noise": (
                ["it is surprisingly quiet", "it runs quietly enough for early mornings"],
                ["it is loud enough to wake the whole house", "it rattles and screeches"],
            ),
            "build": (
                ["it feels sturdy and heavy in a good way", "the handle stays cool and feels solid"],
                [
                    "the lid does not close properly",
                    "it started leaking after a month",
                    "the handle is already wobbly",
                ],
            ),
        },
    ),
    "books": (
        ["novel", "cookbook", "biography", "history book", "children's book", "travel guide"],
        {
            "content": (
                [
                    "the story pulled me in from the first page",
                    "the recipes actually work",
                    "it is full of insight",
                ],
                [
                    "the plot goes nowhere",
                    "half the recipes failed for me",
                    "it repeats the same point for 300 pages",
                ],
            ),
            "writing": (
                [
                    "the writing is sharp and funny",
                    "it is beautifully written",
                    "the prose is clear and easy to follow",
                ],
                ["the writing is clumsy", "the dialogue is painfully stiff", "it reads like a first draft"],
            ),
            "print": (
                ["the print and photos are gorgeous", "the binding is solid"],
                ["the print is blurry", "pages fell out on the first read", "the photos are tiny and dark"],
            ),
        },
    ),
    "clothing": (
        ["rain jacket", "running shoes", "wool sweater", "pair of jeans", "backpack", "winter coat"],
        {
            "fit": (
                ["it fits perfectly", "the sizing is spot on", "it is comfortable all day"],
                [
                    "the sizing is way off",
                    "it is tight across the shoulders",
                    "they gave me blisters after an hour",
                ],
            ),
            "material": (
                [
                    "the fabric feels soft and thick",
                    "it kept me completely dry in a downpour",
                    "the stitching is neat",
                ],
                [
                    "the fabric pilled after one wash",
                    "it soaked through in light rain",
                    "the seams are coming apart",
                ],
            ),
            "look": (
                [
                    "the colour is exactly as pictured",
                    "it looks even better in person",
                    "I get compliments every time",
                ],
                [
                    "the colour looks nothing like the photos",
                    "it looks cheap in person",
                    "it faded after two washes",
                ],
            ),
        },
    ),
    "toys": (
        ["puzzle", "board game", "building set", "remote-control car", "plush toy", "science kit"],
        {
            "fun": (
                [
                    "the kids play with it every day",
                    "we laughed through the whole game",
                    "it kept my son busy for hours",
                ],
                [
                    "the kids lost interest after ten minutes",
                    "the rules make no sense",
                    "it is boring after one round",
                ],
            ),
            "durability": (
                ["it survived a toddler", "the pieces are thick and sturdy"],
                ["it broke on the first day", "pieces were missing from the box", "the wheels snapped off"],
            ),
            "instructions": (
                ["the instructions are clear", "assembly was easy"],
                ["the instructions are impossible to follow", "assembly took two adults an afternoon"],
            ),
        },
    ),
}
GENERIC: dict[str, tuple[list[str], list[str]]] = {
    "price": (
        [
            "it is worth every penny",
            "great value for the price",
            "cheaper than the big brands and just as good",
        ],
        ["it is way overpriced", "not worth the money", "you can get better for half the price"],
    ),
    "delivery": (
        ["it arrived a day early", "it came well packed", "delivery was quick"],
        ["it arrived two weeks late", "the box was crushed", "it came with a part missing"],
    ),
    "service": (
        ["customer service replaced it without any fuss", "the seller answered within an hour"],
        [
            "customer service never replied",
            "the seller refused a refund",
            "support just sent me a useless FAQ",
        ],
    ),
}
OPENERS = [
    "Bought this {p} for my daughter.", "Ordered the {p} last month.",
    "I have used this {p} for a few weeks now.", "Got the {p} as a gift.", "Second {p} I have bought.",
    "Picked this {p} up on sale.",
    "Needed a new {p} and went with this one.", "Been using it daily.", "Update after three weeks:", "",
]  # fmt: skip
# (negative, positive): indexed by the review's polarity (a bool).
VERDICTS = (
    ["Returning it.", "Would not recommend.", "Save your money.", "Very disappointed.", "Avoid.",
     "Back it goes.", "What a waste.", "I regret buying this {p}."],
    ["Highly recommend.", "Would buy again.", "Five stars from me.", "Really happy with it.", "Love it.",
     "Exactly what I needed.", "No regrets.", "My new favourite {p}."],
)  # fmt: skip
# Negated cues: "not bad" is praise, "not exactly great" a complaint. (negative, positive) as above.
NEGATIONS = (
    ["It is not exactly great.", "The {a} is nothing special.", "It no longer works.",
     "I wouldn't call it sturdy.", "Not what I hoped for.", "It never worked properly.",
     "I can't say I would buy it again.", "Hardly worth the hype."],
    ["Not bad at all.", "I can't complain about the {a}.", "I have never had a problem with it.",
     "I couldn't be happier with this {p}.", "Honestly no complaints.", "It does not disappoint.",
     "I was not expecting much, but it is not bad at all.", "Nothing to dislike here."],
)  # fmt: skip
SARCASM = [
    "Oh great, another {p} that gives up in a week.", "Wow, a whole five days before it broke. Impressive.",
    "Fantastic, if you enjoy waiting on hold with support.", "Love how it fell apart the moment I opened it.",
    "Just brilliant: the {a} was a letdown by day two.", "Perfect {p}, if you like returning things.",
]  # fmt: skip
CONTRAST = [", but ", ". However, ", ". Sadly, ", ". That said, ", " - although ", ". On the other hand, "]
TYPO_RATE = 0.03  # per word, when a review gets typos


def _aspects(category: str) -> dict[str, tuple[list[str], list[str]]]:
    return {**CATEGORIES[category][1], **GENERIC}


def _clause(
    rng: random.Random, aspects, positive: bool, exclude: AbstractSet[str] = frozenset()
) -> tuple[str, str]:
    name = rng.choice(sorted(set(aspects) - exclude))
    return name, rng.choice(aspects[name][0 if positive else 1])


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?:" else ".")


def _review(rng: random.Random, category: str, product: str, positive: bool, style: str) -> str:
    aspects = _aspects(category)
    fill = {"p": product}
    parts: list[str] = []
    opener = rng.choice(OPENERS)
    if opener and rng.random() < 0.5:
        parts.append(opener)
    if style == "plain":
        used: set[str] = set()
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            name, text = _clause(rng, aspects, positive, used)
            used.add(name)
            parts.append(_sentence(text))
        if rng.random() < 0.6:
            parts.append(rng.choice(VERDICTS[positive]))
    elif style == "contrast":  # the first impression is the opposite of the verdict
        name, first = _clause(rng, aspects, not positive)
        _, second = _clause(rng, aspects, positive, {name})
        parts.append(_sentence(first + rng.choice(CONTRAST) + second))
        if rng.random() < 0.5:
            parts.append(rng.choice(VERDICTS[positive]))
    elif style == "negation":
        name, _ = _clause(rng, aspects, positive)
        fill["a"] = name
        parts.append(rng.choice(NEGATIONS[positive]))
        if rng.random() < 0.4:  # a softer second cue of the same polarity, also negated
            parts.append(rng.choice([n for n in NEGATIONS[positive] if n != parts[-1]]))
    elif style == "sarcasm":  # praise words, negative meaning (always a negative review)
        fill["a"] = rng.choice(sorted(CATEGORIES[category][1]))
        parts.append(rng.choice(SARCASM))
    else:  # mixed: aspects of both signs, no verdict; the label is how the reviewer weighed them
        used = set()
        signs = [positive, not positive, positive] if rng.random() < 0.5 else [not positive, positive]
        for sign in signs:
            name, text = _clause(rng, aspects, sign, used)
            used.add(name)
            parts.append(_sentence(text))
        if rng.random() < 0.5:
            parts.append(rng.choice(["It is okay, I guess.", "Mixed feelings.", "Overall it does the job.",
                                     "Not sure yet.", "Three stars."]))  # fmt: skip
    return " ".join(parts).format(**fill)


def _noise(rng: random.Random, text: str) -> str:
    if rng.random() < 0.15:  # typos: swap two letters inside a word
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) > 4 and w.isalpha() and rng.random() < TYPO_RATE * 4:
                j = rng.randrange(1, len(w) - 2)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        text = " ".join(words)
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.22:
        text = text.replace(".", "")
    elif r < 0.28:
        text = text.rstrip(".") + "!!"
    return text


def generate(out: Path, *, n: int = 2000, seed: int = 0, positive_share: float = 0.55) -> Path:
    """Write ``out/data.jsonl`` with ``n`` labelled reviews (unique texts); return its path."""
    if n < 10:
        raise ValueError(f"n must be at least 10, got {n}")
    if not 0.05 <= positive_share <= 0.95:
        raise ValueError(f"positive_share must be within [0.05, 0.95], got {positive_share}")
    rng = random.Random(seed)
    products = []
    for category, (kinds, _) in sorted(CATEGORIES.items()):
        for kind in kinds:
            for k in range(1, 4):
                # latent quality: most products are fine, some are duds; centred on positive_share
                shift = rng.gauss(0.0, 1.2)
                products.append((category, kind, f"{category}-{kind.replace(' ', '_')}-{k}", shift))
    logit = math.log(positive_share / (1 - positive_share))
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    styles, weights = zip(*STYLES.items(), strict=True)
    attempts = 0
    while len(lines) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError("could not draw enough distinct reviews; lower n")
        category, kind, product_id, shift = rng.choice(products)
        positive = rng.random() < 1 / (1 + math.exp(-(logit + shift)))
        style = rng.choices(styles, weights)[0]
        if style == "sarcasm" and positive:
            style = "negation"
        text = _noise(rng, _review(rng, category, kind, positive, style))
        key = " ".join(text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        label = LABELS[positive]
        if rng.random() < LABEL_NOISE:
            label = LABELS[not positive]
        lines.append(
            {
                "id": f"review-{len(lines) + 1:05d}",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": label},
                ],
                "label": label,
                "group": product_id,
                "category": category,
                "product": kind,
                "style": style,
            }
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_jsonl(out / "data.jsonl", lines, ensure_ascii=False)
