"""Labelling tasks out, completed labels in: Label Studio's formats, CSV and JSONL.

    tuneline loop select CONFIG      writes <round>/tasks.json (Label Studio import), tasks.csv, tasks.jsonl
    tuneline loop import CONFIG FILE reads a Label Studio JSON export, a CSV or a JSONL file

Tasks carry the response id, the image (as a Label Studio local-files URL relative to the data root,
``serve.state_dir/inputs``), the text, and the champion's prediction as a pre-annotation. An import is
validated like any data source: every bad row is reported as ``file:line: problem`` (a missing field, a
label outside the task's classes, an unknown response id, an image path outside the data root), and if
there is any, nothing is imported. A good import is merged into ``<round>/labels.jsonl`` in one atomic
write (a later label for the same response replaces the earlier one).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneline.errors import DataError
from tuneline.loop.collect import Candidate
from tuneline.runs import atomic_write_text

LOCAL_FILES = "/data/local-files/?d="
CSV_FIELDS = ("response_id", "image", "text", "prediction", "confidence", "label")


def _image_ref(c: Candidate, root: Path) -> str:
    if not c.images:
        return ""
    return LOCAL_FILES + str(Path(c.images[0]).resolve().relative_to(root.resolve()))


def _predicted(c: Candidate) -> tuple[str | None, float | None]:
    probs = c.probs.get("champion") or next(iter(c.probs.values()), None)
    if not probs:
        return c.prediction, None
    label = max(probs, key=lambda k: probs[k])
    return label, probs[label]


def label_config(labels: list[str]) -> str:
    """Label Studio's labelling interface for these tasks (an image, its text, one choice of class)."""
    choices = "".join(f'<Choice value="{lab}"/>' for lab in labels)
    return (
        '<View><Image name="image" value="$image"/><Text name="text" value="$text"/>'
        f'<Choices name="label" toName="image" choice="single" required="true">{choices}</Choices></View>\n'
    )


def export_tasks(folder: Path, selected: list[Candidate], labels: list[str], root: Path) -> dict[str, Path]:
    """Write the labelling task in Label Studio's import format, CSV and JSONL; the paths written."""
    ls_tasks, rows = [], []
    for c in selected:
        label, conf = _predicted(c)
        data = {"response_id": c.id, "image": _image_ref(c, root), "text": " ".join(c.texts)}
        task: dict[str, Any] = {"data": data}
        if label in labels:
            task["predictions"] = [
                {
                    "model_version": f"{c.variant}-v{c.version}",
                    "score": conf,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [label]},
                        }
                    ],
                }
            ]
        ls_tasks.append(task)
        rows.append(
            {
                **data,
                "prediction": label or "",
                "confidence": "" if conf is None else f"{conf:.4f}",
                "label": "",
            }
        )
    out = {
        "label_studio": folder / "tasks.json",
        "csv": folder / "tasks.csv",
        "jsonl": folder / "tasks.jsonl",
        "label_config": folder / "label_config.xml",
    }
    atomic_write_text(out["label_studio"], json.dumps(ls_tasks, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out["csv"], buf.getvalue())
    atomic_write_text(out["jsonl"], "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out["label_config"], label_config(labels))
    return out


# ---------------------------------------------------------------- reading labels back
def _json_array_items(text: str) -> Iterator[tuple[int, Any]]:
    """(line, element) of each element of a top-level JSON array, for file:line errors."""
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text[i:].startswith("["):
        raise ValueError("a Label Studio export is a JSON array of tasks")
    i += 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise ValueError("the JSON array is not closed")
        if text[i] == "]":
            return
        obj, end = dec.raw_decode(text, i)
        yield text.count("\n", 0, i) + 1, obj
        i = end


def _ls_label(task: dict) -> tuple[str | None, str | None]:
    """(label, problem) of one Label Studio export task: the newest annotation not cancelled."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not anns:
        return None, "no annotation (field annotations[].result missing or every annotation cancelled)"
    for item in anns[-1].get("result") or []:
        choices = (item.get("value") or {}).get("choices") if isinstance(item, dict) else None
        if choices:
            if len(choices) != 1:
                return None, f"expected one choice, got {choices}"
            return str(choices[0]), None
    return None, "annotation has no choice (field annotations[].result[].value.choices missing)"


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line, {response_id, label, image}, problem) for every row of a supported file."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            for line, task in _json_array_items(text):
                if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                    yield line, None, "a task needs a data object"
                    continue
                label, problem = _ls_label(task)
                data = task["data"]
                yield (
                    line,
                    {"response_id": data.get("response_id"), "label": label, "image": data.get("image")},
                    problem,
                )
        except ValueError as exc:
            yield 1, None, f"not a Label Studio JSON export: {exc}"
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"response_id", "label"} - set(reader.fieldnames or [])
        if missing:
            yield 1, None, f"missing column(s) {', '.join(sorted(missing))} (need response_id and label)"
            return
        for row in reader:
            yield reader.line_num, dict(row), None
    elif suffix in (".jsonl", ".ndjson"):
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                yield n, None, f"not JSON: {exc}"
                continue
            yield (
                n,
                obj if isinstance(obj, dict) else None,
                None if isinstance(obj, dict) else "not an object",
            )
    else:
        raise DataError(
            f"{path}: unknown label file type {suffix!r}", hint="use .json (Label Studio), .csv or .jsonl"
        )


def _inside(image: str, root: Path) -> bool:
    ref = image[len(LOCAL_FILES) :] if image.startswith(LOCAL_FILES) else image
    target = (root / ref).resolve() if not Path(ref).is_absolute() else Path(ref).resolve()
    return target.is_relative_to(root.resolve())


def read_labels(path: Path, pool: dict[str, Candidate], labels: list[str], root: Path) -> dict[str, str]:
    """response id -> label from ``path``; DataError naming every bad row (file:line) if any is bad."""
    problems: list[str] = []
    out: dict[str, str] = {}
    allowed = set(labels)
    for line, row, problem in _rows(path):
        where = f"{path}:{line}"
        if problem is not None or row is None:
            problems.append(f"{where}: {problem or 'bad row'}")
            continue
        rid, label = row.get("response_id"), row.get("label")
        if not rid:
            problems.append(f"{where}: missing field response_id")
            continue
        if rid not in pool:
            problems.append(f"{where}: unknown response id {rid!r} (not in this round's pool)")
        if label in (None, ""):
            problems.append(f"{where}: missing field label")
        elif label not in allowed:
            problems.append(f"{where}: unknown label {label!r}; allowed: {', '.join(sorted(allowed))}")
        image = row.get("image")
        if image and not _inside(str(image), root):
            problems.append(f"{where}: image path {image!r} is outside the data root {root}")
        if rid in pool and label in allowed:
            out[str(rid)] = str(label)
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(
            f"{len(problems)} problem(s) in {path}; nothing was imported:\n  {shown}{more}",
            hint="fix the rows named and import the file again",
        )
    if not out:
        raise DataError(f"{path} holds no labels", hint="label some tasks before importing")
    return out


def merge_labels(path: Path, new: dict[str, str]) -> dict[str, str]:
    """Merge into the round's labels.jsonl (one atomic write); the merged labels."""
    have = load_labels(path)
    have.update(new)
    atomic_write_text(
        path, "".join(json.dumps({"response_id": k, "label": v}) + "\n" for k, v in sorted(have.items()))
    )
    return have


def load_labels(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out[d["response_id"]] = d["label"]
    return out
