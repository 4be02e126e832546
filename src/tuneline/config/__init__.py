"""Configuration: the typed schema and its loader. Imports no runtime code."""

from tuneline.config.loader import config_hash, load_config, read_resolved, to_dict, to_yaml, with_overrides
from tuneline.config.schema import Config

__all__ = ["Config", "config_hash", "load_config", "read_resolved", "to_dict", "to_yaml", "with_overrides"]
