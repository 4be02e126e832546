"""Progress bars on stderr (rich): the one factory, shared by the stages, the Trainer callback and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def bars(label: str, *fields: str, console: Console | None = None) -> Progress:
    """A rich Progress: ``label`` in bold, the bar, done/total, then each of ``fields`` (format strings
    over ``task.fields``), elapsed time and the ETA; on stderr unless ``console`` says otherwise."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


@contextmanager
def phases() -> Iterator:
    """Yield a callback (phase, done, total) that shows one bar per phase name."""
    progress = bars("{task.description}")
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    with progress:
        yield update
