"""Cost preview (planner + price table), bucket URLs, job names, job ids."""

from __future__ import annotations

import math

import pytest

from tuneline.config import load_config
from tuneline.launch import cost
from tuneline.launch.spec import Bucket, build_spec, job_name


def spec_for(config, target="gcp-batch", *overrides):
    return build_spec(load_config(config, list(overrides)), target, job_id="demo")


def test_cost_preview_from_the_planner_and_the_spot_price_override(cloud_config):
    from tuneline.training.plan import model_profile

    spec = spec_for(cloud_config)
    p = cost.preview(spec)
    params = model_profile(spec.cfg.model, spec.cfg.train).params
    tokens = 1000 * 4 * 2 * 64  # steps x micro-batch x processes x max_seq_length
    assert p.steps == 1000 and p.tokens == tokens and p.accelerators == 2
    assert p.train_flops == 4 * params * tokens  # LoRA: forward + backward through frozen weights
    assert p.hours == pytest.approx(p.train_flops / (2 * 312e12 * 0.35) / 3600)
    assert p.accelerator_hours == pytest.approx(2 * p.hours)
    assert (p.price_per_hour, p.price_source) == (1.0, "launch.spot_prices")
    assert p.cost == pytest.approx(p.accelerator_hours)
    assert p.fits is True and p.peak_memory_gib > 0
    full = cost.preview(spec_for(cloud_config, "gcp-batch", "train.method=full"))
    assert full.train_flops == pytest.approx(1.5 * p.train_flops)  # weight gradients too
    assert "2 x A100-40GB (spot)" in cost.render(p)


def test_price_sources_in_order(cloud_config):
    on_demand = spec_for(cloud_config, "gcp-batch", "launch.spot=false")
    assert cost.price(on_demand) == (cost.PRICES["A100-40GB"][0], "built-in table (indicative)")
    own = spec_for(
        cloud_config,
        "gcp-batch",
        "launch.spot=false",
        "train.cost.accelerator=A100",
        "train.cost.price_per_hour=2.5",
    )
    assert cost.price(own) == (2.5, "train.cost.price_per_hour")
    table = spec_for(cloud_config, "gcp-batch", "launch.spot=false", "launch.prices={a100: 3.3}")
    assert cost.price(table) == (3.3, "launch.prices")
    spot = spec_for(cloud_config, "gcp-batch", "launch.spot_prices={}")
    assert cost.price(spot) == (cost.PRICES["A100-40GB"][1], "built-in table (indicative)")


def test_steps_counted_from_the_data_when_max_steps_is_unset(cloud_config):
    spec = spec_for(cloud_config, "gcp-batch", "train.max_steps=null", "train.epochs=2")
    steps, source = cost.training_steps(spec)
    train = int(48 * 0.8)  # the shapes fixture's 48 records, split.train 0.8
    assert steps == 2 * math.ceil(train / (4 * 2)) and str(train) in source


def test_bucket_urls_and_job_names(tmp_path, monkeypatch):
    assert Bucket.parse("gs://acme/runs/x/") == Bucket("gs://acme/runs/x", "gs", "acme", "runs/x")
    assert Bucket.parse("s3://acme") == Bucket("s3://acme", "s3", "acme", "")
    monkeypatch.chdir(tmp_path)
    local = Bucket.parse("shared")
    assert local.is_local and local.path == str(tmp_path / "shared")
    with pytest.raises(ValueError):
        Bucket.parse("gs://")
    assert job_name("My_Run.v2 final") == "my-run-v2-final"
    assert job_name("2026-run") == "tl-2026-run"
    assert len(job_name("x" * 80)) == 40


def test_jobs_command_refuses_an_id_without_a_target():
    from typer.testing import CliRunner

    from tuneline.cli import app

    result = CliRunner().invoke(app, ["jobs", "status", "projects/p/locations/r/jobs/x"])
    assert result.exit_code == 1
    assert "TARGET:ID" in result.stderr


def test_a_missing_engine_client_says_which_extra_to_install(monkeypatch):
    import sys

    from tuneline.errors import TunelineError
    from tuneline.launch.targets import get_target

    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    with pytest.raises(TunelineError, match="kubernetes") as err:
        get_target("gke")
    assert "[launch]" in err.value.hint
