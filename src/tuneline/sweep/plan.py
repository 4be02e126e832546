"""The trials a ``sweep:`` section asks for: each one a named override set of the config.

Candidates and grid points are fixed in advance (one trial each); a search space is sampled by Optuna's
TPE sampler trial by trial. Every trial config is built and validated before the first trial starts, so a
typo in any candidate stops the sweep at once with every problem listed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from tuneline.config import Config, with_overrides
from tuneline.config.schema import SweepConfig

CANDIDATE_PARAM = "candidate"  # the Optuna parameter of a candidate sweep: the candidate's name


@dataclass(frozen=True)
class TrialSpec:
    key: str  # names the trial's run directory; stable across retries of the trial
    params: dict[str, Any]  # the Optuna parameters
    overrides: dict[str, Any]  # dotted config key -> value


def grid_key(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True)
    return "g" + hashlib.sha256(text.encode()).hexdigest()[:10]


def sweep_of(cfg: Config) -> SweepConfig:
    """The config's ``sweep:`` section; a sweep cannot run without one."""
    if cfg.sweep is None:
        from tuneline.errors import SweepError

        raise SweepError("this config has no sweep: section", hint="add sweep: (candidates, grid or space)")
    return cfg.sweep


def fixed_trials(sweep: SweepConfig) -> list[TrialSpec] | None:
    """Every trial of a candidate list or grid, in a fixed order; None for a search space."""
    if sweep.candidates is not None:
        return [TrialSpec(c.name, {CANDIDATE_PARAM: c.name}, dict(c.overrides)) for c in sweep.candidates]
    if sweep.grid is not None:
        keys = sorted(sweep.grid)
        out = []
        for values in itertools.product(*(sweep.grid[k] for k in keys)):
            params = dict(zip(keys, values, strict=True))
            out.append(TrialSpec(grid_key(params), params, dict(params)))
        return out
    return None


def overrides_of(sweep: SweepConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The config overrides of a trial's Optuna parameters."""
    if sweep.candidates is not None:
        by_name = {c.name: c for c in sweep.candidates}
        return dict(by_name[params[CANDIDATE_PARAM]].overrides)
    return dict(params)


def suggest(sweep: SweepConfig, trial) -> dict[str, Any]:
    """Draw (or read back, for a queued trial) the trial's parameters through Optuna's suggest API."""
    if sweep.candidates is not None:
        names = [c.name for c in sweep.candidates]
        return {CANDIDATE_PARAM: trial.suggest_categorical(CANDIDATE_PARAM, names)}
    if sweep.grid is not None:
        return {k: trial.suggest_categorical(k, v) for k, v in sorted(sweep.grid.items())}
    out: dict[str, Any] = {}
    for key, dim in sorted((sweep.space or {}).items()):
        if dim.type == "categorical":
            out[key] = trial.suggest_categorical(key, dim.choices)
            continue
        # SweepParam validates that an int or float dimension has both bounds
        assert dim.low is not None and dim.high is not None
        if dim.type == "int":
            out[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            out[key] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log)
    return out


def trial_config(cfg: Config, spec_key: str, overrides: dict[str, Any]) -> Config:
    """The config of one trial: the sweep's config with the trial's overrides, without the sweep section."""
    return with_overrides(cfg, overrides, source=f"sweep trial {spec_key}:")


def check_all(cfg: Config) -> list[TrialSpec] | None:
    """Build every fixed trial's config once: all problems of all candidates in one ConfigError."""
    from tuneline.errors import ConfigError

    specs = fixed_trials(sweep_of(cfg))
    problems: list[str] = []
    for spec in specs or []:
        try:
            trial_config(cfg, spec.key, spec.overrides)
        except ConfigError as exc:
            problems += exc.problems  # each names the trial and the key
    if problems:
        raise ConfigError(problems, source="sweep")
    return specs
