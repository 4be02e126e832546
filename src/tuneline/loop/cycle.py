"""The loop's steps on its state folder, one function each, and ``run``: all of them, idempotently.

    tuneline loop run CONFIG

``run`` does collect -> select -> (labels present?) -> retrain -> canary -> decide, skipping every step
whose marker is in ``state.json`` for the current round. So a scheduler can call it as often as it likes:
a second call with nothing new does nothing (it reports what it waits for), and a call killed in the
middle is completed by the next one without a second dataset version or a second registered version
(the retrain run directory is recorded before training, registration of one run directory is idempotent).
A decided canary (promoted or rolled back) closes the round; the next call starts a new one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.config import Config
from tuneline.errors import DataError
from tuneline.loop import collect as collect_mod
from tuneline.loop import labels as labels_mod
from tuneline.loop import select as select_mod
from tuneline.loop.state import LoopState

log = logging.getLogger("tuneline.loop")


@dataclass
class Outcome:
    did: list[str] = field(default_factory=list)
    waiting: str | None = None

    def __str__(self) -> str:
        done = ", ".join(self.did) if self.did else "nothing to do"
        return done + (f"; waiting: {self.waiting}" if self.waiting else "")


def state_of(cfg: Config) -> LoopState:
    st = LoopState.load(Path(cfg.loop.state_dir))
    st.round_dir.mkdir(parents=True, exist_ok=True)
    return st


def inputs_root(cfg: Config) -> Path:
    return Path(cfg.serve.state_dir) / "inputs"


def class_labels(cfg: Config) -> list[str]:
    """The task's classes: eval.labels, else the champion's training labels."""
    if cfg.eval.labels:
        return list(cfg.eval.labels)
    from tuneline.loop.retrain import champion_snapshot
    from tuneline.registry import resolve, store

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    mv = resolve.model_version(store.client(uri), f"{cfg.model_name}@champion")
    return sorted({r.target for r in champion_snapshot(dict(mv.tags or {})).records("train")})


def do_collect(cfg: Config, st: LoopState, since: float | None = None) -> list[collect_mod.Candidate]:
    since = st.collected_until if since is None else since
    pool = collect_mod.collect(cfg, st.round_dir / "pool.jsonl", since, class_labels(cfg))
    pool = [c for c in pool if c.id not in set(st.labelled)]
    collect_mod.write_pool(st.round_dir / "pool.jsonl", pool)
    st.collected_until = max([st.collected_until, *(c.ts for c in pool)])
    st.mark("collect", candidates=len(pool), until=st.collected_until)
    return pool


def _train_images(cfg: Config) -> list[str]:
    from tuneline.loop.retrain import champion_snapshot
    from tuneline.registry import resolve, store

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    mv = resolve.model_version(store.client(uri), f"{cfg.model_name}@champion")
    return [r.images[0] for r in champion_snapshot(dict(mv.tags or {})).records("train") if r.images]


def _image_feats(path: str) -> list[float]:
    from PIL import Image

    from tuneline.serving.drift import image_features

    with Image.open(path) as im:
        return list(image_features(im).values())


def _train_texts(cfg: Config) -> list[str]:
    from tuneline.loop.retrain import champion_snapshot
    from tuneline.registry import resolve, store

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    mv = resolve.model_version(store.client(uri), f"{cfg.model_name}@champion")
    recs = champion_snapshot(dict(mv.tags or {})).records("train")
    return [
        " ".join(p["text"] for m in r.prompt_messages for p in m["content"] if p.get("type") == "text")
        for r in recs
    ]


def do_select(cfg: Config, st: LoopState, budget: int | None = None, strategy: str | None = None) -> dict:
    import numpy as np

    from tuneline.serving.drift import text_features

    pool = collect_mod.read_pool(st.round_dir / "pool.jsonl")
    budget = budget or cfg.loop.budget
    strategy = strategy or cfg.loop.strategy
    labels = class_labels(cfg)
    todo = [c for c in pool if c.label is None]  # feedback with a label needs no human
    n = len(todo)
    probs = other = features = reference = None
    if n and strategy in ("uncertainty", "margin", "entropy", "disagreement"):
        probs = np.array([[c.probs.get("champion", {}).get(k, 0.0) for k in labels] for c in todo])
        other = np.array(
            [
                [c.probs.get("challenger", c.probs.get("champion", {})).get(k, 0.0) for k in labels]
                for c in todo
            ]
        )
    train_imgs = _train_images(cfg)
    diverse = cfg.loop.diversity == "cluster" and strategy in select_mod.DIVERSE_STRATEGIES
    if n and (strategy == "drift" or diverse):
        if all(c.images for c in todo) and (train_imgs or strategy != "drift"):
            features = np.array([_image_feats(c.images[0]) for c in todo])
            if strategy == "drift":
                reference = np.array([_image_feats(p) for p in train_imgs[:500]])
        elif strategy == "drift" or not any(c.images for c in todo):  # text: the monitor's text stats
            features = np.array([list(text_features(" ".join(c.texts)).values()) for c in todo])
            if strategy == "drift":
                reference = np.array([list(text_features(t).values()) for t in _train_texts(cfg)[:500]])
        if diverse and probs is not None:  # diversity also across what the champion predicts
            features = probs if features is None else np.hstack([features, probs])
    picked: list[int] = []
    if n:
        scores = select_mod.strategy_scores(
            strategy,
            n,
            probs=probs,
            other=other,
            features=features,
            reference=reference,
            seed=cfg.run.seed + st.round,
        )
        with_img = [i for i, c in enumerate(todo) if c.images]
        of_train, among = select_mod.near_duplicates(
            select_mod.image_hashes([todo[i].images[0] for i in with_img]),
            select_mod.image_hashes(train_imgs),
        )
        exclude = {with_img[i] for i in of_train}
        pairs = [(with_img[i], with_img[j]) for i, j in among]
        seen: dict[str, int] = {}
        for i, c in enumerate(todo):  # text-only requests: exact (normalised) text duplicates
            if not c.images:
                key = select_mod.text_key(c.texts)
                if key in seen:
                    pairs.append((seen[key], i))
                seen.setdefault(key, i)
        picked = select_mod.select_batch(
            strategy,
            scores,
            budget,
            features=features,
            diversity=cfg.loop.diversity,
            factor=cfg.loop.diversity_factor,
            exclude=exclude,
            pairs=pairs,
            seed=cfg.run.seed + st.round,
        )
    chosen = [todo[i] for i in picked]
    files = labels_mod.export_tasks(st.round_dir, chosen, labels, inputs_root(cfg))
    result = {
        "strategy": strategy,
        "budget": budget,
        "selected": len(chosen),
        "candidates": n,
        "feedback_labels": len(pool) - n,
        "files": {k: str(v) for k, v in files.items()},
    }
    st.mark("select", **result)
    return result


def do_import(cfg: Config, st: LoopState, path: Path) -> int:
    pool = {c.id: c for c in collect_mod.read_pool(st.round_dir / "pool.jsonl")}
    new = labels_mod.read_labels(path, pool, class_labels(cfg), inputs_root(cfg))
    merged = labels_mod.merge_labels(st.round_dir / "labels.jsonl", new)
    st.mark("import", labels=len(merged), files=[*(st.done("import") or {}).get("files", []), str(path)])
    return len(new)


def round_labels(st: LoopState) -> dict[str, str]:
    """Imported labels plus corrected labels from feedback (imports win)."""
    pool = collect_mod.read_pool(st.round_dir / "pool.jsonl")
    out = {c.id: c.label for c in pool if c.label}
    out.update(labels_mod.load_labels(st.round_dir / "labels.jsonl"))
    return out


def do_retrain(cfg: Config, st: LoopState) -> dict:
    from tuneline.loop.decide import _client, record
    from tuneline.loop.retrain import retrain

    pool = collect_mod.read_pool(st.round_dir / "pool.jsonl")
    labels = round_labels(st)
    classes = set(class_labels(cfg))
    odd = sorted(rid for rid, lab in labels.items() if lab not in classes)
    if odd:  # only feedback can carry these (imports are validated): one user's typo must not block the loop
        log.warning("%d feedback labels are not classes of the task, left out: %s", len(odd), odd[:5])
        labels = {rid: lab for rid, lab in labels.items() if lab in classes}
    if len(labels) < cfg.loop.min_labels:
        raise DataError(
            f"{len(labels)} new labels, fewer than loop.min_labels ({cfg.loop.min_labels})",
            hint="import labels (tuneline loop import) or lower loop.min_labels",
        )
    r = retrain(
        cfg, st.round_dir, st.round, pool, labels, on_run_dir=lambda p: st.mark("retrain_started", run_dir=p)
    )
    result = {
        "version": r.version,
        "champion_version": r.champion_version,
        "gate_passed": r.gate_passed,
        "run_dir": r.run_dir,
        "dataset": r.dataset,
        "parent_dataset": r.parent_dataset,
        "added": r.added,
        "holdout": r.holdout,
        "leaked": r.leaked,
        "gate": [x["rule"] + (" ok" if x["passed"] else " FAILED") for x in r.gate["rules"]],
    }
    record(
        _client(cfg),
        cfg.model_name,
        {
            "action": "retrain",
            "version": r.version,
            "champion": r.champion_version,
            "gate_passed": r.gate_passed,
            "dataset": r.dataset,
            "parent_dataset": r.parent_dataset,
            "added": r.added,
        },
    )
    st.labelled = sorted(set(st.labelled) | set(labels))
    st.mark("retrain", **result)
    return result


def run(cfg: Config) -> Outcome:
    from tuneline.loop import decide as decide_mod

    st, out = state_of(cfg), Outcome()
    if not (Path(cfg.serve.state_dir) / "ab.sqlite").is_file():
        out.waiting = (
            f"no serving log yet in {cfg.serve.state_dir} (serve traffic with serve.loop.keep_inputs)"
        )
        return out
    if not st.done("collect"):
        pool = do_collect(cfg, st)
        out.did.append(f"collected {len(pool)}")
    if not st.done("select"):
        if not collect_mod.read_pool(st.round_dir / "pool.jsonl"):
            st.steps.pop("collect", None)  # nothing came in: collect again next time
            st.save()
            out.waiting = "no production requests with kept inputs yet (serve.loop.keep_inputs)"
            return out
        s = do_select(cfg, st)
        out.did.append(f"selected {s['selected']} for labelling ({s['files']['label_studio']})")
    if not st.done("retrain"):
        n = len(round_labels(st))
        if n < cfg.loop.min_labels:
            out.waiting = (
                f"{n} labels, need {cfg.loop.min_labels}: label {st.round_dir / 'tasks.json'} "
                "and run `tuneline loop import`"
            )
            return out
        r = do_retrain(cfg, st)
        out.did.append(
            f"retrained: version {r['version']} (gate {'passed' if r['gate_passed'] else 'FAILED'})"
        )
    r = st.done("retrain") or {}
    if not st.done("canary"):
        if not r.get("gate_passed"):
            st.mark("canary", skipped=True)
            st.next_round()
            out.did.append("challenger failed the gate against the champion: no canary; round closed")
            return out
        info = decide_mod.canary(cfg, r["version"])
        st.mark("canary", **info)
        out.did.append(f"canary: version {r['version']} at {info['weight']:g}%")
        return out
    d = decide_mod.decide(cfg)
    if d.action == "wait":
        out.waiting = d.reason
        return out
    st.mark("decide", action=d.action, reason=d.reason, version=d.version, at=time.time())
    st.next_round()
    out.did.append(f"{d.action} version {d.version}: {d.reason}")
    return out
