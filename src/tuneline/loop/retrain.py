"""Retrain: the champion's dataset + the newly labelled production records -> a gated challenger.

    tuneline loop retrain CONFIG

1. The champion (registry alias) gives its dataset snapshot (``tuneline.data_snapshot``) and adapter.
2. New labels are split (by a hash of the response id) into training records and a held-out slice
   (``loop.holdout_share``). Leakage first: a new record whose image is a near duplicate of a frozen test
   record (data/neardup.py, the thresholds of data validation), or whose text equals one, is dropped and
   reported, never trained on.
3. A new dataset version: the champion's records with their splits (the test split stays frozen) plus the
   new training records, written as one JSONL source with ``split`` and prepared by the prepare stage
   (every data check runs over the union: duplicates, label conflicts, leakage; content-addressed snapshot).
4. Train, warm-started from the champion's adapter weights (``loop.warm_start``), evaluate, register.
5. The loop's gate against the champion, both scored by the same code (label log-probabilities): on the
   held-out new labels the challenger must not be worse than the champion, and on the frozen test split it
   may lose at most ``loop.max_regression``. The result is the version's ``tuneline.gate_passed`` (what
   promotion checks; the evaluate stage's gate against the base, when enabled, is kept as
   ``tuneline.base_gate_passed``); a version that fails does not stay challenger. Lineage tags name the
   champion version and both dataset versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneline.config import Config, to_dict
from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.loop.collect import Candidate
from tuneline.loop.select import image_hashes, near_duplicates, text_key
from tuneline.runs import RunDir, atomic_write_text

log = logging.getLogger("tuneline.loop")


@dataclass(frozen=True)
class Retrained:
    version: str
    champion_version: str
    gate_passed: bool
    gate: dict[str, Any]
    run_dir: str
    dataset: str  # the new snapshot's fingerprint
    parent_dataset: str | None
    added: int
    holdout: int
    leaked: list[str]


def _holdout(rid: str, share: float) -> bool:
    return int(hashlib.sha256(rid.encode()).hexdigest()[:8], 16) / 2**32 < share


def champion_snapshot(tags: dict[str, str]):
    from tuneline.data.snapshot import Snapshot

    path = tags.get("tuneline.data_snapshot")
    if not path or not Path(path).is_dir():
        raise DataError(
            f"the champion's dataset snapshot {path!r} is not here",
            hint="run the loop where the champion was trained (same .tuneline/datasets), or restore "
            "the snapshot",
        )
    return Snapshot(Path(path), tags.get("tuneline.data_fingerprint", ""), {}, True)


def leaking(new: list[Record], frozen: list[Record]) -> set[str]:
    """Ids of new records that near-duplicate a frozen record (image) or repeat its text."""
    out: set[str] = set()
    with_img = [r for r in new if r.images]
    frozen_img = [r for r in frozen if r.images]
    if with_img and frozen_img:
        of_frozen, _ = near_duplicates(
            image_hashes([r.images[0] for r in with_img]), image_hashes([r.images[0] for r in frozen_img])
        )
        out |= {with_img[i].id for i in of_frozen}
    texts = {text_key(_texts(r)) for r in frozen if not r.images}
    out |= {r.id for r in new if not r.images and text_key(_texts(r)) in texts}
    return out


def _texts(r: Record) -> list[str]:
    return [p["text"] for m in r.prompt_messages for p in m["content"] if p.get("type") == "text"]


def _link(src: str, folder: Path) -> str:
    """The image under the dataset folder (a hard link, else a copy; names are content addresses)."""
    target = folder / "images" / Path(src).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return f"images/{target.name}"


def _row(r: Record, split: str, folder: Path) -> str:
    def content(parts: list[dict]) -> list[dict]:
        return [{**p, "path": _link(p["path"], folder)} if p.get("type") == "image" else p for p in parts]

    messages = [
        {"role": m["role"], "content": content(m["content"]) if m["role"] != "assistant" else r.answer}
        for m in r.messages
    ]
    row: dict[str, Any] = {**r.metadata, "id": r.id, "messages": messages, "split": split}
    if r.label is not None:
        row["label"] = r.label
    if r.group is not None:
        row["group"] = r.group
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def derived_config(cfg: Config, data_file: Path, round_no: int) -> Config:
    d = to_dict(cfg, redact=False)
    d["data"]["sources"] = [{"type": "jsonl", "path": str(data_file)}]
    d["data"]["split"] = {**d["data"]["split"], "strategy": "predefined"}
    d["run"]["name"] = f"{cfg.run.name}-loop"
    d["eval"]["split"] = "test"
    if not cfg.eval.labels:
        d["eval"]["labels"] = None
    return Config.model_validate(d)


class WarmStart:
    """A TrainerCallback: the champion's adapter weights into the fresh adapter before step 1."""

    def __init__(self, adapter_dir: Path) -> None:
        self.adapter_dir = adapter_dir

    def __getattr__(self, name: str):  # every other TrainerCallback hook: nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0 or model is None:  # resumed from a checkpoint: that is newer
            return
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(self.adapter_dir / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, weights)
        log.info(
            "warm start from %s (%d tensors, %d unexpected)",
            self.adapter_dir,
            len(weights),
            len(result.unexpected_keys),
        )


def _accuracy(
    model, processor, records: list[Record], labels: list[str], cfg: Config
) -> tuple[float, np.ndarray]:
    from tuneline.evaluation.classify import score_labels
    from tuneline.training.collate import ChatCollator

    if not records:
        return float("nan"), np.zeros(0)
    s = score_labels(
        model,
        ChatCollator(processor, cfg.data.max_seq_length),
        records,
        labels,
        batch_size=cfg.eval.batch_size,
    )
    correct = np.array(
        [labels[i] == r.target for i, r in zip(s.probabilities.argmax(axis=1), records, strict=True)]
    )
    return float(correct.mean()), correct.astype(np.float64)


def loop_gate(
    cfg: Config,
    uri: str,
    name: str,
    champion: str,
    challenger: str,
    test: list[Record],
    holdout: list[Record],
    labels: list[str],
) -> dict[str, Any]:
    """Challenger vs champion on the frozen test split and the held-out new labels."""
    from tuneline.registry import resolve
    from tuneline.stats import two_sample_bootstrap

    scores: dict[str, dict[str, Any]] = {}
    for who, version in (("champion", champion), ("challenger", challenger)):
        model, processor = resolve.load(f"{name}/{version}", uri)
        t, tc = _accuracy(model, processor, test, labels, cfg)
        h, hc = _accuracy(model, processor, holdout, labels, cfg)
        scores[who] = {"version": version, "test_accuracy": t, "holdout_accuracy": h, "_t": tc, "_h": hc}
        del model
    ch, cp = scores["champion"], scores["challenger"]
    test_delta = cp["test_accuracy"] - ch["test_accuracy"]
    rules = [
        {
            "rule": f"frozen test accuracy within {cfg.loop.max_regression:g} of the champion's "
            f"({cp['test_accuracy']:.4f} vs {ch['test_accuracy']:.4f})",
            "passed": bool(test_delta >= -cfg.loop.max_regression - 1e-12),
        }
    ]
    if holdout:
        hd = cp["holdout_accuracy"] - ch["holdout_accuracy"]
        rules.append(
            {
                "rule": "held-out new labels: accuracy not below the champion's "
                f"({cp['holdout_accuracy']:.4f} vs {ch['holdout_accuracy']:.4f}, n={len(holdout)})",
                "passed": bool(hd >= -1e-12),
            }
        )
    ci = None
    if len(test) >= 2:
        c = two_sample_bootstrap(np.mean, ch["_t"], cp["_t"], n_resamples=1000, seed=cfg.run.seed)
        ci = [c.low, c.high]
    for s in scores.values():
        s.pop("_t"), s.pop("_h")
    return {
        "passed": all(r["passed"] for r in rules),
        "rules": rules,
        "scores": scores,
        "test_delta": test_delta,
        "test_delta_ci95": ci,
        "against": "champion",
    }


def run_stages(cfg: Config, run: RunDir, warm: Path | None) -> None:
    from tuneline.stages import evaluate, prepare, register, train

    done = set(run.summary_model().stages)
    for name, module in (
        ("prepare", prepare),
        ("train", train),
        ("evaluate", evaluate),
        ("register", register),
    ):
        if name in done:
            continue
        with run.stage(name):
            if name == "train":
                train.run(cfg, run, callbacks=[WarmStart(warm)] if warm else [])
            else:
                module.run(cfg, run)


def retrain(
    cfg: Config,
    round_dir: Path,
    round_no: int,
    pool: list[Candidate],
    labels: dict[str, str],
    on_run_dir=None,
) -> Retrained:
    """``on_run_dir(path)`` is told the run directory before training starts (the step marker)."""
    from tuneline.registry import resolve, store

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    client = store.client(uri)
    name = cfg.model_name
    champ = resolve.resolve(f"{name}@champion", uri, client=client)
    snap = champion_snapshot(champ.tags)
    splits = {s: snap.records(s) for s in ("train", "val", "test")}
    class_labels = list(cfg.eval.labels or sorted({r.target for r in splits["train"]}))
    by_id = {c.id: c for c in pool}
    new = [by_id[rid].record(label) for rid, label in sorted(labels.items()) if rid in by_id]
    bad = sorted({r.target for r in new} - set(class_labels))
    if bad:
        raise DataError(
            f"new labels outside the champion's classes: {bad}", hint=f"use one of {class_labels}"
        )
    leaked = sorted(leaking(new, splits["test"] + splits["val"]))
    if leaked:
        log.warning(
            "%d production records near-duplicate frozen test/val records: not used (%s)",
            len(leaked),
            ", ".join(leaked[:5]),
        )
    new = [r for r in new if r.id not in set(leaked)]
    held = [r for r in new if _holdout(r.id, cfg.loop.holdout_share)]
    added = [r for r in new if not _holdout(r.id, cfg.loop.holdout_share)]
    if not added:
        raise DataError("no new labelled records left to train on", hint="label more (loop select / import)")

    data_dir = round_dir / "dataset"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = [_row(r, s, data_dir) for s, recs in splits.items() for r in recs]
    rows += [_row(r, "train", data_dir) for r in added]
    atomic_write_text(data_dir / "data.jsonl", "\n".join(rows) + "\n")
    atomic_write_text(data_dir / "holdout.jsonl", "".join(_row(r, "test", data_dir) + "\n" for r in held))
    cfg2 = derived_config(cfg, data_dir / "data.jsonl", round_no)

    marker = round_dir / "retrain_run.txt"
    if marker.is_file() and Path(marker.read_text().strip(), "summary.json").is_file():
        run = RunDir(Path(marker.read_text().strip()))  # a killed retrain: continue that run
    else:
        run = RunDir.create(cfg2, None)
        atomic_write_text(marker, str(run.path) + "\n")
    if on_run_dir:
        on_run_dir(str(run.path))
    run_stages(cfg2, run, champ.source_dir if cfg.loop.warm_start else None)

    summary = run.summary_model()
    version = str((summary.registry and summary.registry.version) or _version_of(client, name, run))
    gate = loop_gate(cfg2, uri, name, champ.version, version, splits["test"], held, class_labels)
    fingerprint = (summary.data and summary.data.fingerprint) or ""
    tags = {
        "tuneline.gate_passed": str(gate["passed"]).lower(),
        "tuneline.gate_against": "champion",
        "tuneline.gate_summary": "; ".join(
            f"{'pass' if r['passed'] else 'FAIL'}: {r['rule']}" for r in gate["rules"]
        )[:4000],
        "tuneline.loop_round": str(round_no),
        "tuneline.loop_champion_version": champ.version,
        "tuneline.loop_parent_dataset": champ.tags.get("tuneline.data_fingerprint", ""),
        "tuneline.loop_new_labels": str(len(added)),
        "tuneline.loop_holdout": str(len(held)),
        "tuneline.loop_leaked": json.dumps(leaked)[:4000],
        "tuneline.loop_warm_start": str(cfg.loop.warm_start).lower(),
    }
    before = dict(client.get_model_version(name, version).tags or {})
    if (
        "tuneline.gate_passed" in before and "tuneline.base_gate_passed" not in before
    ):  # eval.gate vs the base
        tags["tuneline.base_gate_passed"] = before["tuneline.gate_passed"]
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if not gate["passed"]:  # a failed challenger does not stay challenger: the slot serves the champion
        client.set_registered_model_alias(name, "challenger", champ.version)
    atomic_write_text(round_dir / "gate.json", json.dumps(gate, indent=1, default=float) + "\n")
    return Retrained(
        version,
        champ.version,
        gate["passed"],
        gate,
        str(run.path),
        fingerprint,
        champ.tags.get("tuneline.data_fingerprint"),
        len(added),
        len(held),
        leaked,
    )


def _version_of(client, name: str, run: RunDir) -> str:
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("tuneline.run_dir") == str(run.path):
            return str(mv.version)
    raise DataError(f"the retrain run {run.path} registered no version", hint="see its run.log")
