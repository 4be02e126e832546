"""Kept request inputs for the closed loop (``serve.loop.keep_inputs``, opt-in, off by default).

When on, each answered request's user inputs are written under ``serve.state_dir/inputs``:
``images/<sha256>.png`` (content-addressed, so the same image sent twice is stored once) and
``requests/<input_id>.json`` (the text parts, PII redacted with the detector data validation uses,
and the image names). ``input_id`` is the hash of that content; the A/B log's ``input_id`` column
points at it. Files older than ``serve.loop.retention_days`` are deleted as new ones are written.
Encoding and writing happen on one background thread: a request never waits on the disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("tuneline.serve")

PURGE_EVERY_S = 600.0


class InputKeeper:
    def __init__(self, root: Path, cfg: Any) -> None:
        self.root = root
        self.cfg = cfg
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "requests").mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tuneline-keep")
        self._purged = 0.0

    def keep(self, messages: list[dict], images: list) -> str:
        """The request's input id; the files are written in the background."""
        from tuneline.data.checks.pii import redact

        texts = [
            p["text"]
            for m in messages
            if m.get("role") == "user"
            for p in m.get("content", [])
            if p.get("type") == "text"
        ]
        if self.cfg.redact_pii:
            texts = [redact(t) for t in texts]
        digests = []
        for img in images:  # raw pixels: cheap to hash here, the PNG is encoded off the request path
            h = hashlib.sha256(f"{img.mode}|{img.size}|".encode())
            h.update(img.tobytes())
            digests.append(h.hexdigest())
        body = {"texts": texts, "images": [f"images/{d}.png" for d in digests]}
        input_id = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        self._pool.submit(self._write, input_id, body, list(zip(digests, images, strict=True)))
        return input_id

    def _write(self, input_id: str, body: dict, images: list) -> None:
        try:
            for digest, img in images:
                path = self.root / "images" / f"{digest}.png"
                if not path.exists():
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    _atomic(path, buf.getvalue())
            path = self.root / "requests" / f"{input_id}.json"
            _atomic(path, json.dumps(body | {"ts": time.time()}).encode())
            if time.time() - self._purged > PURGE_EVERY_S:
                self.purge()
        except Exception:  # noqa: BLE001 - keeping inputs must never fail a request
            log.exception("could not keep the inputs of request %s", input_id)

    def purge(self, now: float | None = None) -> int:
        """Delete kept files older than the retention period; how many were deleted."""
        now = time.time() if now is None else now
        self._purged = now
        cutoff = now - self.cfg.retention_days * 86400
        gone = 0
        for sub in ("requests", "images"):
            for path in (self.root / sub).iterdir():
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        gone += 1
                except FileNotFoundError:
                    continue
        return gone

    def flush(self) -> None:
        self._pool.submit(lambda: None).result(timeout=30)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
