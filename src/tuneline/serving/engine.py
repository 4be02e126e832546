"""The transformers backend: one shared base model, one PEFT adapter per served version, dynamic batching.

Every variant (champion, challenger, ...) whose version was trained on the same base model is an adapter
on ONE copy of that base (``PeftModel.load_adapter`` / ``set_adapter``). A worker thread owns the model:
it takes the first waiting request, waits up to ``batching.max_wait_ms`` for others to join, groups them
by variant and sampling settings, and runs each group as one left-padded ``generate`` call. Tokens
reach each request as they are generated (a batch-aware streamer), so streaming and time-to-first-token
are real for batched requests too.

Adapter loads and deletions run on the same worker thread, between batches, so the model is never
changed under a running ``generate``; a request keeps the variant it was routed to until it finishes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneline.errors import ModelError
from tuneline.serving.sources import ModelVersionRef

log = logging.getLogger("tuneline.serve")


# ------------------------------------------------------------------ what flows between app and engine
@dataclass
class GenRequest:
    """One chat completion, already validated: canonical messages (image parts hold PIL images)."""

    messages: list[dict[str, Any]]
    images: list[Any]
    max_tokens: int
    temperature: float
    top_p: float
    raw_messages: list[dict[str, Any]] | None = None  # OpenAI shape, for a proxying backend
    stream: bool = True  # False: the text is wanted only whole (fewer wake-ups of the event loop)
    prompt: str | None = None  # the rendered chat template, once rendered (by the prompt-length check)


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    batch_size: int = 1
    first_token_at: float | None = None  # perf_counter() when the first token was generated


class GenerationError(RuntimeError):
    pass


@dataclass
class Variant:
    """A loaded version that requests can be routed to."""

    ref: ModelVersionRef
    path: Path
    host: Any  # ModelHost (transformers) or a proxy backend
    adapter: str | None  # PEFT adapter name on the host; None: the host's own weights
    drift_reference: dict | None = None
    inflight: int = 0
    retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acquire(self) -> None:
        with self._lock:
            self.inflight += 1

    def release(self) -> None:
        with self._lock:
            self.inflight -= 1
            free = self.retired and self.inflight == 0
        if free:
            self.host.unload(self)

    def retire(self) -> None:
        with self._lock:
            self.retired = True
            free = self.inflight == 0
        if free:
            self.host.unload(self)


# ------------------------------------------------------------------ batching worker
MIN_TEMPERATURE = 1e-2


@dataclass
class _Job:
    adapter: str | None
    prompt: str
    images: list[Any]
    max_tokens: int
    temperature: float
    top_p: float
    emit: Callable[[Any], None]  # thread-safe: token ids, Done, or an exception
    stream: bool = True  # False: tokens are handed over once, at the end (no per-token wake-ups)

    @property
    def greedy(self) -> bool:
        # Below MIN_TEMPERATURE, logits / temperature overflow to inf and sampling fails on NaN
        # probabilities (found by the schema fuzzer with temperature 1e-300): such a request is greedy,
        # which is what a temperature that close to 0 means.
        return self.temperature < MIN_TEMPERATURE

    @property
    def group(self) -> tuple:
        sampling = (0.0, 1.0) if self.greedy else (self.temperature, self.top_p)
        return (self.adapter, sampling, bool(self.images))


class _Control:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: Future = Future()


class _BatchStreamer:
    """Receives each generation step's tokens for the whole batch and hands every row's to its request;
    also the stopping criterion that ends a row at its own max_tokens."""

    def __init__(self, jobs: list[_Job], stop_ids: set[int], prompt_lens: list[int]) -> None:
        self.jobs = jobs
        self.stop_ids = stop_ids
        self.prompt_lens = prompt_lens
        self.counts = [0] * len(jobs)
        self.held: list[list[int]] = [[] for _ in jobs]  # tokens of non-streaming requests
        self.first_at: list[float | None] = [None] * len(jobs)
        self.finished: list[str | None] = [None] * len(jobs)
        self._prompt_seen = False

    # transformers' BaseStreamer interface
    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        tokens = value.view(-1).tolist()
        for i, tok in enumerate(tokens):
            if self.finished[i] is not None:
                continue
            if tok in self.stop_ids:
                self._finish(i, "stop")
                continue
            self.counts[i] += 1
            if self.first_at[i] is None:
                self.first_at[i] = time.perf_counter()
            if self.jobs[i].stream:
                self.jobs[i].emit([tok])
            else:
                self.held[i].append(tok)
            if self.counts[i] >= self.jobs[i].max_tokens:
                self._finish(i, "length")

    def end(self) -> None:
        for i in range(len(self.jobs)):
            if self.finished[i] is None:
                self._finish(i, "length")

    def _finish(self, i: int, reason: str) -> None:
        self.finished[i] = reason
        if self.held[i]:
            self.jobs[i].emit(self.held[i])
        self.jobs[i].emit(Done(reason, self.prompt_lens[i], self.counts[i], len(self.jobs), self.first_at[i]))

    # transformers' StoppingCriteria interface: True for rows that are done
    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.tensor([f is not None for f in self.finished], device=input_ids.device)


class ModelHost:
    """One base model (with its adapters) owned by one worker thread."""

    def __init__(
        self,
        base_spec: str,
        *,
        dtype: str,
        device: str,
        max_batch_size: int,
        max_wait_ms: float,
        full_checkpoint: Path | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        import torch

        from tuneline.config.schema import ModelConfig
        from tuneline.models.load import load_model, load_processor, resolve_base

        self.base_spec = base_spec
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            use_bf16 = self.device == "cuda" and torch.cuda.is_bf16_supported()
            dtype = "bfloat16" if use_bf16 else "float32"
        self.resolved = resolve_base(ModelConfig(base=base_spec))
        self.family = self.resolved.family
        if self.family.is_classifier:
            raise ModelError(
                f"{base_spec} is a {self.family.name} sequence classifier: it has no chat completions "
                "to serve",
                hint="serve a chat (decoder) model; score an encoder with tuneline evaluate or the Python "
                "API (tuneline.registry.resolve.load)",
            )
        self.model = load_model(self.resolved, dtype, folder=full_checkpoint).to(self.device).eval()
        self.processor = load_processor(self.resolved)
        self.stop_ids = set(self.processor.stop_token_ids)
        self.is_peft = False
        self.adapters: set[str] = set()
        self._active: str | None = None
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._last_batch = 1
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"tuneline-engine-{base_spec}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ control (any thread)
    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run fn on the worker thread, between batches, and return its result."""
        ctl = _Control(fn)
        self._queue.put(ctl)
        return ctl.future.result(timeout)

    def add_adapter(self, name: str, path: Path) -> None:
        def load() -> None:
            from peft import PeftModel

            if name in self.adapters:
                return
            if not self.is_peft:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).eval()
                self.is_peft = True
            else:
                try:
                    self.model.load_adapter(str(path), adapter_name=name)
                except BaseException:
                    if name in getattr(self.model, "peft_config", {}):  # half-injected: take it out again
                        self.model.delete_adapter(name)
                    raise
                self.model.eval()
            self.adapters.add(name)
            self._active = None

        self.call(load)

    def unload(self, variant: Variant) -> None:
        if variant.adapter is None or self._closed:
            return

        def drop() -> None:
            if variant.adapter in self.adapters and len(self.adapters) > 1:
                self.model.delete_adapter(variant.adapter)
                self.adapters.discard(variant.adapter)
                self._active = None
                log.info("unloaded adapter %s", variant.adapter)

        ctl = _Control(drop)
        self._queue.put(ctl)  # no wait: called from request completion paths

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)

    # ------------------------------------------------------------ requests (event loop)
    async def stream(self, variant: Variant, req: GenRequest) -> AsyncIterator[Delta | Done]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        prompt = self._rendered(req)

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        job = _Job(
            variant.adapter, prompt, req.images, req.max_tokens, req.temperature, req.top_p, emit, req.stream
        )
        self._queue.put(job)
        ids: list[int] = []
        shown = ""
        while True:
            item = await out.get()
            if isinstance(item, BaseException):
                raise GenerationError(str(item)) from item
            if isinstance(item, Done):
                text = self.processor.decode(ids)
                if len(text) > len(shown):
                    yield Delta(text[len(shown) :])
                yield item
                return
            ids.extend(item)
            text = self.processor.decode(ids)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown) and text.startswith(shown):
                yield Delta(text[len(shown) :])
                shown = text

    def _rendered(self, req: GenRequest) -> str:
        """The request's prompt through the chat template, rendered once per request."""
        if req.prompt is None:
            req.prompt = self.processor.render(req.messages, add_generation_prompt=True)
        return req.prompt

    def prompt_tokens(self, req: GenRequest) -> int:
        """Text tokens of the rendered prompt (image placeholders count one each): for the prompt limit.
        Blocking; through the Rust tokenizer's batch call where there is one, which releases the GIL (the
        single-text call does not) and builds no Python list of ids."""
        text = self._rendered(req)
        backend = getattr(self.processor.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return len(backend.encode_batch([text], add_special_tokens=False)[0])
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------ worker thread
    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Control):
                self._run_control(item)
                continue
            jobs = [item]
            controls: list[_Control] = []
            # Wait for others to join only under concurrent load (the last batch had company): a lone
            # client never pays max_wait_ms.
            deadline = time.perf_counter() + (self.max_wait if self._last_batch > 1 else 0.0)
            while len(jobs) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if isinstance(nxt, _Control):
                    controls.append(nxt)  # after this batch: the batch's adapters stay as they are
                    continue
                jobs.append(nxt)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.group, []).append(job)
            self._last_batch = len(jobs)
            for group in groups.values():
                self._generate(group)
            for ctl in controls:
                self._run_control(ctl)

    def _run_control(self, ctl: _Control) -> None:
        try:
            ctl.future.set_result(ctl.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            ctl.future.set_exception(exc)

    def _generate(self, jobs: list[_Job]) -> None:
        import contextlib

        import torch

        try:
            adapter = jobs[0].adapter
            ctx: Any = contextlib.nullcontext()
            if adapter is None and self.is_peft:
                ctx = self.model.disable_adapter()
            elif adapter is not None and adapter != self._active:
                self.model.set_adapter(adapter)
                self._active = adapter
            images = [j.images for j in jobs] if jobs[0].images else None
            batch = self.processor.encode([j.prompt for j in jobs], images, padding_side="left")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            prompt_lens = batch["attention_mask"].sum(dim=1).tolist()
            streamer = _BatchStreamer(jobs, self.stop_ids, [int(n) for n in prompt_lens])
            first = jobs[0]
            sampling: dict[str, Any] = {"do_sample": False}
            if not first.greedy:
                sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
            if self.on_batch:
                self.on_batch(len(jobs))
            with ctx, torch.inference_mode():
                self.model.generate(
                    **batch,
                    max_new_tokens=max(j.max_tokens for j in jobs),
                    eos_token_id=sorted(self.stop_ids),
                    pad_token_id=self.processor.pad_token_id,
                    streamer=streamer,
                    # Rows with their own max_tokens end on their own; when all share one, max_new_tokens
                    # does it and the per-step criterion (a tensor per step) is not paid.
                    stopping_criteria=[streamer] if len({j.max_tokens for j in jobs}) > 1 else None,
                    **sampling,
                )
            streamer.end()
        except BaseException as exc:  # noqa: BLE001 - every request of the group gets the error
            log.exception("generate failed for a batch of %d", len(jobs))
            for job in jobs:
                job.emit(exc)


# ------------------------------------------------------------------ the engine: variants over hosts
class TransformersEngine:
    """Loads versions as adapters on shared base models; hosts are keyed by base model."""

    name = "transformers"

    def __init__(self, serve_cfg, *, on_batch: Callable[[int], None] | None = None) -> None:
        self.cfg = serve_cfg
        self.on_batch = on_batch
        self.hosts: dict[str, ModelHost] = {}
        self._lock = threading.Lock()

    def _host(self, base: str, full_checkpoint: Path | None = None) -> ModelHost:
        key = base if full_checkpoint is None else f"{base}|{full_checkpoint}"
        with self._lock:
            host = self.hosts.get(key)
        if host is not None:
            return host
        host = ModelHost(
            base,
            dtype=self.cfg.dtype,
            device=self.cfg.device,
            max_batch_size=self.cfg.batching.max_batch_size,
            max_wait_ms=self.cfg.batching.max_wait_ms,
            full_checkpoint=full_checkpoint,
            on_batch=self.on_batch,
        )
        with self._lock:
            return self.hosts.setdefault(key, host)

    def load(self, ref: ModelVersionRef, path: Path) -> Variant:
        """Load a downloaded version; blocking (call from a background thread)."""
        base = self.cfg.base_model or ref.base_model
        if not base:
            raise ModelError(
                f"{ref.name} version {ref.version} has no tuneline.base_model tag",
                hint="set serve.base_model to the base the adapter was trained on",
            )
        if (path / "adapter_config.json").is_file():
            host = self._host(base)
            host.add_adapter(ref.key, path)
            variant = Variant(ref, path, host, ref.key)
        elif (path / "config.json").is_file():  # a full fine-tune: its own weights
            variant = Variant(ref, path, self._host(base, full_checkpoint=path), None)
        else:
            raise ModelError(
                f"{ref.name} version {ref.version}: {path} holds neither an adapter nor a checkpoint",
                hint="register the run's adapter/ folder (tuneline register)",
            )
        variant.drift_reference = _read_reference(path)
        return variant

    async def stream(self, variant: Variant, req: GenRequest) -> AsyncIterator[Delta | Done]:
        async for item in variant.host.stream(variant, req):
            yield item

    def prompt_tokens(self, variant: Variant, req: GenRequest) -> int:
        return variant.host.prompt_tokens(req)

    def embed_images(self, variant: Variant, images: list[Any]):
        """Vision-encoder embeddings of the base model (None where the family has no usable encoder)."""
        from tuneline.serving.drift import vision_embeddings

        host: ModelHost = variant.host
        return host.call(lambda: vision_embeddings(host.model, host.processor, images))

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()


def _read_reference(path: Path) -> dict | None:
    import json

    from tuneline.serving.drift import REFERENCE_FILE

    f = path / REFERENCE_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except ValueError:
        log.warning("ignoring unreadable drift reference %s", f)
        return None
