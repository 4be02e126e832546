"""Evaluation components: scoring models on records, metrics."""
