"""run: prepare → train → evaluate → register in one new run directory.

tuneline run CONFIG
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from tuneline.config import Config
from tuneline.offline import guard as offline_guard
from tuneline.offline import resolve as resolve_offline
from tuneline.runs import RunDir
from tuneline.stages import evaluate, prepare, register, train

STAGE_MODULES = {"prepare": prepare, "train": train, "evaluate": evaluate, "register": register}


Reporter = Callable[[str, str, float], None]  # (stage, "start" | "done", seconds)


def preflight(cfg: Config) -> None:
    """Cheap checks that would otherwise fail a later stage after minutes of work."""
    from tuneline.models.families import get_family
    from tuneline.models.load import PACKAGE_PREFIX, TINY_PREFIX, package_folder, parse_tiny

    if cfg.model.base.startswith(TINY_PREFIX):
        parse_tiny(cfg.model.base)
    if cfg.model.base.startswith(PACKAGE_PREFIX):
        package_folder(cfg.model.base)  # installed, and it names a checkpoint folder
    if cfg.model.family:
        get_family(cfg.model.family)


def run_stage(name: str, cfg: Config, run: RunDir, report: Reporter | None = None):
    started = time.time()
    if report:
        report(name, "start", 0.0)
    offline = resolve_offline(cfg.run.offline)
    with run.stage(name):
        run.record_offline(name, offline)
        with offline_guard(name) if offline else nullcontext():
            result = STAGE_MODULES[name].run(cfg, run)
    if report:
        report(name, "done", time.time() - started)
    return result


def run_all(
    cfg: Config, config_path: str | Path | None = None, report: Reporter | None = None, *, new: bool = False
) -> RunDir:
    """All stages in a new run directory, or, unless ``new``, continuing the newest unfinished run of the
    same config: finished stages are kept and training resumes from its newest valid checkpoint."""
    preflight(cfg)
    run = None if new else RunDir.resumable(cfg)
    if run is None:
        run = RunDir.create(cfg, Path(config_path) if config_path else None)
    elif report:
        report(f"resuming {run.path}", "note", 0.0)
    done = set(run.summary_model().stages)
    for name in STAGE_MODULES:
        if name == "register" and not cfg.registry.enabled:
            continue
        if name in done:
            continue
        run_stage(name, cfg, run, report)
    if not cfg.registry.enabled:
        run.update_summary(complete=True)
    return run
