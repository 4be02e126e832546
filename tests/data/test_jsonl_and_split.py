from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneline.config.schema import SplitConfig
from tuneline.data.fingerprint import fingerprint
from tuneline.data.sources.jsonl import read_jsonl
from tuneline.data.split import split_records
from tuneline.errors import DataError


def _line(image: str | None = "images/a.png", answer: str | None = "red") -> str:
    content = [{"type": "text", "text": "q?"}]
    if image is not None:
        content.insert(0, {"type": "image", "path": image})
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return json.dumps({"messages": messages})


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not really a png, but present")
    return tmp_path


def test_every_bad_line_is_reported_with_file_and_line(folder, tmp_path):
    (tmp_path / "outside.png").write_bytes(b"x")
    path = folder / "data.jsonl"
    path.write_text(
        "\n".join(
            [
                _line(),  # 1 ok
                "{not json",  # 2
                _line(answer=None),  # 3 no assistant turn
                _line(image="images/nope.png"),  # 4 missing image
                _line(image="../outside.png"),  # 5 outside the data folder
                json.dumps({"text": "hi"}),  # 6 no messages
            ]
        )
        + "\n"
    )
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    text = str(info.value)
    assert "5 bad line(s)" in text
    assert f"{path}:2: not valid JSON" in text
    assert f"{path}:3: no assistant turn" in text
    assert f"{path}:4:" in text and "does not exist" in text
    assert f"{path}:5:" in text and "outside the data folder" in text
    assert f"{path}:6:" in text and "messages" in text


def test_good_file_gives_canonical_records(folder):
    path = folder / "data.jsonl"
    path.write_text(_line() + "\n\n" + _line(answer="blue") + "\n")
    records = read_jsonl(path)
    assert [r.answer for r in records] == ["red", "blue"]
    assert records[0].images == [str((folder / "images" / "a.png").resolve())]
    assert records[0].source == f"{path}:1" and records[1].id == "data-3"
    assert records[0].messages[1]["content"] == [{"type": "text", "text": "red"}]


def test_split_is_deterministic_disjoint_and_complete(shapes_dir):
    records = read_jsonl(shapes_dir / "data.jsonl")
    cfg = SplitConfig(train=0.7, val=0.15, test=0.15)
    a = split_records(records, cfg, seed=1)
    b = split_records(list(reversed(records)), cfg, seed=1)
    assert {k: [r.id for r in v] for k, v in a.items()} == {k: [r.id for r in v] for k, v in b.items()}
    ids = [r.id for part in a.values() for r in part]
    assert len(ids) == len(set(ids)) == len(records)
    c = split_records(records, cfg, seed=2)
    assert [r.id for r in c["test"]] != [r.id for r in a["test"]]


def test_fingerprint_follows_image_bytes_not_location(shapes_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shapes_dir, copy)
    settings = {"seed": 0}
    fp = lambda folder: fingerprint({"train": read_jsonl(folder / "data.jsonl")}, settings)  # noqa: E731
    original = fp(shapes_dir)
    assert fp(copy) == original
    img = copy / "images" / "shape-00007.png"
    data = bytearray(img.read_bytes())
    data[-1] ^= 1
    img.write_bytes(bytes(data))
    assert fp(copy) != original
