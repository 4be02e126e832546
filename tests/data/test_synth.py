"""The synthetic datasets: ISIC-layout dermoscopy (clean and with planted defects) and sklearn digits."""

from __future__ import annotations

import csv
import io
import json
import struct
from collections import Counter, defaultdict
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from tuneline.data.findings import CHECKS
from tuneline_synth import dermoscopy, digits, shapes

ISIC_HEADER = (
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
)
SITES = {"head/neck", "upper extremity", "lower extremity", "torso", "palms/soles", "oral/genital"}
BENIGN = {"nevus", "unknown", "seborrheic keratosis", "lentigo NOS"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("derm-clean")
    dermoscopy.generate(out, n_patients=40, size=128, seed=1)
    return out


@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("derm-defects")
    dermoscopy.generate(out, n_patients=20, size=128, seed=2, defects=True)
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "train.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _truth(out: Path) -> list[dict]:
    return json.loads((out / "defects.json").read_text())


def _clean_rows(out: Path) -> list[dict[str, str]]:
    planted = {e["record_id"] for e in _truth(out)} | {e["source"] for e in _truth(out)}
    rows = []
    for line_no, row in enumerate(_rows(out), start=2):
        if row["image_name"] not in planted and f"train.csv:{line_no}" not in planted:
            rows.append(row)
    return rows


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes(tmp_path):
    a = dermoscopy.generate(tmp_path / "a", n_patients=6, size=64, seed=5, defects=False)
    b = dermoscopy.generate(tmp_path / "b", n_patients=6, size=64, seed=5, defects=False)
    assert a.read_bytes() == b.read_bytes()
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    c = dermoscopy.generate(tmp_path / "c", n_patients=6, size=64, seed=6)
    assert c.read_bytes() != a.read_bytes()


def test_defects_run_is_deterministic_and_keeps_the_clean_rows(tmp_path, defective):
    dermoscopy.generate(tmp_path, n_patients=20, size=128, seed=2, defects=True)
    assert _tree(tmp_path) == _tree(defective)
    plain = tmp_path / "plain"
    dermoscopy.generate(plain, n_patients=20, size=128, seed=2)
    plain_rows = _rows(plain)
    # Same clean rows and images with or without defects; the defects run only adds the split column.
    assert [
        {k: v for k, v in r.items() if k != "split"} for r in _rows(defective)[: len(plain_rows)]
    ] == plain_rows
    for r in plain_rows[:5]:
        name = f"jpeg/train/{r['image_name']}.jpg"
        assert (plain / name).read_bytes() == (defective / name).read_bytes()


def test_manifest_is_in_the_isic_2020_layout(clean):
    text = (clean / "train.csv").read_text()
    assert text.split("\n", 1)[0] == ISIC_HEADER
    assert "\r" not in text and text.endswith("\n")
    rows = _rows(clean)
    names = [r["image_name"] for r in rows]
    assert len(set(names)) == len(names)
    for r in rows:
        assert r["image_name"].startswith("ISIC_") and len(r["image_name"]) == 12
        assert r["patient_id"].startswith("IP_") and len(r["patient_id"]) == 10
        assert r["sex"] in ("male", "female")
        age = float(r["age_approx"])
        assert r["age_approx"] == f"{age:.1f}" and age % 5 == 0 and 20 <= age <= 85
        assert r["anatom_site_general_challenge"] in SITES
        if r["target"] == "1":
            assert (r["diagnosis"], r["benign_malignant"]) == ("melanoma", "malignant")
        else:
            assert r["target"] == "0" and r["diagnosis"] in BENIGN and r["benign_malignant"] == "benign"
        assert (clean / "jpeg" / "train" / f"{r['image_name']}.jpg").is_file()
    assert not (clean / "defects.json").exists() and not (clean / "extra.jsonl").exists()


def test_patients_have_several_lesions_and_consistent_demographics(clean):
    by_patient = defaultdict(list)
    for r in _rows(clean):
        by_patient[r["patient_id"]].append(r)
    assert len(by_patient) == 40
    assert max(len(v) for v in by_patient.values()) >= 3
    for lesions in by_patient.values():
        assert len({(r["sex"], r["age_approx"]) for r in lesions}) == 1


def test_prevalence_is_roughly_honoured(clean, tmp_path):
    rows = _rows(clean)
    malignant = [r for r in rows if r["target"] == "1"]
    assert 0.03 <= len(malignant) / len(rows) <= 0.05
    assert len({r["patient_id"] for r in malignant}) >= 2
    dermoscopy.generate(tmp_path, n_patients=2, size=32, prevalence=0.0)
    tiny = _rows(tmp_path)
    assert len({r["patient_id"] for r in tiny if r["target"] == "1"}) == 2


def _lesion_stats(path: Path) -> tuple[float, float]:
    """(dark area fraction, colour spread inside it) within the central disc (no dermoscope ring)."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    n = a.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    disc = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 < (0.45 * n) ** 2
    lum = a.mean(-1)
    mask = disc & (lum < 0.72 * np.median(lum[disc]))
    if mask.sum() < 5:
        return float(mask.mean()), 0.0
    chroma = a[mask] - a[mask].mean(1, keepdims=True)
    return float(mask.mean()), float(chroma.std(0).mean())


def test_malignant_lesions_are_larger_and_more_colourful(clean):
    stats: dict[str, list[tuple[float, float]]] = {"0": [], "1": []}
    for r in _rows(clean):
        stats[r["target"]].append(_lesion_stats(clean / "jpeg" / "train" / f"{r['image_name']}.jpg"))
    benign, malignant = np.array(stats["0"]), np.array(stats["1"])
    assert malignant[:, 0].mean() > 2 * benign[:, 0].mean()  # Diameter
    assert malignant[:, 1].mean() > 1.8 * benign[:, 1].mean()  # Colours


def test_clean_images_are_rgb_baseline_jpegs_and_pairwise_distinct(clean, defective):
    for out, rows in ((clean, _rows(clean)), (defective, _clean_rows(defective))):
        hashes = []
        for r in rows:
            with Image.open(out / "jpeg" / "train" / f"{r['image_name']}.jpg") as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (128, 128))
                assert not im.info.get("progressive") and im.getexif().get(0x0112) is None
                im.load()
                hashes.append(imagehash.phash(im))
        closest = min(a - b for i, a in enumerate(hashes) for b in hashes[i + 1 :])
        assert closest >= dermoscopy._Painter.MIN_PHASH


def test_every_check_is_planted_and_the_truth_points_at_real_records(defective):
    truth = _truth(defective)
    assert set(CHECKS) <= {e["code"] for e in truth}
    counts = Counter(e["code"] for e in truth)
    for code in ("malformed_row", "schema_error", "path_outside_root", "image_unreadable", "image_truncated"):
        assert counts[code] >= 2
    csv_lines = (defective / "train.csv").read_text().split("\n")
    jsonl_lines = (defective / "extra.jsonl").read_text().split("\n")
    assert csv_lines[0] == ISIC_HEADER + ",split"
    ids = {r["image_name"] for r in _rows(defective)}
    for line in jsonl_lines:
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError):
            pass
    for e in truth:
        assert set(e) == {"code", "record_id", "source", "related", "note"} and e["note"]
        assert all(rid in ids for rid in e["related"])
        if e["code"] == "class_imbalance":
            assert e["record_id"] is None and e["source"] is None
            continue
        name, line_no = e["source"].rsplit(":", 1)
        line = {"train.csv": csv_lines, "extra.jsonl": jsonl_lines}[name][int(line_no) - 1]
        if e["code"] == "malformed_row":
            assert e["record_id"] is None
            if name == "train.csv":
                assert len(next(csv.reader([line]))) != len(csv_lines[0].split(","))
            else:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(line)
        elif name == "train.csv":
            assert next(csv.reader([line]))[0] == e["record_id"]
        else:
            assert json.loads(line)["id"] == e["record_id"]


def test_planted_images_have_the_planted_problem(defective):
    def payload(e: dict) -> bytes:
        return (defective / "jpeg" / "train" / f"{e['record_id']}.jpg").read_bytes()

    by_note = {e["note"]: e for e in _truth(defective)}
    modes = {"CMYK JPEG": "CMYK", "palette PNG under .jpg": "P", "RGBA PNG under .jpg": "RGBA"}
    for note, mode in modes.items():
        assert Image.open(io.BytesIO(payload(by_note[note]))).mode == mode
    assert Image.open(io.BytesIO(payload(by_note["16-bit greyscale PNG under .jpg"]))).mode.startswith("I")
    assert Image.open(io.BytesIO(payload(by_note["JPEG with EXIF orientation 6"]))).getexif()[0x0112] == 6
    assert Image.open(io.BytesIO(payload(by_note["8x8 image"]))).size == (8, 8)
    assert Image.open(io.BytesIO(payload(by_note["1200x60 image"]))).size == (1200, 60)
    assert Image.open(io.BytesIO(payload(by_note["PPM image under a .jpg name"]))).format == "PPM"
    assert payload(by_note["zero-byte .jpg"]) == b""
    bomb = payload(by_note["PNG header declares 30000x30000"])
    assert len(bomb) < 1000 and struct.unpack(">II", bomb[16:24]) == (30000, 30000)
    for note in ("JPEG cut in half", "PNG (under .jpg) cut in half"):
        with pytest.raises(OSError):
            Image.open(io.BytesIO(payload(by_note[note]))).load()
    missing = next(e for e in _truth(defective) if e["code"] == "image_missing")
    assert not (defective / "jpeg" / "train" / f"{missing['record_id']}.jpg").exists()
    for e in _truth(defective):
        if e["code"] in ("duplicate_exact", "duplicate_near"):
            with Image.open(defective / "jpeg" / "train" / f"{e['related'][0]}.jpg") as a:
                with Image.open(io.BytesIO(payload(e))) as b:
                    # closer than any two distinct images are allowed to be
                    assert imagehash.phash(a) - imagehash.phash(b) < dermoscopy._Painter.MIN_PHASH
            if e["code"] == "duplicate_exact":
                assert payload(e) == (defective / "jpeg" / "train" / f"{e['related'][0]}.jpg").read_bytes()


def test_splits_and_leakage(defective):
    rows = {r["image_name"]: r for r in _rows(defective)}
    clean = _clean_rows(defective)
    assert {r["split"] for r in clean} == {"train", "val", "test"}
    splits_of = defaultdict(set)
    for r in clean:
        splits_of[r["patient_id"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())  # clean rows never leak
    leaks = [e for e in _truth(defective) if e["code"] == "split_leakage"]
    assert len(leaks) == 2
    for e in leaks:
        assert rows[e["record_id"]]["split"] == "test"
        assert all(rows[rid]["split"] == "train" for rid in e["related"])
    conflict = next(e for e in _truth(defective) if e["code"] == "label_conflict")
    assert rows[conflict["record_id"]]["target"] != rows[conflict["related"][0]]["target"]


def test_extra_jsonl_clean_lines_are_plain_questions_about_their_own_lesions(defective):
    planted = {e["source"] for e in _truth(defective)}
    clean, defect_lines = [], []
    for n, line in enumerate((defective / "extra.jsonl").read_text().splitlines(), start=1):
        (defect_lines if f"extra.jsonl:{n}" in planted else clean).append(line)
    assert len(clean) >= 20 and len(defect_lines) >= 10
    manifest_images = {f"jpeg/train/{r['image_name']}.jpg" for r in _rows(defective)}
    for obj in map(json.loads, clean):
        user, assistant = obj["messages"]
        image, text = user["content"]
        assert text == {"type": "text", "text": "Is this lesion benign or malignant?"}
        assert image["type"] == "image" and image["path"] not in manifest_images  # no cross-source duplicates
        with Image.open(defective / image["path"]) as im:
            assert (im.format, im.mode) == ("JPEG", "RGB")
        assert assistant["role"] == "assistant" and assistant["content"] in ("benign", "malignant")
        assert obj["label"] == assistant["content"]
        assert obj["group"].startswith("IP_") and obj["split"] in ("train", "val", "test")
    for line in defect_lines:  # defect lines still carry the metadata, where they parse at all
        if line.endswith("}"):
            assert {"id", "messages", "label", "group", "split"} <= set(json.loads(line))


def test_digits(tmp_path):
    path = digits.generate(tmp_path, seed=0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1797
    assert {x["label"] for x in lines} == {str(d) for d in range(10)}
    assert lines[0]["id"] == "digit-00001"
    for x in lines[::300]:
        assert x["messages"][1] == {"role": "assistant", "content": x["label"]}
        with Image.open(tmp_path / x["messages"][0]["content"][0]["path"]) as im:
            im.load()
            assert (im.mode, im.size) == ("RGB", (32, 32))
    few = digits.generate(tmp_path / "few", seed=0, n=10, size=16)
    assert few.read_text().splitlines() == path.read_text().splitlines()[:10]  # a prefix of the shuffle
    assert Image.open(tmp_path / "few" / "images" / "digit-00010.png").size == (16, 16)


def test_manifest_is_what_generate_writes(clean):
    assert dermoscopy.manifest(n_patients=40, seed=1) == _rows(clean)


def test_default_size_puts_enough_malignant_patients_in_the_melanoma_test_split():
    # Issue 13: a test split with 3 malignant cases measures nothing; the default must give >= 30
    # malignant patients under the melanoma example's own split (patients grouped, 70/15/15).
    from tuneline.config import load_config
    from tuneline.data.records import Record
    from tuneline.data.split import split_records

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "examples" / "melanoma" / "config.yaml")
    rows = dermoscopy.manifest()
    records = [
        Record(id=r["image_name"], messages=[], source=f"train.csv:{i + 2}", label=r["benign_malignant"],
               group=r["patient_id"])
        for i, r in enumerate(rows)
    ]  # fmt: skip
    splits = split_records(records, cfg.data.split, cfg.run.seed)
    test_malignant = {r.group for r in splits["test"] if r.label == "malignant"}
    assert len(test_malignant) >= 30
    assert 0.03 <= sum(r["target"] == "1" for r in rows) / len(rows) <= 0.06


def _pixels_of(img: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(img.convert("RGB")).astype(int) == np.array(colour)).all(-1)


def test_shapes_left_kind_asks_for_the_left_of_two_different_colours(tmp_path):
    path = shapes.generate(tmp_path, n=60, seed=3, questions=("left",))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["messages"][0]["content"][1]["text"] for r in rows} == {"What colour is the shape on the left?"}
    assert {r["colour"] for r in rows} == set(shapes.COLOURS)  # every colour is an answer
    for r in rows:
        answer, other = r["messages"][1]["content"], r["right_colour"]
        assert answer == r["colour"] != other and other in shapes.COLOURS
        with Image.open(tmp_path / r["messages"][0]["content"][0]["path"]) as im:
            half = im.size[0] // 2
            left = _pixels_of(im, shapes.COLOURS[answer])
            right = _pixels_of(im, shapes.COLOURS[other])
        # each shape stays in its own half: the answer's colour left of the midline, the other's right of it
        assert left[:, :half].sum() > 20 and not left[:, half:].any()
        assert right[:, half:].sum() > 20 and not right[:, :half].any()


def test_shapes_kinds_mix_in_turn_and_unknown_or_no_kind_is_refused(tmp_path):
    path = shapes.generate(tmp_path, n=6, seed=0, questions=("colour", "shape", "left"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    texts = [r["messages"][0]["content"][1]["text"] for r in rows]
    assert texts == [shapes.QUESTIONS[k] for k in ("colour", "shape", "left") * 2]
    assert [r["messages"][1]["content"] for r in rows[1::3]] == [r["shape"] for r in rows[1::3]]
    assert "right_colour" not in rows[0] and "right_colour" in rows[2]
    with pytest.raises(ValueError, match="sideways"):
        shapes.generate(tmp_path / "x", n=2, questions=("sideways",))
    with pytest.raises(ValueError, match="no question kind"):
        shapes.generate(tmp_path / "y", n=2, questions=())


def test_synth_shapes_cli_writes_the_quickstart_task_by_default(tmp_path):
    from typer.testing import CliRunner

    from tuneline.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["data", "synth", "shapes", str(tmp_path / "q"), "--n", "4"])
    assert made.exit_code == 0, made.output
    rows = [json.loads(line) for line in (tmp_path / "q" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("right_colour" in r for r in rows)
    made = runner.invoke(
        app, ["data", "synth", "shapes", str(tmp_path / "c"), "--n", "4", "--question", "colour"]
    )
    assert made.exit_code == 0, made.output
    one = (tmp_path / "c" / "data.jsonl").read_text().splitlines()[0]
    assert json.loads(one)["messages"][0]["content"][1]["text"] == "What colour is the shape?"
    bad = runner.invoke(app, ["data", "synth", "shapes", str(tmp_path / "b"), "--question", "sideways"])
    assert bad.exit_code != 0 and "sideways" in bad.output
