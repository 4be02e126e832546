"""Prometheus metrics, named like vLLM's where one applies (``vllm:`` becomes ``tuneline:``).

Each server has its own registry (several servers in one process stay apart, as in tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneline:requests",
            "Chat completion requests by HTTP status and variant.",
            ["status", "variant"],
            registry=r,
        )
        self.request_success = Counter(
            "tuneline:request_success",
            "Finished completions by finish reason and variant.",
            ["finished_reason", "variant"],
            registry=r,
        )
        self.ttft = Histogram(
            "tuneline:time_to_first_token_seconds",
            "Time to the first generated token.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "tuneline:e2e_request_latency_seconds",
            "Request latency, arrival to last byte.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tuneline:prompt_tokens", "Prompt tokens processed.", ["variant"], registry=r
        )
        self.generation_tokens = Counter(
            "tuneline:generation_tokens", "Tokens generated.", ["variant"], registry=r
        )
        self.cache_queries = Counter(
            "tuneline:response_cache_queries", "Deterministic requests looked up in the cache.", registry=r
        )
        self.cache_hits = Counter(
            "tuneline:response_cache_hits", "Requests answered from the cache.", registry=r
        )
        self.batch_size = Histogram(
            "tuneline:batch_size",
            "Requests per generate call (dynamic batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.running = Gauge("tuneline:num_requests_running", "Requests in flight.", registry=r)
        self.model_version = Gauge(
            "tuneline:model_version", "Registered version served by each variant.", ["variant"], registry=r
        )
        self.model_swaps = Counter("tuneline:model_swaps", "Versions swapped in.", ["variant"], registry=r)
        self.load_failures = Counter(
            "tuneline:model_load_failures",
            "Versions that failed to load (the old one kept serving).",
            ["variant"],
            registry=r,
        )
        self.load_failed = Gauge(
            "tuneline:model_load_failed",
            "1 while the version an alias points at could not be loaded.",
            ["variant"],
            registry=r,
        )
        self.registry_errors = Counter(
            "tuneline:registry_poll_errors", "Failed polls of the registry aliases.", registry=r
        )
        self.drift_score = Gauge(
            "tuneline:drift_score",
            "Drift per feature (PSI; embedding: 1 - MMD p-value); max: the headline.",
            ["feature"],
            registry=r,
        )
        self.drift_alert = Gauge("tuneline:drift_alert", "1 when drift crossed its threshold.", registry=r)
        self.cost = Counter(
            "tuneline:cost", "Spend by variant at the serve.costs prices.", ["variant"], registry=r
        )

    def drift(self, report: dict) -> None:
        for name, f in (report.get("features") or {}).items():
            self.drift_score.labels(name).set(f["psi"])
        if report.get("score") is not None:
            self.drift_score.labels("max").set(report["score"])
        if report.get("embedding"):
            self.drift_score.labels("embedding").set(1 - report["embedding"]["pvalue"])
        if report.get("predictions"):
            self.drift_score.labels("prediction").set(report["predictions"]["psi"])
        self.drift_alert.set(1 if report.get("alert") else 0)
