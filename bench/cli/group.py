"""The ``bench`` command group itself; each family of commands adds its commands to it."""

from __future__ import annotations

import warnings

import click


def plain_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning as a user of the command line reads it: what happened, not where in the code."""
    return f"warning: {message}\n"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ddpm-bench")
def main() -> None:
    """Benchmark denoiser designs for DDPM diffusion models: train, sample, measure, compare."""
    warnings.formatwarning = plain_warning
