"""Shared fixtures: offline, one thread, a session-wide cache of tiny model presets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    """Tiny presets are built once per test session, in a private cache folder."""
    os.environ["TUNELINE_CACHE_DIR"] = str(tmp_path_factory.mktemp("tuneline-cache"))
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A small generated image+text dataset (chat JSONL + PNGs)."""
    from tuneline_synth.shapes import generate

    out = tmp_path_factory.mktemp("shapes")
    generate(out, n=48, seed=3)
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a fresh working directory, so runs/ and .tuneline/ land in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


TINY_RUN = """
run: {{name: tiny, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified}}
  max_seq_length: 64
train:
  train_projector: true
  learning_rate: 2.0e-3
  batch_size: 8
  max_steps: {steps}
  logging_steps: 2
  save_steps: 5
eval: {{max_new_tokens: 3, batch_size: 16, gate: {{enabled: false}}}}
"""


@pytest.fixture
def tiny_config(workdir, shapes_dir) -> Path:
    return write_config(workdir, TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=6))
