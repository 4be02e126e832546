"""The planted defects of ``dermoscopy.generate(defects=True)``: one or more records per check code.

Rows go to ``train.csv`` and a companion chat-JSONL source (``extra.jsonl``); the truth goes to
``defects.json`` (code, record_id, source "file:line", related ids, note), so a test can prove the
validator finds every defect and flags nothing on the clean records.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tuneline.runs import atomic_write_text
from tuneline_synth.dermoscopy import (
    MIN_CLASS_FRACTION,
    QUESTION,
    _distance,
    _Ids,
    _jpeg,
    _Painter,
    _Patient,
    _png,
    _png_header_only,
    _Row,
    _row,
)

FILLER_WORDS = (
    "the lesion was first noticed by the patient several months ago and has slowly changed in colour "
    "and outline since then without bleeding itching or pain reported at any visit family history is "
    "unremarkable for skin cancer and sun exposure was moderate during childhood with occasional burns "
    "on holidays dermoscopy shows a pigmented network that is partly regular with some areas of "
    "structureless brown pigmentation and the surrounding skin looks healthy with mild photodamage"
).split()


class _Planter:
    """Writes defective rows, lines and files, and records what was planted where."""

    def __init__(self, out: Path, n_clean: int, ids: _Ids, painter: _Painter) -> None:
        self.out, self.ids, self.painter, self.quality = out, ids, painter, painter.quality
        self.image_dir = out / "jpeg" / "train"
        self.csv: list[list[str] | str] = []
        self.first_csv_line = n_clean + 2  # header is line 1
        self.jsonl: list[str] = []
        self.truth: list[dict[str, Any]] = []
        self.n_fresh = 0

    def fresh(self) -> Image.Image:
        """A new valid benign lesion image, unlike every other (own seed stream)."""
        return self._draw()[0]

    def fresh_jpeg(self) -> bytes:
        return self._draw()[1]

    def _draw(self) -> tuple[Image.Image, bytes]:
        self.n_fresh += 1
        return self.painter.draw(1, self.n_fresh, False)

    def add_row(self, row: _Row | str) -> str:
        """Append a CSV line; return its source ``train.csv:<line>``."""
        self.csv.append(row if isinstance(row, str) else row.fields(True))
        return f"train.csv:{self.first_csv_line + len(self.csv) - 1}"

    def add_line(self, obj: dict[str, Any] | str) -> str:
        self.jsonl.append(obj if isinstance(obj, str) else json.dumps(obj))
        return f"extra.jsonl:{len(self.jsonl)}"

    def mark(
        self, code: str, record_id: str | None, source: str | None, note: str, related: tuple[str, ...] = ()
    ) -> None:
        entry = {
            "code": code,
            "record_id": record_id,
            "source": source,
            "related": list(related),
            "note": note,
        }
        self.truth.append(entry)

    def image_row(self, code: str, host: _Patient, payload: bytes | None, note: str) -> None:
        """A well-formed benign row whose image file holds ``payload`` (None: no file at all)."""
        name = self.ids.new("ISIC")
        row = _Row(name, host.id, host.sex, f"{host.age:.1f}", "torso", "unknown", "benign", "0", host.split)
        if payload is not None:
            (self.image_dir / f"{name}.jpg").write_bytes(payload)
        self.mark(code, name, self.add_row(row), note)


def _chat(
    line_id: str, content: Any, answer: str | None, group: str, label: str, split: str = "train"
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"id": line_id, "messages": messages, "label": label, "group": group, "split": split}


def _image_question(path: str, text: str = QUESTION) -> list[dict[str, str]]:
    return [{"type": "image", "path": path}, {"type": "text", "text": text}]


def plant(
    out: Path, rows: list[_Row], patients: list[_Patient], ids: _Ids, painter: _Painter
) -> list[list[str] | str]:
    """Plant every defect; write extra.jsonl, the defect images and defects.json; return the CSV lines."""
    rng = random.Random(f"{painter.seed}:defects")
    size, quality = painter.size, painter.quality
    pl = _Planter(out, len(rows), ids, painter)
    by_patient = {p.id: p for p in patients}
    train_patients = [p for p in patients if p.split == "train"]
    train_benign = [r for r in rows if r.split == "train" and not r.malignant]
    if len(train_benign) < 8:
        raise ValueError("defects=True needs at least 8 benign lesions in the train split: raise n_patients")
    img = pl.image_dir

    def host() -> _Patient:
        return rng.choice(train_patients)

    # malformed_row: an unquoted comma in the site makes one field too many.
    p = host()
    bad = [ids.new("ISIC"), p.id, p.sex, f"{p.age:.1f}", "head", "neck", "unknown", "benign", "0", p.split]
    pl.mark(
        "malformed_row",
        None,
        pl.add_row(",".join(bad)),
        "CSV line with an unquoted comma: one field too many",
    )

    # schema_error: an invalid target, an empty patient id (both with valid images).
    row = _row(ids.new("ISIC"), host(), "torso", False, rng)
    (img / f"{row.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.mark(
        "schema_error", row.image_name, pl.add_row(replace(row, target="yes")), "target is 'yes', not 0/1"
    )
    row = _row(ids.new("ISIC"), host(), "lower extremity", False, rng)
    (img / f"{row.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.mark("schema_error", row.image_name, pl.add_row(replace(row, patient_id="")), "empty patient_id")

    # path_outside_root: leaves the image folder (jpeg/train, or the manifest's folder by default).
    p = host()
    row = replace(_row("../../etc/passwd", p, "torso", False, rng), diagnosis="unknown")
    pl.mark("path_outside_root", row.image_name, pl.add_row(row), "image_name climbs out of the data folder")

    # Image files with problems (rows themselves well formed).
    fresh = pl.fresh
    pl.image_row("image_missing", host(), None, "the row's jpg was never written")
    pl.image_row("image_unreadable", host(), b"", "zero-byte .jpg")
    pl.image_row(
        "image_unreadable", host(), b"scanner export failed, no image here\n", "a text file named .jpg"
    )
    data = pl.fresh_jpeg()
    pl.image_row("image_truncated", host(), data[: len(data) // 2], "JPEG cut in half")
    data = _png(fresh())
    pl.image_row("image_truncated", host(), data[: len(data) // 2], "PNG (under .jpg) cut in half")
    buf = io.BytesIO()
    fresh().save(buf, format="PPM")
    pl.image_row("image_format_unsupported", host(), buf.getvalue(), "PPM image under a .jpg name")
    pl.image_row("image_too_small", host(), _jpeg(fresh().resize((8, 8)), quality), "8x8 image")
    pl.image_row("image_too_large", host(), _png_header_only(30000, 30000), "PNG header declares 30000x30000")
    strip = fresh().crop((0, size // 2 - size // 20, size, size // 2 + size // 20)).resize((1200, 60))
    pl.image_row("image_aspect_extreme", host(), _jpeg(strip, quality), "1200x60 image")
    exif = Image.Exif()
    exif[0x0112] = 6
    gray16 = np.asarray(fresh().convert("L"), dtype=np.uint16) * 257
    rgba = fresh().convert("RGBA")
    for payload, note in (
        (_jpeg(fresh().convert("CMYK"), quality), "CMYK JPEG"),
        (_jpeg(fresh(), quality, exif=exif.tobytes()), "JPEG with EXIF orientation 6"),
        (_png(fresh().quantize(64)), "palette PNG under .jpg"),
        (_png(Image.fromarray(gray16)), "16-bit greyscale PNG under .jpg"),
        (_png(rgba), "RGBA PNG under .jpg"),
    ):
        pl.image_row("image_mode_converted", host(), payload, note)

    # Duplicates of clean images: same patient and target unless noted; originals are all different.
    originals = rng.sample(train_benign, 6)

    def copy_row(orig: _Row, payload: bytes, **changes: str) -> tuple[str, str]:
        row = replace(orig, image_name=ids.new("ISIC"), **changes)
        (img / f"{row.image_name}.jpg").write_bytes(payload)
        return row.image_name, pl.add_row(row)

    def original(orig: _Row) -> Image.Image:
        with Image.open(img / f"{orig.image_name}.jpg") as im:
            return im.convert("RGB")

    orig = originals[0]
    rid, src = copy_row(orig, (img / f"{orig.image_name}.jpg").read_bytes())
    pl.mark("duplicate_exact", rid, src, "byte-identical copy under a new image_name", (orig.image_name,))
    c = round(size * 0.04)
    s75 = round(size * 0.75)
    resized = original(originals[2]).resize((s75, s75), Image.Resampling.LANCZOS)
    # A crop moves content against the frame, and some 4% crops land as far (in perceptual-hash
    # distance) as two different lesions do: no threshold could call those copies. Take the first
    # original whose crop stays clearly near (pHash <= 8, pHash + dHash <= 15), so the truth holds.
    for crop_orig in [originals[3]] + [
        r for r in rng.sample(train_benign, len(train_benign)) if r not in originals
    ]:
        cropped = _jpeg(original(crop_orig).crop((c, c, size - c, size - c)).resize((size, size)), quality)
        dp, dd = _distance((img / f"{crop_orig.image_name}.jpg").read_bytes(), cropped)
        if dp <= 8 and dp + dd <= 15:
            break
    near = (
        (originals[1], _jpeg(original(originals[1]), 60), "re-encoded at JPEG quality 60"),
        (originals[2], _jpeg(resized, quality), "resized to 0.75x"),
        (crop_orig, cropped, "cropped 4% per side and resized back"),
    )
    for orig, payload, note in near:
        rid, src = copy_row(orig, payload)
        pl.mark("duplicate_near", rid, src, note, (orig.image_name,))
    # label_conflict: a melanoma's image again, labelled benign (adds no malignant label to the data).
    train_malignant = [r for r in rows if r.split == "train" and r.malignant]
    if train_malignant:
        orig = rng.choice(train_malignant)
        flipped = {"target": "0", "benign_malignant": "benign", "diagnosis": "nevus"}
        note = "byte-identical copy labelled benign (original malignant)"
    else:
        orig = originals[4]
        flipped = {"target": "1", "benign_malignant": "malignant", "diagnosis": "melanoma"}
        note = "byte-identical copy labelled malignant (original benign)"
    rid, src = copy_row(orig, (img / f"{orig.image_name}.jpg").read_bytes(), **flipped)
    pl.mark("label_conflict", rid, src, note, (orig.image_name,))
    pl.mark("duplicate_exact", rid, src, note, (orig.image_name,))
    # A conflict has two sides and neither label can be trusted: the original's row is involved too.
    orig_src = f"train.csv:{rows.index(orig) + 2}"
    pl.mark(
        "label_conflict", orig.image_name, orig_src, f"the original side of the conflict with {rid}", (rid,)
    )

    # split_leakage: a patient on both sides; a near-copy of a train image under another patient in test.
    leaky = _Patient(ids.new("IP"), "female", 55.0, "train")
    a = _row(ids.new("ISIC"), leaky, "torso", False, rng)
    b = _row(ids.new("ISIC"), replace(leaky, split="test"), "upper extremity", False, rng)
    for r in (a, b):
        (img / f"{r.image_name}.jpg").write_bytes(pl.fresh_jpeg())
    pl.add_row(a)
    pl.mark(
        "split_leakage", b.image_name, pl.add_row(b), f"patient {leaky.id} in train and test", (a.image_name,)
    )
    orig = originals[5]
    other = _Patient(ids.new("IP"), by_patient[orig.patient_id].sex, 40.0, "test")
    rid, src = copy_row(orig, _jpeg(original(orig), 70), patient_id=other.id, age="40.0", split="test")
    note = f"JPEG re-encoded copy of train image {orig.image_name} under patient {other.id} in test"
    pl.mark("split_leakage", rid, src, note, (orig.image_name,))
    pl.mark("duplicate_near", rid, src, note, (orig.image_name,))

    n_clean_jsonl = _plant_jsonl(pl, rng)

    # class_imbalance: true for the dataset as a whole (manifest rows with a valid target plus JSONL labels)
    # while the malignant fraction stays below the default data.checks.min_class_fraction.
    targets = [r.target for r in rows] + [line[7] for line in pl.csv if isinstance(line, list)]
    labels = [t for t in targets if t in ("0", "1")]
    labels += ["1" if json.loads(x).get("label") == "malignant" else "0" for x in pl.jsonl[:n_clean_jsonl]]
    fraction = labels.count("1") / len(labels)
    if fraction < MIN_CLASS_FRACTION:
        note = f"malignant is {labels.count('1')} of {len(labels)} labelled records ({fraction:.1%})"
        pl.mark("class_imbalance", None, None, note)
    atomic_write_text(out / "extra.jsonl", "".join(line + "\n" for line in pl.jsonl))
    atomic_write_text(out / "defects.json", json.dumps(pl.truth, indent=2) + "\n")
    return pl.csv


def _plant_jsonl(pl: _Planter, rng: random.Random) -> int:
    """extra.jsonl: clean questions about clean lesion images, then the text-side defects.

    The clean lines have lesion images of their own (``jpeg/extra/``): pointing them at the
    manifest's images would make every one an exact duplicate of a manifest row once both sources
    are validated together. Each line is its own patient (``group``) and carries a ``split``, so a
    predefined split covers this source too. Returns the number of clean lines (they come first).
    """
    extra_dir = pl.out / "jpeg" / "extra"
    extra_dir.mkdir(parents=True, exist_ok=True)
    n_clean = 30
    melanoma = rng.randrange(n_clean)  # one melanoma keeps the dataset imbalanced
    splits = ["val"] * 3 + ["test"] * 3 + ["train"] * (n_clean - 6)
    rng.shuffle(splits)
    for k in range(n_clean):
        line_id, malignant = f"extra-{k + 1:05d}", k == melanoma
        (extra_dir / f"{line_id}.jpg").write_bytes(pl.painter.draw(2, k, malignant)[1])
        answer = "malignant" if malignant else "benign"
        split = "train" if malignant else splits[k]
        content = _image_question(f"jpeg/extra/{line_id}.jpg")
        pl.add_line(_chat(line_id, content, answer, pl.ids.new("IP"), answer, split))
    n = n_clean

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"extra-{n:05d}"

    def image_line(
        text: str = QUESTION, answer: str | None = "benign", label: str = "benign"
    ) -> dict[str, Any]:
        line_id = next_id()
        (extra_dir / f"{line_id}.jpg").write_bytes(pl.fresh_jpeg())
        content = _image_question(f"jpeg/extra/{line_id}.jpg", text)
        return _chat(line_id, content, answer, pl.ids.new("IP"), label)

    line_id = next_id()
    broken = json.dumps(_chat(line_id, QUESTION, "benign", pl.ids.new("IP"), "benign"))[:60]
    pl.mark("malformed_row", None, pl.add_line(broken), "JSONL line cut off mid-object (not valid JSON)")
    obj = image_line(answer=None)
    pl.mark("schema_error", obj["id"], pl.add_line(obj), "conversation without an assistant turn")
    line_id = next_id()
    obj = _chat(line_id, _image_question("../outside.jpg"), "benign", pl.ids.new("IP"), "benign")
    pl.mark(
        "path_outside_root", line_id, pl.add_line(obj), "image path ../outside.jpg leaves the data folder"
    )
    line_id = next_id()
    obj = _chat(line_id, "", "benign", pl.ids.new("IP"), "benign")
    pl.mark("text_empty", line_id, pl.add_line(obj), 'user content "" and no image')
    obj = image_line(answer="", label="")
    pl.mark("text_empty", obj["id"], pl.add_line(obj), 'assistant answer ""')
    words = [rng.choice(FILLER_WORDS) for _ in range(2000)]
    obj = image_line("Clinical history: " + " ".join(words) + ". " + QUESTION)
    pl.mark(
        "token_budget_exceeded", obj["id"], pl.add_line(obj), "about 2,000 words of history in the prompt"
    )
    for text, note in (
        ("Referred by jane.doe@example.com.", "email address"),
        ("Call the patient back on +44 20 7946 0958.", "phone number"),
        ("Paid by card 4111 1111 1111 1111.", "card number (Luhn-valid)"),
        ("Refund to GB82 WEST 1234 5698 7654 32.", "IBAN"),
        ("Patient SSN 123-45-6789.", "US social security number"),
    ):
        obj = image_line(f"{text} {QUESTION}")
        pl.mark("pii_detected", obj["id"], pl.add_line(obj), note)
    return n_clean
