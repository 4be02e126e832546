"""The ``tuneline`` command line: parse, load the config, call a stage, map errors to exit codes.

Layout: ``app`` assembles the command modules (``pipeline``, ``config``, ``data``, ``models``,
``serve``, ``launch``); each of them imports ``_common`` (consoles, shared arguments, config loading,
and ``cli_errors``, the one place an exception becomes an exit code) and lower layers, never another
command module.
"""

from tuneline.cli.app import app, main
from tuneline.cli.pipeline import print_summary

__all__ = ["app", "main", "print_summary"]
