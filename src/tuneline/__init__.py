"""tuneline: from a fine-tuning prototype to a model in production.

Python API::

    from tuneline import load_config, run_pipeline
    cfg = load_config("examples/quickstart/config.yaml", overrides=["train.max_steps=50"])
    run = run_pipeline(cfg, config_path="examples/quickstart/config.yaml")
    print(run.summary())
"""

from tuneline._version import __version__
from tuneline.config import Config, load_config


def run_pipeline(cfg, config_path=None):
    """Run prepare → train → evaluate → register; return the RunDir."""
    from tuneline.stages.pipeline import run_all

    return run_all(cfg, config_path)


__all__ = ["Config", "__version__", "load_config", "run_pipeline"]
