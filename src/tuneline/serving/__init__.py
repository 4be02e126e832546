"""Serving: an OpenAI-compatible endpoint over registered versions, with A/B, hot swap, metrics and drift.

    tuneline serve CONFIG

Modules: app (FastAPI routes), engine (transformers backend: shared base, adapters, dynamic batching),
vllm (command rendering and proxy), sources (registry aliases -> local files), watcher (alias polling and
atomic swaps), ab (sticky assignment, request/feedback log, report), limits (request and image limits),
auth (API keys), cache (deterministic responses), metrics (Prometheus), drift (reference profile and
live drift).
"""
