"""Train a config into a named folder, whatever state the folder is in: skip it when complete, resume it
when half done, start it when absent. The one entry point of everything that trains grid points (``bench
sweep`` in this process, its SLURM jobs, the studies), below all of them, so that none imports another."""

from __future__ import annotations

import threading
from pathlib import Path

from ..config import RunConfig, config_differences
from .run_folder import RunFolder

BUDGET_FIELDS = ("train.steps:", "train.minutes:")  # what a resumed run may extend


def run_or_resume(
    config: RunConfig,
    out: Path,
    name: str,
    *,
    progress: bool = True,
    download: bool = False,
    stop: threading.Event | None = None,
    extend: bool = False,
) -> tuple[Path, str]:
    """Train ``config`` into ``out/name``: skip it when complete, resume it when half done, start it when
    absent. Returns the folder and what was done (``skipped``, ``resumed`` or ``started``). ``extend``
    allows a budget larger than the folder's (``bench run --resume DIR --steps N`` as a job).

    ``execute`` claims the folder while it trains (:mod:`bench.runs.claims`) and checks completion again
    under the claim, so a sweep run twice at once, or by several jobs, trains each grid point once and never
    rewrites a complete one; a folder another live process or job holds raises
    :class:`~bench.runs.claims.ClaimedElsewhere`."""
    from .run import AlreadyComplete, execute, finished_as_asked

    folder = RunFolder(out / name)
    run_dir = folder.path
    if folder.is_run():
        # read through RunConfig, so a field added since the folder was written takes its default
        diffs = config_differences(folder.read_config().to_dict(), config.to_dict())
        if extend:
            diffs = [d for d in diffs if not d.startswith(BUDGET_FIELDS)]
        if diffs:
            raise ValueError(
                f"{run_dir} holds a run with another configuration ({'; '.join(diffs)}); "
                "choose another --out for a different sweep"
            )
        if finished_as_asked(folder, config):
            return run_dir, "skipped"
    action = "resumed" if folder.checkpoint.exists() else "started"
    settings = {"progress": progress, "download": download, "stop": stop}
    try:
        try:
            if not run_dir.exists():
                out.mkdir(parents=True, exist_ok=True)
                execute(config, out=out, run_id=name, **settings)
                return run_dir, action
        except FileExistsError:  # another sweep made it between our look and our mkdir: its claim decides
            pass
        execute(config, resume=run_dir, **settings)
    except AlreadyComplete:  # its holder finished it between our look and our claim
        return run_dir, "skipped"
    return run_dir, action
