"""Checkpoints that survive any failure: a checksum manifest is each checkpoint's commit marker.

The Trainer writes ``checkpoint-N/`` file by file; a process killed meanwhile leaves a folder that
looks like a checkpoint. So after every save we fsync the files and write ``tuneline-manifest.json``
(sha256 of every file) atomically, last. A checkpoint counts only if its manifest exists and every
checksum matches. Resuming takes the newest checkpoint that verifies and says why it skipped any
newer ones; the Trainer's own ``resume_from_checkpoint=True`` validates nothing (see
shared/notes/training-facts.md: a truncated file crashes it, a missing optimizer.pt silently
restarts the optimizer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from transformers import TrainerCallback

from tuneline.runs import atomic_write_json, is_main_process

log = logging.getLogger("tuneline.train")
MANIFEST = "tuneline-manifest.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")
# A resume needs these besides the weights; without them the Trainer would silently start them fresh.
REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        files[path.relative_to(folder).as_posix()] = _sha256(path)
    atomic_write_json(folder / MANIFEST, {"step": step, "files": files})


def verify(folder: Path) -> str | None:
    """None when the checkpoint is complete and intact, else why not."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest (the save did not finish)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        return f"incomplete: {', '.join(missing)} missing"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum (corrupt or modified)"
    return None


def newest_valid(checkpoints: Path) -> Path | None:
    """The newest checkpoint that verifies; newer broken ones are logged and left alone."""
    if not checkpoints.is_dir():
        return None
    candidates = sorted((int(m.group(1)), p) for p in checkpoints.iterdir() if (m := _STEP.match(p.name)))
    for _step, path in reversed(candidates):
        problem = verify(path)
        if problem is None:
            return path
        log.warning("skipping %s: %s", path.name, problem)
    return None


class ManifestCallback(TrainerCallback):
    """After each save, seal the new checkpoint with its manifest."""

    def on_save(self, args, state, control, **kwargs):
        from tuneline.training.distributed import barrier

        barrier()  # every rank has written its part (rng_state_<rank>.pth) before the seal
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if is_main_process() and folder.is_dir():
            write_manifest(folder, state.global_step)
        barrier()
