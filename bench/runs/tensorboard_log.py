"""TensorBoard event files for a run folder, so that ``tensorboard --logdir results/`` shows every run's
curves side by side and its HParams tab is a sortable table of designs and their scores.

What is logged is what the run folder already holds, never a second measurement of its own: each row of
``loss.csv`` (``train/<column>``: loss, learning rate, gradient norm, images/s) and of ``eval.csv``
(``eval/<column>``) at its step, a grid of the samples each ``--eval-every`` scored and the final one, and
at the end the design and the headline scores as ``bench compare`` reads them
(:func:`bench.runs.row.run_row`), as TensorBoard hparams beside ``final/<score>`` scalars.

Each run folder keeps its event files in known places rather than in the timestamped subfolder
``SummaryWriter.add_hparams`` would make: the curves in ``<run>/tensorboard/`` (one file per segment of
training), the design and scores in ``<run>/tensorboard/hparams/``. The two are apart because TensorBoard
keeps the first hparams it reads for a run: a run trained further (``bench run --resume DIR --steps N``)
replaces its hparams files, while its curves go on. A resumed run opens its curves' writer with
``purge_step`` one past its checkpoint's step: TensorBoard then drops whatever an interrupted segment
logged beyond the checkpoint, so every step appears once. Only the main process of a multi-process run
writes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..images import grid_image
from .run_folder import RunFolder, RunMetrics

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

EVENT_FILES = "events.out.tfevents.*"
HPARAMS_DIR = "hparams"  # below the run's tensorboard/: the design and its final scores
GRID_IMAGES = 64  # the samples a grid shows, as in samples.png


def require() -> None:
    """Fail before anything is written when TensorBoard's writer cannot be imported (it is a dependency of
    ddpm-bench, but an environment may lack it): the message says how to go on."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"TensorBoard logging needs the tensorboard package ({exc}); `pip install tensorboard`, or run "
            "with --no-tensorboard"
        ) from None


class TensorBoardLog:
    """A run's TensorBoard writer, or a stand-in that logs nothing (``writer`` None: ``--no-tensorboard``,
    or a process other than the main one), so the run calls it the same way in every case."""

    def __init__(self, writer: SummaryWriter | None, logged_step: int = 0) -> None:
        self.writer = writer
        self.loss_step = logged_step  # the last loss.csv step the event files hold
        self.eval_step = logged_step  # the last eval.csv step they hold

    def losses(self, rows: Sequence[dict]) -> None:
        """The rows of ``loss.csv`` not logged yet, each column as ``train/<column>`` at its step (given
        the whole curve each time it is written, so the event files follow the file)."""
        if self.writer is None:
            return
        for row in rows:
            if row["step"] > self.loss_step:
                self._scalars("train", row)
                self.loss_step = row["step"]
        self.writer.flush()

    def score(self, row: dict, samples: torch.Tensor | None = None) -> None:
        """One row of ``eval.csv`` as ``eval/<column>`` and, when given, the grid of the samples scored."""
        if self.writer is None or row["step"] <= self.eval_step:
            return
        self._scalars("eval", row)
        if samples is not None:
            self._grid("eval/samples", samples, row["step"])
        self.eval_step = row["step"]
        self.writer.flush()

    def finish(self, folder: RunFolder, metrics: RunMetrics, config: dict, samples: torch.Tensor) -> None:
        """The final sample grid with the curves, and in ``hparams/`` (its files replaced) the run's design
        as hparams beside its headline scores as ``final/<score>`` scalars, all at the last step. The design
        and scores are ``bench compare``'s columns, read the same way."""
        if self.writer is None:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        from .row import DESIGN, HEADLINE, run_row

        step = metrics.train.steps if metrics.train is not None else self.loss_step
        self._grid("final/samples", samples, step)
        self.writer.flush()
        row = run_row(folder, metrics, config)
        design = {key: hparam_value(row.get(key)) for key in (*DESIGN, "sample_steps", "seed")}
        scores = {
            f"final/{key}": float(row[key])
            for key in HEADLINE
            if is_number(row.get(key)) and math.isfinite(row[key])  # NaN: not measured
        }
        # The session's start and end only: without the experiment summary (which TensorBoard takes from
        # one arbitrary run), the HParams tab joins every run's hparams and reads the scores from scalars.
        _, start, end = hparams(design, scores)
        logdir = Path(self.writer.log_dir) / HPARAMS_DIR
        for old in logdir.glob(EVENT_FILES):
            old.unlink()
        with SummaryWriter(str(logdir)) as writer:
            writer.file_writer.add_summary(start, step)
            writer.file_writer.add_summary(end, step)
            for tag, value in scores.items():
                writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _scalars(self, prefix: str, row: dict) -> None:
        for key, value in row.items():
            if key != "step" and is_number(value):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), int(row["step"]))

    def _grid(self, tag: str, samples: torch.Tensor, step: int) -> None:
        image = np.asarray(grid_image(samples[:GRID_IMAGES].cpu()).convert("RGB"))
        self.writer.add_image(tag, image, step, dataformats="HWC")


def open_log(
    folder: RunFolder,
    *,
    enabled: bool,
    step: int,
    history: Sequence[dict] = (),
    scores: Sequence[dict] = (),
) -> TensorBoardLog:
    """The run's log, continuing at ``step`` (0 for a new run; a resumed run's checkpoint step).

    ``history`` and ``scores`` are the ``loss.csv`` and ``eval.csv`` rows kept up to ``step``. Where the
    folder already has event files they hold those rows, and the writer purges what lies beyond ``step``;
    where it has none (a run from before TensorBoard logging) the rows are written now, so its curves are
    whole."""
    if not enabled:
        return TensorBoardLog(None)
    from torch.utils.tensorboard import SummaryWriter

    logdir = folder.tensorboard
    earlier = sorted(logdir.glob(EVENT_FILES)) if logdir.is_dir() else []
    if not earlier:
        log = TensorBoardLog(SummaryWriter(str(logdir)))
        log.losses(history)
        for row in scores:
            log.score(row)
        return log
    after_newest(earlier)
    return TensorBoardLog(SummaryWriter(str(logdir), purge_step=step + 1), logged_step=step)


def after_newest(event_files: Sequence[Path]) -> None:
    """Wait, if need be, for the second after the newest event file's. TensorBoard reads a folder's event
    files in name order, and a name starts with the second its file was opened (then host, process and a
    counter that does not sort as a number): a resumed segment's file must come after the earlier ones for
    its purge to act on them. Only a segment shorter than a second ever waits (and never longer than that:
    a file from a clock ahead of this one is no reason to stop)."""
    seconds = [re.match(r"events\.out\.tfevents\.(\d+)", path.name) for path in event_files]
    newest = max((int(found.group(1)) for found in seconds if found), default=0)
    wait = newest + 1 - time.time()
    if 0 < wait <= 1:
        time.sleep(wait)


def is_number(value: Any) -> bool:
    """A value a scalar can hold (NaN and infinities included: a curve shows what its file says)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def hparam_value(value: Any) -> str | float | None:
    """A design value as TensorBoard's hparams take it: a number or a string; None (left out) where it
    does not apply, such as the guidance scale of an unconditional run or the churn of a sampler without
    any (NaN and "" in ``bench compare``)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, int | float | str) else str(value)
