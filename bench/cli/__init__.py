"""The ``bench`` command line. It parses and validates options, then calls the library functions that the
tests call directly; a usage error exits with code 2 and names the bad option and what is allowed.

``group`` holds the group (exported here as ``main``); ``options`` the shared option types and the
decorator that turns the library's input errors into usage errors; one module per family of commands:
``run_commands`` (run, sample, eval), ``grid_commands`` (sweep, study), ``compare_command`` and
``list_command``.
"""

from __future__ import annotations

# Importing a command module adds its commands to the group.
from . import compare_command, grid_commands, list_command, run_commands  # noqa: F401
from .group import main

__all__ = ["main"]
