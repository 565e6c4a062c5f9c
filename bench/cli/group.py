"""The ``bench`` command group itself; each family of commands adds its commands to it."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ddpm-bench")
def main() -> None:
    """Benchmark denoiser designs for DDPM diffusion models: train, sample, measure, compare."""
