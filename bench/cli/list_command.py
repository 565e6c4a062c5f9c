"""``bench list``: every registered plugin of every kind."""

from __future__ import annotations

import click

from .group import main


@main.command("list")
@click.option("--shape", default="1,28,28", show_default=True, help="Image shape C,H,W for parameter counts.")
def list_plugins(shape: str) -> None:
    """List every registered schedule, denoiser, sampler and dataset plugin."""
    from ..reports.listing import plugin_table

    try:
        image_shape = tuple(int(s) for s in shape.split(","))
    except ValueError:
        raise click.BadParameter(f"expected C,H,W integers, got {shape!r}", param_hint="'--shape'") from None
    click.echo(plugin_table(image_shape))
