"""A scheduler's request to stop a run (SLURM's USR2 before the time limit or on preemption, SIGTERM from
``scontrol requeue`` or ``scancel``), honoured in every phase of the run.

Training looks at the request after every step and stops at the next one with its checkpoint written, so
it resumes bit for bit. The other phases (teacher pairs, sampling, evaluation) have no such loop: while no
loop is looking, a request interrupts at once, as Ctrl-C does. That is safe because every file of a run is
written atomically and those phases start again from their last kept piece (a pair chunk, an FID chunk, or
from the trained checkpoint) when the job is requeued: nothing half-written is kept.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class StopRequest(threading.Event):
    """An event that, once set, stops the run: at the next safe point of a loop that looks at it (inside
    :meth:`looked_at`), otherwise at once with KeyboardInterrupt."""

    def __init__(self) -> None:
        super().__init__()
        self._lookers = 0

    @contextlib.contextmanager
    def looked_at(self) -> Iterator[None]:
        """Inside, a loop looks at the request at safe points, so setting it is enough."""
        self._lookers += 1
        try:
            yield
        finally:
            self._lookers -= 1

    def request(self, why: str) -> None:
        """Ask the run to stop; called from a signal handler, so a KeyboardInterrupt raised here surfaces in
        the main thread wherever it is."""
        self.set()
        if not self._lookers:
            raise KeyboardInterrupt(why)


def looking_at(stop: threading.Event | None) -> contextlib.AbstractContextManager:
    """:meth:`StopRequest.looked_at` for a StopRequest; nothing to do for a plain event or None."""
    return stop.looked_at() if isinstance(stop, StopRequest) else contextlib.nullcontext()
