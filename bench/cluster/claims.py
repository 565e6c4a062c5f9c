"""Claims on run folders: whoever trains a run (a process on this machine, or a SLURM job) first claims its
folder, atomically, with its job id and host, so that two sweeps on one results folder, or a sweep run again
while its jobs still run, never train the same grid point twice.

A claim is ``RUN_DIR/claim.json``, created with ``os.link`` (which fails if the name exists, so of two
claimants exactly one wins) and removed when its run stops. A claim whose holder is gone (SLURM no longer
knows its job, or its process on this host has exited) is moved aside and taken over, and the taker says so;
a holder this machine cannot check (a process on another host) is left alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..run_folder import CLAIM_NAME

LIVE_SLURM_STATES = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED",
}  # fmt: skip


class ClaimedElsewhere(RuntimeError):
    """The run folder is claimed by a holder that is still running."""


@dataclass(frozen=True)
class Holder:
    """Who trains a run: a process on a host, inside a SLURM job (``job_id``) or not."""

    host: str
    pid: int
    job_id: str | None = None

    @classmethod
    def here(cls) -> Holder:
        """This process, in the SLURM job (array task) it runs in, if any."""
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
        return cls(socket.gethostname(), os.getpid(), job)

    def describe(self) -> str:
        where = f"SLURM job {self.job_id}" if self.job_id else f"process {self.pid}"
        return f"{where} on {self.host}"

    def same_as(self, other: Holder) -> bool:
        """The same job (a requeued job keeps its id), or the same process."""
        if self.job_id or other.job_id:
            return self.job_id == other.job_id
        return (self.host, self.pid) == (other.host, other.pid)


def read_claim(folder: Path) -> Holder | None:
    """The folder's current claim, or None (no claim, or one being replaced right now)."""
    try:
        data = json.loads((Path(folder) / CLAIM_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return Holder(data["host"], int(data["pid"]), data.get("job_id"))


def slurm_job_state(job_id: str) -> str | None:
    """The state SLURM reports for the job (``squeue``, else ``sacct`` for a finished one), or None when
    neither knows it or SLURM's commands are not on this machine."""
    queue = ["squeue", "-h", "-j", job_id, "-o", "%T"]
    accounting = ["sacct", "-n", "-X", "-j", job_id, "-o", "State"]
    for command in (queue, accounting):
        if shutil.which(command[0]) is None:
            return None
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        states = result.stdout.split() if result.returncode == 0 else []
        if states:
            return states[0].rstrip("+")
    return None


def holder_alive(holder: Holder) -> bool:
    """Whether the holder may still be training: its SLURM job is queued or running, or its process on
    this host exists. A process on another host cannot be checked from here and counts as alive."""
    if holder.job_id:
        if shutil.which("squeue") is None:
            return True  # a SLURM job seen from a machine without SLURM: cannot tell
        return slurm_job_state(holder.job_id) in LIVE_SLURM_STATES
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return not zombie(holder.pid)


def zombie(pid: int) -> bool:
    """A process that has exited but whose parent has not collected it yet (Linux's /proc says ``Z``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def claim(folder: Path, holder: Holder) -> str | None:
    """Claim ``folder`` (creating it) for ``holder``. Returns a note when the claim of a holder that is gone
    was taken over; raises :class:`ClaimedElsewhere` when a live holder has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_NAME
    note = None
    for _ in range(5):
        if _create(path, holder):
            return note
        current = read_claim(folder)
        if current is None:
            continue  # released or being replaced between our two looks: try again
        if current.same_as(holder):  # our own claim from before a requeue or a restart
            _replace(path, holder)
            return note
        if holder_alive(current):
            raise ClaimedElsewhere(
                f"{folder} is being trained by {current.describe()}; it was left to it (remove "
                f"{path} if that is wrong)"
            )
        try:  # move the dead claim aside; if another claimant did it first, this rename fails
            os.rename(path, folder / f".claim-{time.time_ns()}.stale.json")
        except FileNotFoundError:
            continue
        note = f"reclaimed {folder} from {current.describe()}, which is no longer running"
    raise ClaimedElsewhere(f"{folder} is contended by several claimants at once; run it again")


def release(folder: Path, holder: Holder) -> None:
    """Remove the claim if it is ``holder``'s (a claim taken over by someone else is theirs to remove)."""
    current = read_claim(folder)
    if current is not None and current.same_as(holder):
        (Path(folder) / CLAIM_NAME).unlink(missing_ok=True)


def _record(holder: Holder) -> bytes:
    return json.dumps({**dataclasses.asdict(holder), "claimed": time.time()}).encode()


def _create(path: Path, holder: Holder) -> bool:
    """Write the claim under a unique name, then link it to ``path``: the link fails if ``path`` exists."""
    tmp = path.with_name(f".claim-{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(_record(holder))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _replace(path: Path, holder: Holder) -> None:
    tmp = path.with_name(f".claim-{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(_record(holder))
    os.replace(tmp, path)
