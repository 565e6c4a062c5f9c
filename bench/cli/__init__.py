"""The ``bench`` command line. It parses and validates options, then calls the library functions that the
tests call directly; a usage error exits with code 2 and names the bad option and what is allowed.

This module holds the group; ``options`` the shared option types and the decorator that turns the library's
input errors into usage errors; one module per family of commands: ``run_commands`` (run, sample, eval),
``grid_commands`` (sweep, study), ``compare_command`` and ``list_command``.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ddpm-bench")
def main() -> None:
    """Benchmark denoiser designs for DDPM diffusion models: train, sample, measure, compare."""


# Importing a command module adds its commands to the group.
from . import compare_command, grid_commands, list_command, run_commands  # noqa: E402, F401
