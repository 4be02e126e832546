from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tests.conftest import write_config
from tuneline.cli import app
from tuneline.config import config_hash, load_config, to_dict, to_yaml
from tuneline.errors import ConfigError

MINIMAL = "model: {base: 'tiny:llama'}\ndata: {sources: [{type: jsonl, path: data.jsonl}]}\n"


def problems(path: Path, overrides=(), env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, env=env or {})
    return info.value.problems


def test_minimal_config_gets_schema_defaults(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL), env={})
    assert cfg.model.base == "tiny:llama"
    assert (
        cfg.train.method == "lora" and cfg.train.bf16 is False and cfg.train.gradient_checkpointing is False
    )
    assert cfg.data.sources[0].path == (tmp_path / "data.jsonl").resolve()  # relative to the config file


def test_three_kinds_of_error_in_one_run_with_paths_and_suggestion(tmp_path):
    path = write_config(
        tmp_path, MINIMAL + "train:\n  learning_rte: 0.1\n  batch_size: many\n  method: lorra\n"
    )
    found = problems(path)
    assert len(found) == 3, found
    typo = next(p for p in found if "learning_rte" in p)
    assert "train.learning_rte" in typo and "did you mean 'learning_rate'" in typo and f"{path}:4" in typo
    wrong_type = next(p for p in found if "batch_size" in p)
    assert "train.batch_size" in wrong_type and "'many'" in wrong_type and "integer" in wrong_type
    enum = next(p for p in found if "method" in p)
    assert "'lorra'" in enum and "'lora'" in enum and "did you mean 'lora'" in enum


def test_cli_validate_exits_2_and_prints_every_problem(tmp_path):
    path = write_config(tmp_path, MINIMAL + "trian: {}\nmodel_: 3\ntrain: {epochs: -1}\n")
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    text = result.output
    assert "did you mean 'train'" in text and "did you mean 'model'" in text and "train.epochs" in text


def test_unknown_top_level_key_lists_sections(tmp_path):
    (msg,) = problems(write_config(tmp_path, MINIMAL + "deploy: {}\n"))
    assert "deploy: unknown key" in msg and "allowed keys here:" in msg and "registry" in msg


def test_missing_required_key_and_missing_file(tmp_path):
    found = problems(write_config(tmp_path, "model: {}\n"))
    assert any("model.base: required key is missing" in p for p in found)
    assert any(p.startswith("data:") or "data: required" in p for p in found)
    (msg,) = problems(tmp_path / "nope.yaml")
    assert "config file not found" in msg


def test_yaml_syntax_error_names_line(tmp_path):
    (msg,) = problems(write_config(tmp_path, "model:\n  base: [unclosed\ndata: {}\n"))
    assert "not valid YAML" in msg and ":3:" in msg


def test_duplicate_key_is_an_error(tmp_path):
    found = problems(write_config(tmp_path, MINIMAL + "train: {}\ntrain: {}\n"))
    assert any("key given twice" in p for p in found)


def test_split_fractions_must_sum_to_one(tmp_path):
    (msg,) = problems(
        write_config(
            tmp_path,
            "model: {base: x/y}\ndata: {sources: [{type: jsonl, path: d}], split: {train: 0.5, test: 0.1}}\n",
        )
    )
    assert "data.split" in msg and "sum to 1" in msg


def test_extends_deep_merges_and_resolves_paths_against_the_naming_file(tmp_path):
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    write_config(
        base_dir,
        "model: {base: 'tiny:llama'}\n"
        "data: {sources: [{type: jsonl, path: shared.jsonl}], max_seq_length: 99}\n"
        "train: {learning_rate: 0.5, lora: {r: 4, alpha: 8}}\n",
        "base.yaml",
    )
    child = write_config(tmp_path, "extends: base/base.yaml\ntrain: {lora: {r: 32}}\nrun: {name: child}\n")
    cfg = load_config(child, env={})
    assert cfg.data.sources[0].path == (base_dir / "shared.jsonl").resolve()
    assert cfg.data.max_seq_length == 99 and cfg.train.learning_rate == 0.5
    assert cfg.train.lora.r == 32 and cfg.train.lora.alpha == 8  # merged, not replaced
    assert cfg.run.name == "child"


def test_extends_chain_and_cycle(tmp_path):
    write_config(tmp_path, "extends: b.yaml\nmodel: {base: 'tiny:llama'}\n", "a.yaml")
    write_config(tmp_path, "extends: a.yaml\ndata: {sources: [{type: jsonl, path: x}]}\n", "b.yaml")
    assert any("cycle" in p for p in problems(tmp_path / "a.yaml"))
    write_config(tmp_path, "data: {sources: [{type: jsonl, path: x}]}\n", "c.yaml")
    write_config(tmp_path, "extends: c.yaml\nmodel: {base: 'tiny:llama'}\n", "d.yaml")
    write_config(tmp_path, "extends: [d.yaml]\ntrain: {epochs: 2}\n", "e.yaml")
    cfg = load_config(tmp_path / "e.yaml", env={})
    assert cfg.train.epochs == 2 and cfg.model.base == "tiny:llama" and cfg.data.sources[0].path.name == "x"


def test_set_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "train.max_steps=50",
            "train.lora.target_modules=[q_proj, v_proj]",
            "data.sources.0.path=other.jsonl",
            "registry.enabled=false",
        ],
        env={},
    )
    assert cfg.train.max_steps == 50 and cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.sources[0].path == (tmp_path / "other.jsonl").resolve() and cfg.registry.enabled is False
    found = problems(path, ["train.max_steps", "train.lr=1", "train.epochs=fast"])
    assert any("expected KEY.PATH=VALUE" in p for p in found)
    assert any(
        "--set train.lr" in p and "did you mean" not in p or "train.lr: unknown key" in p for p in found
    )
    assert any("--set train.epochs" in p and "train.epochs" in p for p in found)


def test_env_interpolation_never_written_in_clear(tmp_path):
    path = write_config(
        tmp_path,
        MINIMAL + "registry:\n  tracking_uri: https://u:${MLFLOW_PW}@host\n"
        "  experiment: ${EXP:-default-exp}\n",
    )
    cfg = load_config(path, env={"MLFLOW_PW": "s3cret"})
    assert cfg.registry.tracking_uri == "https://u:s3cret@host" and cfg.registry.experiment == "default-exp"
    assert "s3cret" not in to_yaml(cfg) and "${MLFLOW_PW}" in to_yaml(cfg)
    assert "s3cret" not in json.dumps(to_dict(cfg))
    other = load_config(path, env={"MLFLOW_PW": "different"})
    assert config_hash(cfg) == config_hash(other)  # the hash never sees the secret
    (msg,) = problems(path, env={})
    assert "MLFLOW_PW is not set" in msg and "registry.tracking_uri" in msg


def test_config_show_prints_resolved_without_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN_X", "hunter2")
    path = write_config(tmp_path, MINIMAL + "registry: {tracking_uri: 'http://h/${TOKEN_X}'}\n")
    result = CliRunner().invoke(app, ["config", "show", str(path), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "${TOKEN_X}" in result.output and "epochs: 3.0" in result.output


def test_schema_describes_every_field():
    result = CliRunner().invoke(app, ["config", "schema"])
    schema = json.loads(result.output)
    missing = []
    for name, definition in [("Config", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{field}")
    assert not missing, missing


def test_config_is_frozen(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL), env={})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.learning_rate = 1.0  # type: ignore[misc]


def test_errors_inside_a_list_of_sources(tmp_path):
    path = write_config(
        tmp_path,
        "model: {base: 'tiny:llama'}\ndata:\n  sources:\n    - type: manifest\n"
        "      path: t.csv\n      labl_column: target\n      prompt: q\n    - type: jsonn\n"
        "      path: x.jsonl\n",
    )
    found = problems(path)
    assert any(
        f"{path}:6: data.sources[0].labl_column: unknown key; did you mean 'label_column'?" in p
        for p in found
    )
    assert any("data.sources[0].label_column: required key is missing" in p for p in found)
    assert any(
        f"{path}:8: data.sources[1].type: 'jsonn' is not a known type" in p and "did you mean 'jsonl'" in p
        for p in found
    )


def test_check_codes_in_schema_match_the_checks():
    import typing

    from tuneline.config.schema import CheckCode
    from tuneline.data.findings import CHECKS

    assert set(typing.get_args(CheckCode)) == set(CHECKS)
