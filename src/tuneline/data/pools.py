"""The process-pool start method the data checks use (fork when safe, else spawn).

Kept apart from ``data.images`` so that every module running a pool (image inspection, the
near-duplicate confirmation in ``data.checks.duplicates``) can import it without importing the others.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing import get_context
from multiprocessing.context import BaseContext

__all__ = ["pool_context"]


def pool_context() -> BaseContext:
    """``fork`` when this process has a single thread, else ``spawn``.

    ``fork`` starts workers in milliseconds with everything imported, but forking a process that
    runs other threads (torch's OpenMP pool, a logging thread) can deadlock the child on a lock
    held by a thread that does not exist there. A single-threaded process has no such lock, so
    fork is safe exactly then; otherwise ``spawn`` pays ~0.5 s per worker to re-import. Native
    threads are invisible to ``threading``, hence /proc; a Python thread that was just joined can
    linger there for a moment, hence the short wait.
    """
    if sys.platform.startswith("linux"):
        for _ in range(20):
            try:
                n_threads = len(os.listdir("/proc/self/task"))
            except OSError:
                break
            if n_threads == 1:
                return get_context("fork")
            if threading.active_count() > 1:
                break  # a live Python thread: no point waiting
            time.sleep(0.005)
    return get_context("spawn")
