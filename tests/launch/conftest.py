"""Launch fixtures: a cloud config, a loopback stand-in server, an in-memory gs:// for staging."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_config

CLOUD = """
run: {{name: demo, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  max_seq_length: 64
train: {{batch_size: 4, max_steps: 1000, save_steps: 100}}
registry: {{enabled: false}}
launch:
  image: us-docker.pkg.dev/acme/ml/tuneline:0.1.0
  accelerator: A100-40GB
  nodes: 2
  spot: true
  max_retries: 4
  project: acme-ml
  region: us-central1
  service_account: trainer@acme-ml.iam.gserviceaccount.com
  bucket: gs://acme-tuneline/runs
  env: {{WANDB_MODE: offline}}
  secrets: {{HF_TOKEN: hf-token}}
  spot_prices: {{A100-40GB: 1.0}}
  gke: {{service_account: trainer}}
"""


@pytest.fixture
def cloud_config(workdir, shapes_dir) -> Path:
    return write_config(workdir, CLOUD.format(data=shapes_dir / "data.jsonl"))


@pytest.fixture
def standin():
    from tests.launch.standin import serve

    state, server = serve()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def memory_gs(monkeypatch):
    """gs:// served by fsspec's in-memory filesystem: staging the config needs no gcsfs here."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class MemoryGS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store: dict = {}
        pseudo_dirs = [""]

    from fsspec.registry import _registry

    saved = _registry.get("gs")
    MemoryGS.store.clear()
    fsspec.register_implementation("gs", MemoryGS, clobber=True)
    yield MemoryGS()
    _registry.pop("gs", None)
    if saved is not None:
        _registry["gs"] = saved
