"""The sweep section is strict: one way to name trials, candidate keys checked, every problem at once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.conftest import write_config
from tuneline.config.schema import SweepConfig
from tuneline.errors import ConfigError
from tuneline.sweep import plan


def test_exactly_one_way_to_give_trials():
    with pytest.raises(ValidationError, match="exactly one of candidates, grid or space"):
        SweepConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        lr = {"type": "float", "low": 1e-4, "high": 1e-2}
        SweepConfig(grid={"train.method": ["lora"]}, space={"train.learning_rate": lr})


def test_candidates_may_not_change_data_or_evaluation():
    with pytest.raises(ValidationError, match="changes the data section"):
        SweepConfig(candidates=[{"name": "a", "overrides": {"data.max_seq_length": 32}}])
    with pytest.raises(ValidationError, match="repeated: a"):
        SweepConfig(candidates=[{"name": "a", "overrides": {"train.method": "full"}}] * 2)
    with pytest.raises(ValidationError, match="needs sweep.trials"):
        SweepConfig(space={"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    with pytest.raises(ValidationError, match="tpe is for sweep.space"):
        SweepConfig(grid={"train.method": ["lora"]}, sampler="tpe")


def test_grid_is_every_combination_with_stable_keys():
    sweep = SweepConfig(
        grid={"model.base": ["tiny:llama@s", "tiny:llama@m"], "train.method": ["lora", "full"]}
    )
    specs = plan.fixed_trials(sweep)
    assert len(specs) == 4 and len({s.key for s in specs}) == 4
    assert specs == plan.fixed_trials(sweep)
    assert {"model.base": "tiny:llama@m", "train.method": "full"} in [s.overrides for s in specs]


def test_every_bad_candidate_is_reported_at_once(tmp_path):
    from tuneline.config import load_config

    path = write_config(tmp_path, """
model: {base: "tiny:llama"}
data: {sources: [{type: jsonl, path: d.jsonl}]}
sweep:
  candidates:
    - {name: ok, overrides: {train.method: full}}
    - {name: typo, overrides: {train.methd: full}}
    - {name: bad, overrides: {train.method: qlora2}}
""")  # fmt: skip
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        plan.check_all(cfg)
    text = str(info.value)
    assert "sweep trial typo: train.methd" in text and "sweep trial bad: train.method" in text
    assert "ok" not in [p.split(":")[0].split()[-1] for p in info.value.problems]
    trial = plan.trial_config(cfg, "ok", {"train.method": "full"})
    assert trial.train.method == "full" and trial.sweep is None and cfg.train.method == "lora"
