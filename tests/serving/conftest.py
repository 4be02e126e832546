"""Serving fixtures: one real MLflow registry with tiny registered versions, and real servers on loopback.

The registry (session-wide) holds three versions of ``shapes`` on ``tiny:gemma3``: two LoRA adapters with
different random weights (so they answer differently), each with the processor and the drift reference
profile of the shapes training images, and a broken one (an adapter config without weights) for the
failed-load path. Aliases are set directly with MlflowClient.set_registered_model_alias.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL = "shapes"


@dataclass
class Registry:
    uri: str
    name: str
    client: object
    versions: dict[str, str]  # "a", "b", "broken" -> version
    records: list
    data: Path

    def point(self, alias: str, which: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, self.versions[which])


def shapes_records(folder: Path) -> list:
    from tuneline.config.schema import JsonlSource
    from tuneline.data.sources import jsonl

    return jsonl.read(JsonlSource(type="jsonl", path=folder / "data.jsonl")).records


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    import torch
    from peft import get_peft_model

    from tuneline.config.schema import ModelConfig, TrainConfig
    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.registry import store
    from tuneline.serving.profile import write_into
    from tuneline.training.adapters import lora_config
    from tuneline_synth.shapes import generate

    root = tmp_path_factory.mktemp("serve-registry")
    data = root / "shapes"
    generate(data, n=300, seed=11)
    records = shapes_records(data)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = store.client(uri)
    exp = client.create_experiment("serve-tests", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    resolved = resolve_base(ModelConfig(base="tiny:gemma3"))
    processor = load_processor(resolved)
    versions: dict[str, str] = {}
    for which, seed in (("a", 1), ("b", 2), ("broken", 3)):
        folder = root / f"adapter-{which}"
        torch.manual_seed(seed)
        model = get_peft_model(
            load_model(resolved), lora_config(TrainConfig(train_projector=True), resolved.family)
        )
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.3)
        model.save_pretrained(folder)
        processor.inner.save_pretrained(folder)
        if which == "broken":
            (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
        else:
            write_into(folder, records[:200], model, processor)
        run = client.create_run(exp, run_name=f"adapter-{which}")
        client.log_artifacts(run.info.run_id, str(folder), "adapter")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            MODEL,
            source=f"{run.info.artifact_uri}/adapter",
            run_id=run.info.run_id,
            tags={"tuneline.base_model": "tiny:gemma3"},
        )
        versions[which] = str(mv.version)
    reg = Registry(uri, MODEL, client, versions, records, data)
    reg.point("champion", "a")
    reg.point("challenger", "b")
    return reg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE_CONFIG = """
run: {{name: shapes}}
model: {{base: "tiny:gemma3"}}
data: {{sources: [{{type: jsonl, path: "{data}"}}]}}
registry: {{tracking_uri: "{uri}", model_name: {name}}}
serve:
{serve}
"""


def serve_config(folder: Path, registry: Registry, serve: dict):
    from tuneline.config import load_config

    serve = {"state_dir": str(folder / "state"), "watch": {"interval_s": 0.2}, **serve}
    text = SERVE_CONFIG.format(
        data=registry.data / "data.jsonl",
        uri=registry.uri,
        name=registry.name,
        serve="\n".join(f"  {k}: {json.dumps(v)}" for k, v in serve.items()),
    )
    path = folder / "serve.yaml"
    path.write_text(text)
    return load_config(path, [])


@dataclass
class Running:
    url: str
    app: object

    @property
    def server(self):
        return self.app.state.server


@contextmanager
def running_server(cfg, *, ready_timeout: float = 120):
    """A real uvicorn server in a thread on a free loopback port; waits until /ready."""
    import httpx
    import uvicorn

    from tuneline.serving.app import create_app

    app = create_app(cfg)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"server at {url} did not become ready")
            time.sleep(0.05)
        yield Running(url, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def png_data_uri(img) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
