"""The loop's state folder: one JSON file of step markers, written atomically.

``state.json`` holds the current round (a number), what each step of it produced, and the ids already
collected, selected and labelled. ``tuneline loop run`` reads it to skip finished steps: a run killed
between steps resumes at the first unfinished one; a step whose marker is missing is redone from its
inputs (every step is safe to redo: registration reuses a version registered from the same run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneline.runs import atomic_write_text

STEPS = ("collect", "select", "import", "retrain", "canary", "decide")


@dataclass
class LoopState:
    path: Path
    round: int = 1
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # this round's finished steps
    rounds: list[dict[str, Any]] = field(default_factory=list)  # finished rounds, oldest first
    collected_until: float = 0.0  # newest response timestamp already in a pool
    labelled: list[str] = field(default_factory=list)  # response ids whose labels went into a dataset

    @classmethod
    def load(cls, folder: Path) -> LoopState:
        path = folder / "state.json"
        if not path.is_file():
            return cls(path)
        d = json.loads(path.read_text())
        return cls(
            path,
            round=int(d.get("round", 1)),
            steps=dict(d.get("steps", {})),
            rounds=list(d.get("rounds", [])),
            collected_until=float(d.get("collected_until", 0.0)),
            labelled=list(d.get("labelled", [])),
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "round": self.round,
            "steps": self.steps,
            "rounds": self.rounds,
            "collected_until": self.collected_until,
            "labelled": self.labelled,
        }
        atomic_write_text(self.path, json.dumps(body, indent=1, sort_keys=True) + "\n")

    @property
    def round_dir(self) -> Path:
        return self.path.parent / f"round-{self.round:04d}"

    def done(self, step: str) -> dict[str, Any] | None:
        return self.steps.get(step)

    def mark(self, step: str, **result: Any) -> None:
        self.steps[step] = result
        self.save()

    def next_round(self) -> None:
        self.rounds.append({"round": self.round, **self.steps})
        self.round += 1
        self.steps = {}
        self.save()
