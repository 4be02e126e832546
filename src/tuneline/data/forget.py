"""Forgetting records: a new dataset version without them, and the registered versions that held them.

    tuneline data forget CONFIG --record ID [--record ID2 ...] | --group G   (tuneline.stages.forget)
    tuneline models affected --record ID | --group G

``data forget`` adds a request to the workspace's forget ledger (``.tuneline/forget.json``) and writes
the config's snapshot again. From then on every prepare of data from the same sources leaves out:

* the named records and every record of a named group;
* their copies: records whose image is an exact or near duplicate of theirs (the links
  ``data/checks/duplicates`` finds through the perceptual-hash index of ``data/neardup.py``, followed
  transitively), and records with the same content (messages with each image's bytes hashed), so a
  record re-added under another id stays out.

The ledger also keeps the fingerprints of the snapshots that held the records when they were
forgotten, so ``models affected`` still finds the versions trained on them after those snapshot
folders are archived or deleted. ``models affected`` lists every registered version (every model in
the registry) whose data-snapshot lineage tag names such a snapshot, with the splits that held them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneline.config import Config
from tuneline.data.records import Record
from tuneline.data.split import SPLITS
from tuneline.errors import DataError
from tuneline.runs import atomic_write_text, workspace

if TYPE_CHECKING:
    from tuneline.data.validate import Validation

LEDGER = "forget.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForgetRequest(_Strict):
    at: str = Field(description="When the request was made (ISO 8601).")
    sources: list[str] = Field(description="Resolved paths of the data sources the ids and groups refer to.")
    records: list[str] = Field(default_factory=list, description="Record ids named by --record.")
    groups: list[str] = Field(default_factory=list, description="Groups named by --group.")
    removed: list[str] = Field(default_factory=list, description="Every record id left out for this request.")
    duplicates: list[str] = Field(
        default_factory=list, description="Of those, the ids left out as copies (near/exact/same content)."
    )
    content: list[str] = Field(default_factory=list, description="Content hashes of the forgotten records.")
    held_by: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Snapshot fingerprint -> {record id: split}: the dataset versions that held them.",
    )
    snapshot: str | None = Field(None, description="Fingerprint of the dataset version written without them.")


class Ledger(_Strict):
    requests: list[ForgetRequest] = Field(default_factory=list)


def ledger_path(cwd: Path | None = None) -> Path:
    return workspace(cwd) / LEDGER


def load(cwd: Path | None = None) -> Ledger:
    path = ledger_path(cwd)
    if not path.is_file():
        return Ledger()
    try:
        return Ledger.model_validate_json(path.read_text())
    except ValueError as exc:
        raise DataError(
            f"{path} is not a valid forget ledger: {exc}",
            hint="restore it from a backup; deleting it would let forgotten records back into the data",
        ) from exc


def _save(ledger: Ledger, cwd: Path | None = None) -> None:
    atomic_write_text(ledger_path(cwd), ledger.model_dump_json(indent=2) + "\n")


def _sources(cfg: Config) -> list[str]:
    return sorted(str(Path(s.path).resolve()) for s in cfg.data.sources)


def content_hash(rec: Record, infos: dict[str, Any]) -> str:
    """sha256 of a record's messages with each image replaced by the sha256 of its bytes."""
    from tuneline.data.snapshot import content_messages

    return hashlib.sha256(
        json.dumps(content_messages(rec, infos), sort_keys=True, default=str).encode()
    ).hexdigest()


def _hashable(rec: Record, infos: dict[str, Any]) -> bool:
    """Every image of the record was inspected (an unreadable one has no content hash)."""
    return all(p in infos and infos[p].sha256 for p in rec.images)


@dataclass(frozen=True)
class Removal:
    removed: dict[str, str]  # record id -> why ("record", "group", "content", "duplicate of <id>")

    @property
    def duplicates(self) -> list[str]:
        return sorted(k for k, why in self.removed.items() if why.startswith("duplicate"))


def _select(
    records: list[Record],
    infos: dict[str, Any],
    links: list[tuple[str, str]],
    ids: set[str],
    groups: set[str],
    contents: set[str],
) -> Removal:
    removed: dict[str, str] = {}
    for r in records:
        if r.id in ids:
            removed[r.id] = "record"
        elif r.group is not None and r.group in groups:
            removed[r.id] = "group"
        elif contents and _hashable(r, infos) and content_hash(r, infos) in contents:
            removed[r.id] = "content"
    neighbours: dict[str, set[str]] = {}
    for a, b in links:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    todo = list(removed)
    while todo:  # copies of copies: the connected component of each forgotten record
        rid = todo.pop()
        for other in neighbours.get(rid, ()):
            if other not in removed:
                removed[other] = f"duplicate of {rid}"
                todo.append(other)
    return Removal(removed)


def applied(cfg: Config, result: Validation, ledger: Ledger | None = None) -> Validation:
    """``result`` without every record the ledger says to forget (the prepare hook)."""
    ledger = load() if ledger is None else ledger
    if not ledger.requests:
        return result
    mine = set(_sources(cfg))
    ids: set[str] = set()
    groups: set[str] = set()
    contents: set[str] = set()
    for req in ledger.requests:
        contents.update(req.content)  # the same content is the same record, whichever source holds it
        if mine & set(req.sources):
            ids.update(req.records, req.removed)
            groups.update(req.groups)
    removal = _select(result.records, result.infos, result.links, ids, groups, contents)
    if not removal.removed:
        return result
    splits = {s: [r for r in result.splits[s] if r.id not in removal.removed] for s in SPLITS}
    summary = dict(result.summary)
    summary["forgotten"] = len(removal.removed)
    summary["records_out"] = sum(len(v) for v in splits.values())
    summary["splits"] = {
        s: {**summary["splits"][s], "records": len(splits[s])} for s in summary.get("splits", {})
    }
    return replace(result, splits=splits, summary=summary)


# ------------------------------------------------------------------ which snapshots held a record
def _snapshot_folders(extra: Sequence[Path] = ()) -> list[Path]:
    root = workspace() / "datasets"
    found = sorted(p for p in root.glob("*") if (p / "records.parquet").is_file()) if root.is_dir() else []
    return found + [p for p in extra if (p / "records.parquet").is_file() and p not in found]


def held_in(folder: Path, ids: set[str], groups: set[str]) -> dict[str, str]:
    """{record id: split} of the records of a snapshot folder with one of ``ids`` or ``groups``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(folder / "records.parquet", columns=["id", "group", "split"]).to_pylist()
    return {
        r["id"]: r["split"]
        for r in rows
        if r["id"] in ids or (r["group"] is not None and r["group"] in groups)
    }


def _fingerprint(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def holders(ids: set[str], groups: set[str], extra: Sequence[Path] = ()) -> dict[str, dict[str, str]]:
    """Snapshot fingerprint -> {record id: split}, from the snapshot folders and the ledger."""
    out: dict[str, dict[str, str]] = {}
    for folder in _snapshot_folders(list(extra)):
        held = held_in(folder, ids, groups)
        fp = _fingerprint(folder)
        if held and fp:
            out.setdefault(fp, {}).update(held)
    for req in load().requests:
        if ids & set(req.records) or groups & set(req.groups):
            for fp, held in req.held_by.items():
                out.setdefault(fp, {}).update(held)
    return out


# ------------------------------------------------------------------ the two commands
@dataclass(frozen=True)
class Forgotten:
    request: ForgetRequest
    snapshot_path: Path
    previous: dict[str, dict[str, str]]  # the snapshots that held them


def forget_with(
    cfg: Config,
    records: list[str],
    groups: list[str],
    *,
    check: Callable[[Config, Path], tuple[Validation, Path, Path]],
    build_snapshot: Callable[[Config, Path], tuple[Validation, Any]],
) -> Forgotten:
    """Add a forget request for ``records``/``groups`` and write the dataset version without them.

    ``check`` and ``build_snapshot`` are the prepare stage's (tuneline.stages.forget passes them): this
    module, a component, does not import the stages above it."""
    if not records and not groups:
        raise DataError("nothing to forget", hint="name records with --record ID or groups with --group G")
    report_dir = workspace() / "reports" / cfg.run.name
    result, _, _ = check(cfg, report_dir)
    everything = result.all_records or result.records
    ids, wanted_groups = set(records), set(groups)
    unknown = sorted(ids - {r.id for r in everything}) + sorted(
        wanted_groups - {r.group for r in everything if r.group is not None}
    )
    if unknown and not holders(set(unknown), set(unknown)):
        sources = ", ".join(str(s.path) for s in cfg.data.sources)
        raise DataError(
            f"no record or group named {', '.join(repr(u) for u in unknown)} in the data of this config "
            f"({sources}) or in any snapshot under {workspace() / 'datasets'}",
            hint="pass the record's id as it appears in the data (the id field, or file:line) or its group",
        )
    removal = _select(everything, result.infos, result.links, ids, wanted_groups, set())
    named = [r for r in everything if removal.removed.get(r.id) in ("record", "group")]
    request = ForgetRequest(
        at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        sources=_sources(cfg),
        records=sorted(ids),
        groups=sorted(wanted_groups),
        removed=sorted(removal.removed),
        duplicates=removal.duplicates,
        content=sorted({content_hash(r, result.infos) for r in named if _hashable(r, result.infos)}),
        held_by=holders(ids | set(removal.removed), wanted_groups),  # before the new version exists
    )
    ledger = load()
    ledger.requests.append(request)
    _save(ledger)
    try:
        _, snap = build_snapshot(cfg, report_dir)
    except BaseException:
        ledger.requests.pop()  # nothing half-done: the request stands only with its new snapshot
        _save(ledger)
        raise
    ledger.requests[-1] = request.model_copy(update={"snapshot": snap.fingerprint})
    _save(ledger)
    return Forgotten(ledger.requests[-1], snap.path, request.held_by)


@dataclass(frozen=True)
class Affected:
    model: str
    version: str
    aliases: list[str]
    fingerprint: str
    held: dict[str, str]  # record id -> split
    run_id: str | None

    @property
    def trained_on(self) -> bool:
        return "train" in self.held.values()


def _all_versions(client) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        for m in page:
            yield from client.search_model_versions(f"name = '{m.name}'")
        token = page.token
        if not token:
            return


def affected(client, records: list[str], groups: list[str]) -> list[Affected]:
    """Every registered version whose data snapshot held one of ``records`` or ``groups``."""
    if not records and not groups:
        raise DataError("no record named", hint="pass --record ID or --group G")
    versions = list(_all_versions(client))
    folders = [Path(t) for mv in versions if (t := (mv.tags or {}).get("tuneline.data_snapshot"))]
    held = holders(set(records), set(groups), folders)
    out = []
    for mv in versions:
        tags = dict(mv.tags or {})
        fp = tags.get("tuneline.data_fingerprint")
        if fp in held:
            out.append(
                Affected(
                    mv.name,
                    str(mv.version),
                    sorted(mv.aliases or []),
                    fp,
                    held[fp],
                    tags.get("tuneline.run_id"),
                )
            )
    return sorted(out, key=lambda a: (a.model, int(a.version)))
