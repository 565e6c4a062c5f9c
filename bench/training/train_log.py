"""What the trainer measured while it ran: the loss curve's rows and the throughput totals that travel in the
checkpoint, and the interval of steps whose loss is summed on the device and read back once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class TrainLog:
    """What the trainer measured. ``intervals`` holds a row per log interval of this segment of the run
    (one ``Trainer.run``; a resumed run's earlier rows are in its run folder) for the loss curve.

    The totals cover the whole run, every segment of it, because they travel in the checkpoint: a run
    preempted and resumed reports the throughput of all its training, not of its last segment. The timed
    figures that ``images_per_second`` comes from leave out the first interval of each segment, whose
    seconds hold warm-up (allocation, compilation, cold caches) rather than the steady speed; the data
    seconds count every step."""

    intervals: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    timed_images: int = 0  # images processed after each segment's first (warm-up) log interval
    timed_seconds: float = 0.0
    data_seconds: float = 0.0

    @property
    def images_per_second(self) -> float | None:
        return self.timed_images / self.timed_seconds if self.timed_seconds > 0 else None

    def totals(self) -> dict:
        """The figures a checkpoint keeps (plain numbers, for ``weights_only`` loading)."""
        return {
            "timed_images": self.timed_images,
            "timed_seconds": self.timed_seconds,
            "data_seconds": self.data_seconds,
        }

    @classmethod
    def continuing(cls, totals: dict) -> TrainLog:
        """A new segment's log that goes on from ``totals`` (a checkpoint from before they were kept has
        none: its run's throughput then covers only what follows)."""
        return cls(
            timed_images=int(totals.get("timed_images", 0)),
            timed_seconds=float(totals.get("timed_seconds", 0.0)),
            data_seconds=float(totals.get("data_seconds", 0.0)),
        )


@dataclass
class Interval:
    """The steps since the loss was last read back: summed on the device, read once."""

    sums: torch.Tensor  # [loss, gradient norm before clipping (0 without clipping)]
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)
