"""The serve section: auth, limits, batching, cache, drift, the registry watch, vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from tuneline.config.schema.base import PATH_FIELD, Section
from tuneline.config.schema.loop import ServeLoopConfig


class ServeAuthConfig(Section):
    api_key_envs: list[str] = Field(
        default_factory=list,
        description="Names of environment variables holding API keys (Authorization: Bearer KEY); several "
        "allow rotation. Empty: no authentication. Keys are compared in constant time and never logged.",
    )


class ServeLimitsConfig(Section):
    max_body_bytes: int = Field(20_000_000, gt=0, description="Largest request body: 413 above it.")
    max_image_bytes: int = Field(8_000_000, gt=0, description="Largest decoded image: 413 above it.")
    max_image_pixels: int = Field(
        25_000_000,
        gt=0,
        description="Largest image (width x height), read from the header before decoding: 400 above it.",
    )
    max_images: int = Field(4, ge=0, description="Images in one request: 400 above it.")
    max_tokens: int = Field(512, gt=0, description="Largest max_tokens a request may ask for: 400 above it.")
    default_max_tokens: int = Field(
        64, gt=0, description="max_tokens when a request does not say (at most max_tokens)."
    )
    max_prompt_tokens: int = Field(4096, gt=0, description="Longest prompt (text tokens): 400 above it.")
    max_messages: int = Field(256, gt=0, description="Messages in one request: 400 above it.")
    max_message_chars: int = Field(
        100_000,
        gt=0,
        description="Characters of text in one message, counted before any tokenization: 400 above it.",
    )
    max_prompt_chars: int = Field(
        200_000,
        gt=0,
        description="Characters of text in all messages together, counted before any tokenization (a cheap "
        "bound on the tokenizer's work; keep it a few times max_prompt_tokens): 400 above it.",
    )
    inline_parse_bytes: int = Field(
        65_536,
        ge=0,
        description="Request bodies up to this size are parsed in the server process; larger ones in a "
        "helper process, so that no body (e.g. 20 MB of tiny JSON values) holds the event loop.",
    )
    max_concurrency: int = Field(
        64, gt=0, description="Requests in flight at once; one more gets 429 (retry later)."
    )


class ServeBatchingConfig(Section):
    max_batch_size: int = Field(
        16, gt=0, description="Concurrent requests of one variant generated in one call (1: no batching)."
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the first request of a batch waits for others to join."
    )


class ServeCacheConfig(Section):
    enabled: bool = Field(True, description="Cache responses to deterministic requests (temperature 0).")
    max_entries: int = Field(1024, gt=0, description="Entries kept (least recently used dropped first).")
    ttl_s: float = Field(600.0, gt=0, description="Seconds an entry stays valid.")


class ServeDriftConfig(Section):
    enabled: bool = Field(True, description="Compare live inputs and predictions with the training profile.")
    window: int = Field(500, gt=1, description="Live requests kept in the rolling window.")
    min_samples: int = Field(100, gt=1, description="No verdict before the window holds this many requests.")
    check_every: int = Field(25, gt=0, description="Recompute drift after this many new requests.")
    bins: int = Field(10, ge=2, description="Quantile bins of the reference used for PSI.")
    psi_threshold: float = Field(
        0.25, gt=0, description="PSI at or above which a feature counts as shifted (0.25: a major shift)."
    )
    ks_alpha: float = Field(
        0.01, gt=0, lt=1, description="A shifted feature must also fail the KS test at this level."
    )
    mmd_alpha: float = Field(
        0.01, gt=0, lt=1, description="Embedding drift: MMD permutation-test p-value below this."
    )
    mmd_permutations: int = Field(200, ge=20, description="Permutations of the MMD test.")
    embedding: Literal["auto", "vision", "histogram"] = Field(
        "auto",
        description="Image embeddings for the MMD test: the base model's vision encoder (vision), a fixed "
        "thumbnail + colour histogram (histogram), or whatever the reference profile used (auto).",
    )


class ServeWatchConfig(Section):
    interval_s: float = Field(
        10.0, ge=0, description="Seconds between polls of the registry aliases (0: never swap models)."
    )


class VllmConfig(Section):
    executable: str = Field("vllm", description="The vllm command.")
    port: int = Field(8001, gt=0, lt=65536, description="Port of the vllm server (loopback).")
    url: str | None = Field(
        None,
        description="Proxy to an already running vLLM OpenAI server at this URL instead of starting one.",
    )
    max_lora_rank: int = Field(64, gt=0, description="--max-lora-rank.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="--gpu-memory-utilization.")
    extra_args: list[str] = Field(default_factory=list, description="More arguments for vllm serve.")


# ------------------------------------------------------------------ hybrid serving (cascade, costs, budget)
def _name_at_alias(value: str, key: str) -> str:
    name, sep, alias = value.partition("@")
    if not sep or not name or not alias or not all(c.isalnum() or c in "_-" for c in alias):
        raise ValueError(f"{key} must be NAME@alias, e.g. shapes@champion (got {value!r})")
    return value


class RemoteFallbackConfig(Section):
    url: str = Field(
        ...,
        description="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8001/v1 (a vLLM server, "
        "another `tuneline serve`, a hosted API).",
    )
    model: str = Field(..., description="The model name to ask that endpoint for.")
    api_key: str | None = Field(
        None, description="Its API key; write ${ENV_VAR} so the key stays out of the file and the logs."
    )

    @model_validator(mode="after")
    def _url(self) -> RemoteFallbackConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"serve.cascade.fallback.url must start with http:// or https:// (got {self.url!r})"
            )
        return self


class CascadeTargetConfig(Section):
    metric: Literal["accuracy"] = Field(
        "accuracy", description="The metric on val: reach min, or be best under max_cost_per_1k."
    )
    min: float | None = Field(
        None, ge=0, le=1, description="Pick the cheapest threshold whose val metric is at least this."
    )
    max_cost_per_1k: float | None = Field(
        None, ge=0, description="Or: pick the threshold with the best val metric at most this cost per 1,000."
    )

    @model_validator(mode="after")
    def _one(self) -> CascadeTargetConfig:
        by_metric = self.min is not None
        if by_metric == (self.max_cost_per_1k is not None):
            raise ValueError(
                "serve.cascade.target takes either {metric: accuracy, min: 0.9} or {max_cost_per_1k: 2.0}"
            )
        return self


class CascadeBreakerConfig(Section):
    failures: int = Field(
        5, gt=0, description="Consecutive fallback failures that open the circuit (the small model answers)."
    )
    reset_s: float = Field(
        30.0, gt=0, description="Seconds the circuit stays open before one trial request (half-open)."
    )


class ServeCascadeConfig(Section):
    small: str = Field(
        ...,
        description="NAME@alias of the small model that answers first (NAME: the served model). Requests "
        "for the bare model name go through the cascade; NAME@alias requests are answered by that alias.",
    )
    fallback: str | RemoteFallbackConfig = Field(
        ...,
        description="Who answers when the small model is unsure: NAME@alias (a registered version served "
        "here) or {url, model, api_key} (any OpenAI-compatible endpoint, through the openai client).",
    )
    threshold: Literal["auto"] | float = Field(
        "auto",
        description="Confidence below which a request goes to the fallback. Confidence: the top class "
        "probability (classification), or exp(mean token log-probability) of the small model's answer "
        "(generation); both in [0, 1]. auto: the threshold `tuneline serve calibrate` chose (curve).",
    )
    target: CascadeTargetConfig = Field(
        default_factory=lambda: CascadeTargetConfig(min=0.9),
        description="What `serve calibrate` aims for: {metric: accuracy, min: X} at the lowest expected "
        "cost, or {max_cost_per_1k: C}: the best accuracy at most that cost.",
    )
    calibration: Literal["none", "temperature"] = Field(
        "none",
        description="temperature: `serve calibrate` fits one temperature to the small model's class "
        "log-probabilities on val (reported with ECE before/after); serving divides by it.",
    )
    labels: list[str] | None = Field(
        None,
        description="The classes (answer texts): the small model's answer is the most probable one and its "
        "probability the confidence. Default: eval.labels; neither: generation confidence.",
    )
    curve: Annotated[
        Path | None,
        Field(
            description="The curve JSON `serve calibrate` writes and threshold: auto reads (default: "
            "<state_dir>/cascade/curve.json).",
            json_schema_extra=PATH_FIELD,
        ),
    ] = None
    timeout_s: float = Field(10.0, gt=0, description="Per attempt: a slower fallback counts as failed.")
    retries: int = Field(1, ge=0, description="Retries of a failed fallback call (remote) before giving up.")
    breaker: CascadeBreakerConfig = Field(
        default_factory=CascadeBreakerConfig, description="Circuit breaker on the fallback."
    )

    @model_validator(mode="after")
    def _refs(self) -> ServeCascadeConfig:
        _name_at_alias(self.small, "serve.cascade.small")
        if isinstance(self.fallback, str):
            _name_at_alias(self.fallback, "serve.cascade.fallback")
            if self.fallback == self.small:
                raise ValueError("serve.cascade.fallback must differ from serve.cascade.small")
        if isinstance(self.threshold, float) and not 0 <= self.threshold <= 1:
            raise ValueError(f"serve.cascade.threshold must be auto or in [0, 1] (got {self.threshold:g})")
        return self


class ServeCostsConfig(Section):
    accelerator: str = Field("cpu", description="Accelerator of this server, e.g. L4, H100-80GB (a label).")
    count: int = Field(1, gt=0, description="Accelerators this server holds.")
    price_per_hour: float = Field(
        0.0,
        ge=0,
        description="Price of one accelerator-hour (as train.cost): a local variant's request costs its "
        "busy time (generation time / batch size) x count x this.",
    )
    input_per_1k: float = Field(0.0, ge=0, description="Remote fallback: price of 1,000 prompt tokens.")
    output_per_1k: float = Field(0.0, ge=0, description="Remote fallback: price of 1,000 completion tokens.")
    currency: str = Field("USD", description="Currency of the prices (a label in reports).")


class ServeBudgetConfig(Section):
    per_day: float | None = Field(
        None,
        gt=0,
        description="Spend per UTC day (serve.costs units, all variants) above which the alert trips "
        "(tuneline:budget_exceeded 1) and the cascade falls back less (action).",
    )
    action: Literal["strict", "small_only"] = Field(
        "strict",
        description="Over budget: strict: fall back only below strict_threshold (a higher bar); "
        "small_only: never fall back (the small model answers, flagged).",
    )
    strict_threshold: float = Field(
        0.2,
        ge=0,
        le=1,
        description="With action strict: the confidence below which a request still falls back while over "
        "budget (used when lower than the normal threshold).",
    )


class ServeConfig(Section):
    model_name: str | None = Field(
        None, description="Registered model to serve (default: registry.model_name, else run.name)."
    )
    traffic: dict[str, float] = Field(
        default_factory=lambda: {"champion": 100.0},
        description="Registry alias -> percent of users, e.g. {champion: 90, challenger: 10}; sums to 100. "
        "Every alias listed is loaded and kept in step with the registry.",
    )
    salt: str = Field(
        "tuneline",
        description="Mixed into the hash of the user id that picks a variant: change it to reshuffle users.",
    )
    base_model: str | None = Field(
        None,
        description="Base model under the adapters (default: the version's tuneline.base_model tag, i.e. "
        "what it was trained on).",
    )
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="transformers: in process, one base model with every variant's adapter, dynamic "
        "batching; vllm: start `vllm serve --enable-lora` (GPU) and proxy to it.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="transformers backend: device.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "auto", description="Weight dtype (auto: bfloat16 on a GPU that supports it, else float32)."
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none",
        description="Weights of the served model through bitsandbytes: int8 (LLM.int8) or nf4 (4-bit); the "
        "vision side and the LM head stay in dtype. When set, evaluation scores the quantized model, so "
        "the gate judges what will serve.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, lt=65536, description="Port to listen on (0: any free port).")
    auth: ServeAuthConfig = Field(default_factory=ServeAuthConfig, description="API keys.")
    limits: ServeLimitsConfig = Field(default_factory=ServeLimitsConfig, description="Request limits.")
    batching: ServeBatchingConfig = Field(
        default_factory=ServeBatchingConfig, description="Dynamic batching (transformers backend)."
    )
    cache: ServeCacheConfig = Field(default_factory=ServeCacheConfig, description="Response cache.")
    drift: ServeDriftConfig = Field(default_factory=ServeDriftConfig, description="Drift monitoring.")
    watch: ServeWatchConfig = Field(default_factory=ServeWatchConfig, description="Registry alias watching.")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="vllm backend settings.")
    loop: ServeLoopConfig = Field(
        default_factory=ServeLoopConfig, description="Keeping request inputs for `tuneline loop` (opt-in)."
    )
    metrics_auth: bool = Field(
        False,
        description="GET /metrics needs an API key like /v1/ (false: Prometheus scrapes without one; keep "
        "the port off the public network then).",
    )
    pii: Literal["off", "flag", "redact", "block"] = Field(
        "flag",
        description="Personal data (email, phone, card, IBAN, national id) in generated answers: 'flag' "
        "counts it (tuneline:pii_outputs_total{kind}) and adds an X-Tuneline-PII header, 'redact' replaces "
        "each span with [KIND], 'block' refuses the answer (400, code pii_in_output); streams are scanned "
        "on a sliding window.",
    )
    cascade: ServeCascadeConfig | None = Field(
        None,
        description="Hybrid serving: the small model answers first, the fallback only when it is unsure.",
    )
    costs: ServeCostsConfig = Field(
        default_factory=ServeCostsConfig, description="Prices: cost per request of each variant."
    )
    budget: ServeBudgetConfig = Field(
        default_factory=ServeBudgetConfig, description="Daily spend alert (changes cascade routing)."
    )
    state_dir: Annotated[
        Path,
        Field(
            description="Folder for the A/B request and feedback database and downloaded model versions.",
            json_schema_extra=PATH_FIELD,
        ),
    ] = Path(".tuneline/serve")

    @model_validator(mode="after")
    def _traffic(self) -> ServeConfig:
        if not self.traffic:
            raise ValueError("serve.traffic needs at least one alias, e.g. {champion: 100}")
        bad = [f"{k}={v:g}" for k, v in self.traffic.items() if v < 0]
        if bad:
            raise ValueError(f"serve.traffic percentages must not be negative ({', '.join(bad)})")
        total = sum(self.traffic.values())
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"serve.traffic percentages must sum to 100 (got {total:g})")
        for alias in self.traffic:
            if not alias or not all(c.isalnum() or c in "_-" for c in alias):
                raise ValueError(f"serve.traffic alias {alias!r}: use letters, digits, _ and -")
        return self
