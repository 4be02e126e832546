"""Synthetic datasets the project generates for examples and tests (deterministic per seed)."""
