"""Errors that reach the user: each says what went wrong, where, and what to do.

The CLI maps them to exit codes; the Python API raises them as they are.
"""

from __future__ import annotations


class TunelineError(Exception):
    """Base class for every error tuneline reports to a user.

    ``hint`` says what to do about it; ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TunelineError):
    """One or more problems in a configuration, all reported together."""

    exit_code = 2

    def __init__(self, problems: list[str], *, source: str | None = None, hint: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration{f' {source}' if source else ''}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems), hint=hint)


class DataError(TunelineError):
    """Bad input data: names the file and line (or record) and what to fix."""

    exit_code = 3


class ModelError(TunelineError):
    """A model that cannot be found, built or loaded."""

    exit_code = 4


class RegistryError(TunelineError):
    """The model registry (MLflow) refused or could not be reached."""

    exit_code = 5


class RunDirError(TunelineError):
    """A run directory that is missing, incomplete or in an unexpected state."""

    exit_code = 6


class TrainingInterrupted(TunelineError):
    """Training stopped on a signal after saving a checkpoint: run the same command to resume."""

    exit_code = 75  # EX_TEMPFAIL: launch targets retry on it


class GateFailed(TunelineError):
    """The tuned model did not show what eval.gate demands; the evaluation itself is complete."""

    exit_code = 7


class DriftAlert(TunelineError):
    """The drift monitor's alert is raised (tuneline monitor drift --fail-on-alert)."""

    exit_code = 8


class SweepError(TunelineError):
    """A sweep cannot start or finish (its study, its trials or their results)."""

    exit_code = 10


class OfflineViolation(TunelineError):
    """A stage under run.offline tried to open a connection that leaves the machine."""

    exit_code = 9
