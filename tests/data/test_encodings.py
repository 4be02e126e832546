"""Text sources decode strictly (a bad byte is a finding with file, line and offset, never U+FFFD), an
encoding can be named per source, and an empty source or dataset is its own error."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.config.schema import JsonlSource, ManifestSource
from tuneline.data.sources import read_source
from tuneline.data.validate import validate
from tuneline.errors import DataError

HEADER = "image_name,patient_id,site,target"
SITES = ("tête", "épaule", "torse", "cuisse", "pied", "genou")
CONFIG = """
run: {{name: enc, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources:
    - type: manifest
      path: {csv}
      image_extension: .png
      label_column: target
      labels: {{"0": benign, "1": malignant}}
      group_column: patient_id
      prompt: "Lésion sur {{site}}. Bénigne ou maligne ?"
  split: {{strategy: stratified_group}}
  max_seq_length: 64
  checks: {{min_class_fraction: 0.0}}
registry: {{enabled: false}}
"""


def _manifest(folder: Path, n: int = 24) -> tuple[Path, list[str]]:
    """A latin-1 CSV of ``n`` rows whose sites carry accents; returns the path and the CSV lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(n):
        name = f"IMG_{i:03d}"
        Image.new("RGB", (32, 32), (40 + 8 * i, 120, 200 - 6 * i)).save(folder / f"{name}.png")
        lines.append(f"{name},P{i // 2},{SITES[i % len(SITES)]},{int(i % 4 == 0)}")
    path = folder / "train.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path, lines


def _source(path: Path, **kw) -> ManifestSource:
    return ManifestSource(
        type="manifest", path=path, image_extension=".png", label_column="target", prompt="{site}?", **kw
    )


def test_undecodable_byte_is_a_finding_with_file_line_and_offset(tmp_path):
    path, lines = _manifest(tmp_path)
    result = read_source(_source(path))
    # Rows 2, 3, 5, ... hold "tête"/"épaule" (é, ê are single latin-1 bytes): each becomes a finding.
    bad_rows = [n for n, line in enumerate(lines, start=1) if not line.isascii()]
    got = {f.source: f for f in result.findings}
    assert sorted(got) == sorted(f"{path}:{n}" for n in bad_rows)
    assert {f.check for f in got.values()} == {"malformed_row"}
    raw = path.read_bytes()
    first = got[f"{path}:2"]
    offset = raw.index("tête".encode("latin-1")) + 1  # the ê
    assert f"byte 0xEA at byte offset {offset} is not valid utf-8" in first.message
    assert "encoding" in first.message and "latin-1" in first.message
    assert all("\ufffd" not in str(r.metadata) + str(r.messages) for r in result.records)
    assert len(result.records) == len(lines) - 1 - len(bad_rows)


def test_named_encoding_keeps_the_text_intact(tmp_path):
    path, _ = _manifest(tmp_path)
    result = read_source(_source(path, encoding="latin-1"))
    assert not result.findings
    assert [r.metadata["site"] for r in result.records[:2]] == ["tête", "épaule"]
    assert result.records[0].messages[0]["content"][-1]["text"] == "tête?"


def test_jsonl_bad_byte_and_utf16_without_encoding(tmp_path):
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    bad = good.replace('"a"', '"caf\\u00e9"').encode().replace(b"\\u00e9", b"\xe9")
    path.write_bytes(good.encode() + b"\n" + bad + b"\n")
    result = read_source(JsonlSource(type="jsonl", path=path))
    (finding,) = result.findings
    assert finding.check == "malformed_row" and finding.source == f"{path}:2"
    offset = len(good) + 1 + bad.index(b"\xe9")
    assert f"byte 0xE9 at byte offset {offset} is not valid utf-8" in finding.message
    assert read_source(JsonlSource(type="jsonl", path=path, encoding="latin-1")).records[1].answer == "café"

    wide = tmp_path / "wide.csv"
    wide.write_text(HEADER + "\nIMG_000,P0,tête,0\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"UTF-16 byte-order mark.*not utf-8") as info:
        read_source(_source(wide))
    assert "encoding: utf-16" in info.value.hint
    assert read_source(_source(wide, encoding="utf-16")).records[0].metadata["site"] == "tête"


def test_unknown_encoding_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="unknown text encoding 'latin-9000'"):
        _source(tmp_path / "x.csv", encoding="latin-9000")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("header_only.csv", HEADER + "\n\n", "has a header and no rows"),
        ("nothing.csv", "", "is empty"),
        ("zero.jsonl", "", "has no lines"),
        ("blank.jsonl", "\n  \n", "has only blank lines"),
    ],
)
def test_empty_source_says_no_records(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    cfg = JsonlSource(type="jsonl", path=path) if name.endswith(".jsonl") else _source(path)
    with pytest.raises(DataError, match=f"no records: {path} {message}"):
        read_source(cfg)


def test_cli_latin1_fails_then_validates_and_survives_into_snapshot_and_splits(workdir):
    path, _ = _manifest(workdir / "data")
    config = write_config(workdir, CONFIG.format(csv=path))
    runner = CliRunner()
    failed = runner.invoke(app, ["data", "validate", str(config)])
    assert failed.exit_code == 3, failed.output
    text = " ".join(failed.output.split())
    assert "verdict: failed" in text and "records have errors" in text and "allowed" not in text
    report = json.loads((workdir / "runs" / "enc" / "data-validate" / "data_report.json").read_text())
    dropped = {d["source"]: d for d in report["dropped"]}
    assert f"{path}:2" in dropped and dropped[f"{path}:2"]["reason"] == "malformed_row"
    assert set(dropped[f"{path}:2"]) >= {"record_id", "source", "field"}

    ok = runner.invoke(app, ["prepare", str(config), "--set", "data.sources.0.encoding=latin-1"])
    assert ok.exit_code == 0, ok.output
    (parquet,) = (workdir / ".tuneline" / "datasets").glob("*/records.parquet")
    rows = pq.read_table(parquet).to_pylist()
    assert {json.loads(r["metadata"])["site"] for r in rows} == set(SITES)
    splits = list((workdir / "runs" / "enc").glob("*/data/*.jsonl"))
    assert len(splits) == 3
    written = "".join(p.read_text(encoding="utf-8") for p in splits)
    assert "Lésion sur tête. Bénigne ou maligne ?" in written and "\ufffd" not in written


def test_every_record_dropped_is_no_records_not_an_error_fraction(workdir):
    path, _ = _manifest(workdir / "data", n=4)
    path.write_text(HEADER + "\n" + "".join(f"IMG_00{i},P{i},torse,{i % 2}\n" for i in range(4)))
    for i in range(4):  # every image below min_side: image_too_small drops them all (no error)
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(workdir / "data" / f"IMG_00{i}.png")
    config = write_config(workdir, CONFIG.format(csv=path))
    result = CliRunner().invoke(app, ["data", "validate", str(config)])
    assert result.exit_code == 3
    text = " ".join(result.output.split())
    assert "no records left after the checks: all 4 were excluded (image_too_small 4)" in text
    assert "error fraction" not in text
    report = json.loads((workdir / "runs" / "enc" / "data-validate" / "data_report.json").read_text())
    assert [(d["record_id"], d["source"], d["reason"]) for d in report["dropped"]] == [
        (f"IMG_00{i}", f"{path}:{i + 2}", "image_too_small") for i in range(4)
    ]


def test_utf8_bom_is_skipped_and_offsets_stay_file_offsets(tmp_path):
    path, _ = _manifest(tmp_path, n=2)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = read_source(_source(path))  # the header reads as image_name, not "\ufeffimage_name"
    finding = min(result.findings, key=lambda f: f.source)  # row 2 ("tête"), then row 3 ("épaule")
    raw = path.read_bytes()
    offset = raw.index("tête".encode("latin-1")) + 1
    assert finding.source == f"{path}:2"
    assert f"byte 0xEA at byte offset {offset} is not valid utf-8" in finding.message


def test_rows_rejected_while_loading_are_dropped_with_id_line_and_field(workdir):
    path, _ = _manifest(workdir / "data", n=12)
    text = path.read_bytes().decode("latin-1")
    text += "IMG_900,P90,torse,7\n" + "../outside,P91,torse,0\n"  # a label not in labels; a path out
    path.write_bytes(text.encode("latin-1"))
    cfg = load_config(
        write_config(workdir, CONFIG.format(csv=path)),
        ["data.sources.0.encoding=latin-1", "data.checks.max_error_fraction=0.5"],
    )
    result = validate(cfg)
    got = {d["record_id"]: d for d in result.dropped}
    assert (got["IMG_900"]["source"], got["IMG_900"]["field"], got["IMG_900"]["reason"]) == (
        f"{path}:14",
        "target",
        "schema_error",
    )
    assert (got["../outside"]["source"], got["../outside"]["field"], got["../outside"]["reason"]) == (
        f"{path}:15",
        "image_name",
        "path_outside_root",
    )
    assert result.passed and result.summary["records_out"] == 12


def test_manifest_numbers_read_as_text_arrive_as_numbers_and_band(tmp_path):
    from tuneline.evaluation.report import slice_values

    rows = [
        ("IMG_000", "P0", "70.0", "45", "0012", "torso", "0"),
        ("IMG_001", "P1", "", "60", "0013", "head", "1"),
        ("IMG_002", "P2", "35.0", "NA", "0014", "torso", "0"),
        ("IMG_003", "P3", "25", "30", "0015", "7", "1"),
    ]
    lines = ["image_name,patient_id,age_approx,weight,clinic,site,target"]
    for name, *rest in rows:
        Image.new("RGB", (32, 32)).save(tmp_path / f"{name}.png")
        lines.append(",".join([name, *rest]))
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    result = read_source(_source(path))
    assert not result.findings
    meta = [r.metadata for r in result.records]
    assert [m["age_approx"] for m in meta] == [70.0, None, 35.0, 25.0]
    assert all(type(m["age_approx"]) is float for m in meta if m["age_approx"] is not None)
    assert [m["weight"] for m in meta] == [45, 60, None, 30]  # integers stay int; NA is missing
    assert [m["clinic"] for m in meta] == ["0012", "0013", "0014", "0015"]  # leading zeros: an id
    assert [m["site"] for m in meta] == ["torso", "head", "torso", "7"]  # mixed: text
    assert [m["image_name"] for m in meta] == [r[0] for r in rows]
    assert [m["patient_id"] for m in meta] == ["P0", "P1", "P2", "P3"]
    assert [m["target"] for m in meta] == ["0", "1", "0", "1"]  # the label column stays as written
    # The prompt still shows the cell as written.
    assert result.records[0].messages[0]["content"][-1]["text"] == "torso?"
    assert list(slice_values(result.records, "age_approx")) == ["70+", "missing", "30-49", "<30"]
