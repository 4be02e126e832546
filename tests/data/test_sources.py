from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tuneline.config.schema import HfDiskSource, ImageFolderSource, JsonlSource, ManifestSource
from tuneline.data.sources import read_source
from tuneline.errors import DataError


def _png_bytes(colour=(200, 10, 10), size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _line(image: str | None = "images/a.png", answer: str | None = "red", **extra) -> str:
    content = [{"type": "text", "text": "q?"}]
    if image is not None:
        content.insert(0, {"type": "image", "path": image})
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return json.dumps({"messages": messages, **extra})


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the inline-image cache lives under .tuneline/ in the working directory
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(_png_bytes())
    (tmp_path / "outside.png").write_bytes(_png_bytes())
    return data


def test_jsonl_bad_lines_become_findings_with_file_and_line(folder):
    path = folder / "data.jsonl"
    path.write_text(
        "\n".join(
            [
                _line(),  # 1 ok
                "{not json",  # 2 malformed_row
                _line(answer=None),  # 3 schema_error: no assistant turn
                _line(image="../outside.png"),  # 4 path_outside_root
                json.dumps({"text": "hi"}),  # 5 schema_error
                _line(image="https://example.com/x.png"),  # 6 remote URL refused
                _line(split="holdout"),  # 7 bad split value
            ]
        )
        + "\n"
    )
    result = read_source(JsonlSource(type="jsonl", path=path))
    assert result.rows == 7 and [r.id for r in result.records] == ["data-1"]
    got = {(f.source, f.check) for f in result.findings}
    assert got == {
        (f"{path}:2", "malformed_row"),
        (f"{path}:3", "schema_error"),
        (f"{path}:4", "path_outside_root"),
        (f"{path}:5", "schema_error"),
        (f"{path}:6", "schema_error"),
        (f"{path}:7", "schema_error"),
    }
    by_line = {f.source: f.message for f in result.findings}
    assert "no assistant turn" in by_line[f"{path}:3"] and "remote image" in by_line[f"{path}:6"]


def test_jsonl_openai_image_url_data_uri_file_url_label_group(folder):
    uri = "data:image/png;base64," + base64.b64encode(_png_bytes((0, 0, 255))).decode()
    lines = [
        json.dumps(
            {
                "id": "u1",
                "label": "blue",
                "group": "p1",
                "site": "arm",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": uri}},
                            {"type": "text", "text": "colour?"},
                        ],
                    },
                    {"role": "assistant", "content": "blue"},
                ],
            }
        ),
        json.dumps(
            {
                "id": "u2",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "path": f"file://{folder / 'images' / 'a.png'}"}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                ],
            }
        ),
    ]
    (folder / "d.jsonl").write_text("\n".join(lines) + "\n")
    result = read_source(JsonlSource(type="jsonl", path=folder / "d.jsonl"))
    assert not result.findings
    u1, u2 = result.records
    assert u1.label == "blue" and u1.group == "p1" and u1.metadata == {"site": "arm"}
    assert Image.open(u1.images[0]).getpixel((0, 0)) == (0, 0, 255)  # decoded into the inline cache
    assert u2.images == [str((folder / "images" / "a.png").resolve())] and u2.target == "red"


ISIC_HEADER = (
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
)


def _isic(folder: Path) -> Path:
    (folder / "jpeg" / "train").mkdir(parents=True)
    for name in ("ISIC_0001", "ISIC_0002", "ISIC_0003"):
        Image.new("RGB", (32, 32), (180, 120, 90)).save(folder / "jpeg" / "train" / f"{name}.jpg")
    rows = [
        ISIC_HEADER,
        "ISIC_0001,IP_1,male,45.0,torso,nevus,benign,0",
        "ISIC_0002,IP_1,male,45.0,torso,melanoma,malignant,1",
        "ISIC_0003,IP_2,female,30.0,head/neck,nevus,benign,0,EXTRA",
        "ISIC_0004,IP_2,female,30.0,head/neck,nevus,benign,yes",
        "ISIC_0005,,female,30.0,head/neck,nevus,benign,0",
        "../../etc/passwd,IP_3,female,30.0,head/neck,nevus,benign,0",
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def _isic_source(path: Path, **kw) -> ManifestSource:
    return ManifestSource(
        type="manifest",
        path=path,
        image_dir=path.parent / "jpeg" / "train",
        image_extension=".jpg",
        label_column="target",
        labels={"0": "benign", "1": "malignant"},
        group_column="patient_id",
        prompt="A lesion on the {anatom_site_general_challenge}. Benign or malignant?",
        **kw,
    )


def test_manifest_isic_layout(tmp_path):
    path = _isic(tmp_path)
    result = read_source(_isic_source(path))
    assert result.rows == 6
    assert [(r.id, r.label, r.group) for r in result.records] == [
        ("ISIC_0001", "benign", "IP_1"),
        ("ISIC_0002", "malignant", "IP_1"),
    ]
    rec = result.records[0]
    assert rec.metadata["sex"] == "male" and rec.source == f"{path}:2"
    assert rec.messages[0]["content"][1]["text"] == "A lesion on the torso. Benign or malignant?"
    assert rec.images == [str(tmp_path / "jpeg" / "train" / "ISIC_0001.jpg")]
    got = {(f.source.rsplit(":", 1)[1], f.check, f.field) for f in result.findings}
    assert got == {
        ("4", "malformed_row", None),
        ("5", "schema_error", "target"),
        ("6", "schema_error", "patient_id"),
        ("7", "path_outside_root", "image_name"),
    }


def test_manifest_missing_column_names_it_with_suggestion(tmp_path):
    path = _isic(tmp_path)
    with pytest.raises(DataError) as info:
        read_source(_isic_source(path).model_copy(update={"group_column": "patient"}))
    text = str(info.value)
    assert "[schema_error]" in text and str(path) in text and "group_column='patient'" in text
    assert "did you mean 'patient_id'" in text


def test_manifest_parquet_and_predefined_split_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    pq.write_table(
        pa.table({"file": ["a.png", "a.png"], "key": ["r1", "r2"], "y": [1, 0], "fold": ["train", "dev"]}),
        tmp_path / "m.parquet",
    )
    result = read_source(
        ManifestSource(
            type="manifest",
            path=tmp_path / "m.parquet",
            image_column="file",
            id_column="key",
            label_column="y",
            split_column="fold",
            prompt="?",
        )
    )
    assert [(r.id, r.label, r.metadata["split"]) for r in result.records] == [("r1", "1", "train")]
    (finding,) = result.findings
    assert finding.check == "schema_error" and finding.source == f"{tmp_path / 'm.parquet'}#row=2"


def test_image_folder(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (20, 20)).save(tmp_path / label / "x.png")
    (tmp_path / "stray.png").write_bytes(b"")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    result = read_source(ImageFolderSource(type="image_folder", path=tmp_path, prompt="What animal?"))
    assert [(r.id, r.label) for r in result.records] == [("cat/x.png", "cat"), ("dog/x.png", "dog")]
    assert [f.check for f in result.findings] == ["schema_error"]  # stray.png is in no class folder


def test_hf_disk_messages_and_images(tmp_path, monkeypatch):
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as HfImage

    monkeypatch.chdir(tmp_path)
    img = tmp_path / "p.png"
    img.write_bytes(_png_bytes((1, 2, 3)))
    messages = [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "black"}]},
    ]
    features = Features(
        {
            "messages": [
                {"role": Value("string"), "content": [{"type": Value("string"), "text": Value("string")}]}
            ],
            "images": Sequence(HfImage()),
            "patient": Value("string"),
        }
    )
    ds = Dataset.from_dict(
        {"messages": [messages], "images": [[str(img)]], "patient": ["p9"]}, features=features
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    result = read_source(HfDiskSource(type="hf_disk", path=tmp_path / "saved", group_column="patient"))
    (rec,) = result.records
    assert not result.findings and rec.group == "p9" and rec.answer == "black"
    assert Image.open(rec.images[0]).getpixel((0, 0)) == (1, 2, 3)
