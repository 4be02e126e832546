"""The canonical sample every source produces, before any model-specific step.

Messages keep the OpenAI shape with content as a list of parts; image parts hold an absolute
``path``. Records are written to and read from JSONL in the run directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Record:
    id: str
    messages: list[dict[str, Any]]
    source: str  # "file:line" (or "file#row=N") it came from
    metadata: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # class label, when the source has one
    group: str | None = None  # grouping key (e.g. patient_id): never split across train/val/test

    @property
    def images(self) -> list[str]:
        return [p["path"] for m in self.messages for p in m["content"] if p["type"] == "image"]

    @property
    def answer(self) -> str:
        """Text of the last assistant turn: the reference answer."""
        last = [m for m in self.messages if m["role"] == "assistant"][-1]
        return "".join(p["text"] for p in last["content"] if p["type"] == "text")

    @property
    def target(self) -> str:
        """The label if the source gave one, else the reference answer: what label checks compare."""
        return self.label if self.label is not None else self.answer

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """Every message before the last assistant turn: what the model sees when answering."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=d["id"],
            messages=d["messages"],
            source=d["source"],
            metadata=d.get("metadata", {}),
            label=d.get("label"),
            group=d.get("group"),
        )


def load_images(record: Record) -> list[Image.Image]:
    """The record's images, opened and converted to RGB (what training and evaluation feed the processor)."""
    from PIL import Image

    images = []
    for path in record.images:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


def write_records(path: Path, records: Iterable[Record]) -> None:
    from tuneline.runs import atomic_write_text

    atomic_write_text(path, "".join(r.to_json() + "\n" for r in records))


def read_records(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Record.from_dict(json.loads(line))
