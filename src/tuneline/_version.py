"""The package version, in a module of its own: runs.py records it without importing the package
root (which re-exports the pipeline)."""

__version__ = "0.1.0"
