"""``bench compare``: every run folder below some paths side by side, in the terminal and in a report
folder (and pytest-benchmark step timings when the paths hold them)."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from .group import main
from .options import usage_errors


@main.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--where", multiple=True, metavar="KEY=VALUE", help="Keep runs whose column equals VALUE (repeatable)."
)
@click.option("--sort", "sort_by", default=None, help="Sort the table by this column.")
@click.option(
    "--columns",
    default=None,
    help="Comma-separated measurement columns to show, or 'all' [default: the headline metrics; the CSV "
    "always has every column].",
)
@click.option("--metric", default="fd", show_default=True, help="The quality column for the plots.")
@click.option(
    "--paired",
    is_flag=True,
    help="Also set every design against the best by METRIC's paired difference over the seeds they share, "
    "with its 95% interval; an order is stated only where the interval excludes zero.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: <first path>/comparison).",
)
@usage_errors
def compare_cmd(
    paths: tuple[Path, ...],
    where: tuple[str, ...],
    sort_by: str | None,
    columns: str | None,
    metric: str,
    paired: bool,
    out: Path | None,
) -> None:
    """Compare every run folder found below PATHS: a table in the terminal and a report folder."""
    from ..reports import benchmark_files, compare, compare_report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collection = compare.collect(list(paths))
    for run_dir, reason in collection.skipped:
        click.echo(f"skipped {run_dir}: {reason}", err=True)
    bench_files = benchmark_files.find_benchmark_files(list(paths))
    if bench_files:
        timings = benchmark_files.benchmark_table(bench_files)
        click.echo("step timings (pytest-benchmark):")
        click.echo(compare.format_table(timings).to_string(index=False))
        if collection.runs.empty:
            return
    if collection.runs.empty:
        raise click.UsageError(
            f"no complete run folders (with config.json and metrics.json) under {', '.join(map(str, paths))}"
        )
    runs = compare.apply_filters(collection.runs, list(where))
    if runs.empty:
        raise click.UsageError(f"no run matches --where {' '.join(where)}")
    table = compare.summarize(runs)
    if sort_by:
        if sort_by not in table.columns:
            known = ", ".join(table.columns)
            raise click.UsageError(f"unknown column {sort_by!r} for --sort; columns: {known}")
        table = table.sort_values(sort_by)
    refs = compare.references(runs)
    if columns == "all":
        view = table
    else:
        chosen = [c.strip() for c in columns.split(",")] if columns else compare.headline_columns(table)
        view, shared = compare.split_constant_design(compare.select_columns(table, chosen))
        if shared:
            click.echo("every row: " + ", ".join(f"{k} {v}" for k, v in shared.items() if str(v) != "nan"))
    click.echo(compare.format_table(view, refs).to_string(index=False))
    numeric, shown = compare.numeric_table(table, refs), compare.format_table(table, refs)
    out = out or (paths[0] if paths[0].is_dir() else paths[0].parent) / "comparison"
    view = paired_table(runs, metric) if paired else None  # a bad --metric is refused before any write
    for path in compare_report.write_report(out, runs, numeric, shown, metric):
        click.echo(f"wrote {path}")
    if view is not None:
        write_paired(view, metric, out)


def paired_table(runs, metric: str):
    from ..reports.paired import paired_view

    try:
        return paired_view(runs, metric)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def write_paired(view, metric: str, out: Path) -> None:
    """The paired view of ``metric`` in the terminal and as ``paired.md`` and ``paired.csv`` in ``out``."""
    from ..io import write_text_atomic
    from ..reports import compare_report

    click.echo("")
    click.echo(f"{metric}: each design against the best, paired over the seeds they share (95% interval):")
    click.echo(view.to_string(index=False))
    files = {"paired.csv": view.to_csv(index=False), "paired.md": compare_report.markdown_table(view)}
    for name, text in files.items():
        click.echo(f"wrote {write_text_atomic(out / name, text)}")
