"""Validation end to end on small generated data: actions, verdict, reports, and snapshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.data import snapshot
from tuneline.data.validate import validate, write_report

CONFIG = """
run: {{name: v, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified_group}}
  max_seq_length: 64
{extra}
"""


def _config(workdir: Path, data: Path, extra: str = "", overrides=()):
    return load_config(write_config(workdir, CONFIG.format(data=data, extra=extra)), list(overrides))


@pytest.fixture
def data(workdir, shapes_dir) -> Path:
    folder = workdir / "data"
    shutil.copytree(shapes_dir, folder)
    return folder / "data.jsonl"


def _append(path: Path, obj: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(obj) + "\n")


def _turns(image: str | None, text: str, answer: str) -> list[dict]:
    content = ([{"type": "image", "path": image}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]


def test_clean_data_passes_with_no_record_findings(workdir, data):
    result = validate(_config(workdir, data))
    assert result.passed and result.summary["records_out"] == 48 and not result.dropped
    assert [f for f in result.findings if f.record_id] == []


def test_defects_are_found_and_actions_applied(workdir, data):
    images = data.parent / "images"
    shutil.copyfile(images / "shape-00001.png", images / "copy.png")  # byte-identical copy
    Image.open(images / "shape-00002.png").resize((40, 40)).save(images / "near.png")  # resized copy
    Image.new("RGB", (8, 8), "red").save(images / "tiny.png")
    _append(
        data,
        {
            "id": "dup",
            "messages": _turns("images/copy.png", "What colour is the shape?", "x"),
            "group": "g-dup",
        },
    )
    original = json.loads(data.read_text().splitlines()[2])  # shape-00002: keep its answer, so no conflict
    _append(
        data,
        {
            "id": "near",
            "messages": _turns(
                "images/near.png", "What colour is the shape?", original["messages"][1]["content"]
            ),
        },
    )
    _append(data, {"id": "small", "messages": _turns("images/tiny.png", "What colour is the shape?", "red")})
    _append(data, {"id": "pii", "messages": _turns(None, "mail me at jane.doe@example.com", "ok")})
    _append(data, {"id": "empty", "messages": _turns(None, "   ", "ok")})
    with data.open("a") as fh:
        fh.write("{broken\n")
    cfg = _config(workdir, data, "  checks: {max_error_fraction: 0.2, redact_pii: true}")
    result = validate(cfg)
    found = {(f.check, f.record_id) for f in result.findings}
    assert ("duplicate_exact", "dup") in found and ("image_too_small", "small") in found
    assert ("duplicate_near", "near") in found and ("pii_detected", "pii") in found
    assert ("text_empty", "empty") in found and ("malformed_row", None) in found
    # copy.png duplicates shape-00001 but says "x": a label conflict, on both records
    assert {r for c, r in found if c == "label_conflict"} == {"dup", "shape-00001"}
    severity = {(f.check, f.record_id): f.severity for f in result.findings}
    assert severity[("image_too_small", "small")] == "warning"  # default action drop
    assert severity[("text_empty", "empty")] == "error"
    kept = {r.id for r in result.records}
    assert not kept & {"dup", "small", "empty", "shape-00001"} and "near" in kept and "pii" in kept
    pii_rec = next(r for r in result.records if r.id == "pii")
    assert "[EMAIL]" in pii_rec.messages[0]["content"][0]["text"]  # redacted
    reasons = {d["record_id"]: d["reason"] for d in result.dropped}
    assert reasons["small"] == "image_too_small" and reasons["empty"] == "text_empty"
    assert result.summary["errors"] == 4 and result.passed  # 4/54 errors <= 0.2
    # the near copy (warn) is kept but never split away from its original
    where = {r.id: s for s, v in result.splits.items() for r in v}
    assert where["near"] == where["shape-00002"]

    strict = validate(_config(workdir, data, "  checks: {actions: {duplicate_near: fail}}"))
    assert not strict.passed and "near" not in {r.id for r in strict.records}

    json_path, html_path = write_report(result, workdir / "report")
    report = json.loads(json_path.read_text())
    assert report["summary"]["by_check"]["duplicate_exact"]["warning"] == 1
    assert {d["record_id"] for d in report["dropped"]} >= {"dup", "small", "empty"}
    assert "data:image" in html_path.read_text()  # thumbnails inline
    assert "jane.doe@example.com" not in json_path.read_text()  # the report does not re-leak PII


def test_user_split_leakage_is_flagged_on_the_later_side(workdir, data):
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    for i, obj in enumerate(lines):
        obj["split"] = "test" if i < 5 else "train"
        obj["group"] = "patient-A" if i in (0, 10) else f"p{i}"
    data.write_text("".join(json.dumps(o) + "\n" for o in lines))
    result = validate(_config(workdir, data, "", ["data.split.strategy=predefined"]))
    leaks = [f for f in result.findings if f.check == "split_leakage"]
    assert [(f.record_id, f.related) for f in leaks] == [(lines[0]["id"], (lines[10]["id"],))]
    assert leaks[0].split == "test" and lines[0]["id"] not in {r.id for r in result.splits["test"]}


def test_token_budget_uses_the_models_image_tokens(workdir, data):
    from tuneline.models.load import load_processor, resolve_base

    cfg = _config(workdir, data, "", ["data.max_seq_length=20"])
    counter = load_processor(resolve_base(cfg.model)).token_counter()
    result = validate(cfg, count_tokens=counter)
    budget = [f for f in result.findings if f.check == "token_budget_exceeded"]
    assert len(budget) == 48 and "above data.max_seq_length=20" in budget[0].message
    assert int(budget[0].message.split()[0]) > 20


def test_snapshot_fingerprint_stable_reused_and_changes_with_one_byte(workdir, data):
    cfg = _config(workdir, data)
    first = validate(cfg)
    a = snapshot.build(cfg, first.splits, first.infos, root=workdir / "ds")
    second = validate(cfg)
    b = snapshot.build(cfg, second.splits, second.infos, root=workdir / "ds")
    assert a.fingerprint == b.fingerprint and b.reused and not a.reused and a.path == b.path
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert manifest["fingerprint"] == a.fingerprint and manifest["counts"] == a.counts
    recs = a.records("train")
    assert len(recs) == a.counts["train"] and all(
        Path(p).is_file() and str(a.path) in p for r in recs for p in r.images
    )

    img = data.parent / "images" / "shape-00007.png"
    raw = bytearray(img.read_bytes())
    raw[-5] ^= 1  # one byte in the image's trailer: still a readable PNG
    img.write_bytes(bytes(raw))
    third = validate(cfg)
    assert snapshot.fingerprint(cfg, third.splits, third.infos) != a.fingerprint


def test_snapshot_normalises_orientation_mode_and_size(workdir):
    folder = workdir / "imgs"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (60, 30), (200, 30, 30)).save(folder / "rot.jpg", exif=exif)
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (400, 200), (0, 0, 255, 128)).save(folder / "big.png")
    lines = [
        {"id": n, "messages": _turns(f"imgs/{n}", "q", "a" if i % 2 else "b")}
        for i, n in enumerate(["rot.jpg", "cmyk.jpg", "big.png"] * 4)
    ]
    for i, obj in enumerate(lines):
        obj["id"] = f"{obj['id']}-{i}"
    (workdir / "d.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    cfg = _config(
        workdir,
        workdir / "d.jsonl",
        "  images: {max_side: 100}\n  checks: {actions: {duplicate_exact: warn, label_conflict: warn}}",
        ["data.split.strategy=random"],
    )
    result = validate(cfg)
    conversions = {f.record_id.split("-")[0] for f in result.findings if f.check == "image_mode_converted"}
    assert conversions == {"rot.jpg", "cmyk.jpg", "big.png"}
    snap = snapshot.build(cfg, result.splits, result.infos, root=workdir / "ds")
    sizes = {}
    for split in ("train", "val", "test"):
        for rec in snap.records(split):
            with Image.open(rec.images[0]) as im:
                assert im.mode == "RGB"
                sizes[rec.id.split("-")[0]] = im.size
    assert sizes["rot.jpg"] == (30, 60) and sizes["big.png"] == (100, 50)


def test_lookalike_handwritten_digits_are_not_called_copies(workdir):
    """Real digits from different writers hash alike by the thousand at 8x8: the pixel confirmation must
    keep them apart (and never turn two different digits into a label conflict)."""
    from tuneline_synth.digits import generate

    path = generate(workdir / "digits", n=500, seed=0)
    result = validate(_config(workdir, path, "", ["data.split.strategy=stratified"]))
    checks = {f.check for f in result.findings}
    assert "label_conflict" not in checks
    label = {r.id: r.label for r in result.all_records}
    near = [f for f in result.findings if f.check == "duplicate_near"]
    assert len(near) < 0.1 * len(label)  # hashes nominate thousands of pairs; pixels confirm few
    assert all(label[f.record_id] == label[f.related[0]] for f in near)  # never two different digits
    assert result.passed


def test_isic_layout_patient_grouped_split(workdir):
    """The melanoma example's source on synthetic ISIC data: no patient in two splits, malignant share
    within 2 points per split, the same split for the same seed."""
    from tuneline_synth.dermoscopy import generate

    generate(workdir / "isic", n_patients=150, size=64, seed=2, prevalence=0.1)
    example = Path(__file__).resolve().parents[2] / "examples" / "melanoma" / "config.yaml"
    overrides = [
        f"data.sources.0.path={workdir / 'isic' / 'train.csv'}",
        f"data.sources.0.image_dir={workdir / 'isic' / 'jpeg' / 'train'}",
    ]
    cfg = load_config(example, overrides)
    result = validate(cfg)
    assert result.passed and result.summary["records_out"] > 300
    patients = {s: {r.group for r in recs} for s, recs in result.splits.items()}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    everything = result.records
    overall = sum(r.label == "malignant" for r in everything) / len(everything)
    for recs in result.splits.values():
        assert abs(sum(r.label == "malignant" for r in recs) / len(recs) - overall) <= 0.02
    again = validate(cfg)
    assert {s: [r.id for r in v] for s, v in again.splits.items()} == {
        s: [r.id for r in v] for s, v in result.splits.items()
    }


def test_crops_resizes_and_reencodes_are_found(workdir):
    """Copies cropped 0-5% per side (also resized and re-encoded) are near duplicates of their original."""
    import random

    from tuneline_synth.dermoscopy import generate

    generate(workdir / "derm", n_patients=30, size=256, seed=4)
    originals = sorted((workdir / "derm" / "jpeg" / "train").glob("*.jpg"))[:30]
    rng = random.Random(1)
    lines = []
    for k, path in enumerate(originals):
        with Image.open(path) as im:
            w, h = im.size
            f = [rng.uniform(0, 0.05) for _ in range(4)]
            copy = im.crop((int(w * f[0]), int(h * f[1]), int(w * (1 - f[2])), int(h * (1 - f[3])))).resize(
                (w, h)
            )
            if k % 3 == 0:
                copy = copy.resize((int(w * 0.7), int(h * 0.7)))
            copy.save(workdir / "derm" / f"copy-{k}.jpg", quality=rng.choice([70, 85, 95]))
        rel = path.relative_to(workdir / "derm")
        lines.append({"id": f"orig-{k}", "messages": _turns(str(rel), "benign or malignant?", "benign")})
        lines.append(
            {"id": f"copy-{k}", "messages": _turns(f"copy-{k}.jpg", "benign or malignant?", "benign")}
        )
    (workdir / "derm" / "d.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    result = validate(_config(workdir, workdir / "derm" / "d.jsonl", "", ["data.split.strategy=random"]))
    pairs = {(f.related[0], f.record_id) for f in result.findings if f.check == "duplicate_near"}
    assert pairs == {(f"orig-{k}", f"copy-{k}") for k in range(30)}


def test_same_layout_different_colours_is_not_a_copy(workdir):
    """The quickstart's shapes (seed 0) hold a blue triangle on yellow and a green one on lilac at the same
    place: equal grayscale structure and mean colour, different channels. Not a duplicate, no conflict.
    (Same-colour shapes at the same place on a slightly other background are near duplicates: fine.)"""
    from tuneline_synth.shapes import generate

    path = generate(workdir / "shapes", n=800, seed=0)
    result = validate(_config(workdir, path, "", ["data.split.strategy=stratified"]))
    assert result.passed
    assert not [f for f in result.findings if f.check == "label_conflict"]
    colour = {r.id: r.metadata["colour"] for r in result.all_records}
    near = [f for f in result.findings if f.check == "duplicate_near"]
    assert near and all(colour[f.record_id] == colour[f.related[0]] for f in near)
    assert ("shape-00356", "shape-00729") not in {tuple(sorted((f.record_id, f.related[0]))) for f in near}
