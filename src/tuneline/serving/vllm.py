"""The vLLM backend (GPU machines): start ``vllm serve BASE --enable-lora --lora-modules ...``, proxy to it.

tuneline keeps its own API in front (auth, limits, A/B, cache, metrics, drift, the registry watcher);
generation goes to vLLM's OpenAI server on loopback, each variant as a LoRA module named after its
version (``champion_v3``). A promoted version is loaded into the running vLLM through its runtime LoRA
endpoint (``POST /v1/load_lora_adapter``, enabled by ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), the retired
one unloaded when its last request is done. vLLM is not installable on CPU machines: the command is
rendered and tested there, and run where a GPU is available.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tuneline.errors import ModelError
from tuneline.serving.engine import Delta, Done, GenerationError, GenRequest, Variant
from tuneline.serving.sources import ModelVersionRef

log = logging.getLogger("tuneline.serve")


def base_folder(base: str) -> str:
    """What vllm serve takes as the model: a hub id as is; tiny:<family> as its built checkpoint folder."""
    if base.startswith("tiny:"):
        from tuneline.config.schema import ModelConfig
        from tuneline.models.load import resolve_base

        return str(resolve_base(ModelConfig(base=base)).folder)
    return base


def render_command(
    serve_cfg, base: str, adapters: dict[str, Path], *, max_loras: int | None = None
) -> list[str]:
    """The vllm serve command line for a base model and its LoRA adapters (name -> folder)."""
    v = serve_cfg.vllm
    cmd = [v.executable, "serve", base, "--host", "127.0.0.1", "--port", str(v.port), "--enable-lora"]
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    cmd += [
        "--max-loras",
        str(max_loras or max(2, 2 * len(adapters))),  # room for a promoted version beside the old one
        "--max-lora-rank",
        str(v.max_lora_rank),
        "--gpu-memory-utilization",
        str(v.gpu_memory_utilization),
        "--max-num-seqs",
        str(serve_cfg.limits.max_concurrency),
        "--dtype",
        {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[serve_cfg.dtype],
        *v.extra_args,
    ]
    return cmd


class VllmEngine:
    name = "vllm"

    def __init__(self, serve_cfg) -> None:
        self.cfg = serve_cfg
        self.url = (serve_cfg.vllm.url or f"http://127.0.0.1:{serve_cfg.vllm.port}").rstrip("/")
        self.proc: subprocess.Popen | None = None
        self.base: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle
    def _start(self, base: str, adapters: dict[str, Path]) -> None:
        cmd = render_command(self.cfg, base_folder(base), adapters)
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
        log.info("starting %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, env=env)
        self._wait_healthy(timeout=900)

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ModelError(f"vllm serve exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise ModelError(f"vllm serve did not become healthy at {self.url} in {timeout:.0f} s")

    def load(self, ref: ModelVersionRef, path: Path) -> Variant:
        import httpx

        base = self.cfg.base_model or ref.base_model
        if not base:
            raise ModelError(f"{ref.name} version {ref.version} has no tuneline.base_model tag")
        if not (path / "adapter_config.json").is_file():
            raise ModelError(f"{path} is not a LoRA adapter: the vllm backend serves adapters only")
        with self._lock:
            if self.base is None:
                self.base = base
                if self.cfg.vllm.url is None:
                    self._start(base, {ref.key: path})
                    return Variant(ref, path, self, ref.key)
            elif base != self.base:
                raise ModelError(
                    f"version {ref.version} is on base {base}, the running vllm serves {self.base}"
                )
        r = httpx.post(
            f"{self.url}/v1/load_lora_adapter",
            json={"lora_name": ref.key, "lora_path": str(path)},
            timeout=300,
        )
        if r.status_code >= 400 and "already" not in r.text:
            raise ModelError(f"vllm refused adapter {ref.key}: {r.status_code} {r.text[:300]}")
        return Variant(ref, path, self, ref.key)

    def unload(self, variant: Variant) -> None:
        import httpx

        try:
            httpx.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": variant.adapter}, timeout=60)
        except httpx.HTTPError as exc:
            log.warning("could not unload %s from vllm: %s", variant.adapter, exc)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    # ------------------------------------------------------------ requests
    def prompt_tokens(self, variant: Variant, req: GenRequest) -> int:
        return 0  # vLLM checks the context length itself

    def embed_images(self, variant: Variant, images):
        return None  # the histogram embedding is used for drift

    async def stream(self, variant: Variant, req: GenRequest) -> AsyncIterator[Delta | Done]:
        import httpx

        payload = {
            "model": variant.adapter,
            "messages": req.raw_messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reason, usage = "stop", {}
        async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5)) as client:
            async with client.stream("POST", f"{self.url}/v1/chat/completions", json=payload) as r:
                if r.status_code != 200:
                    raise GenerationError(f"vllm answered {r.status_code}: {(await r.aread())[:300]!r}")
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield Delta(text)
                        if choice.get("finish_reason"):
                            reason = choice["finish_reason"]
        yield Done(reason, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
