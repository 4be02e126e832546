"""Synthetic datasets for the examples, tests and benchmarks (deterministic per seed).

Example data, not pipeline: it ships in the tuneline distribution beside the ``tuneline`` package
(``tuneline data synth`` imports it lazily) and depends on tuneline, never the other way round.
"""
