"""Claims on run folders: whoever trains a run (a process on this machine, or a SLURM job) first claims its
folder, atomically, so that two sweeps on one results folder, or a sweep run again while its jobs still run,
never train the same grid point twice.

A claim is ``RUN_DIR/claim.json``, created with ``os.link`` (which fails if the name exists, so of two
claimants exactly one wins) and removed by its own holder when its run stops. A holder is one process: its
host and pid, and inside SLURM its job (array task) and the job's restart count, so two processes of one
allocation are two holders, and a requeued job (same id, one more restart) is a new process whose earlier
run is over.

A claim whose holder is gone (SLURM says its job has ended, or its process on this host has exited) is taken
over, and the taker says so. Taking over is itself claimed: each claim carries a token, and only the one
claimant that creates ``.takeover-<token>`` (again by ``os.link``) may move that claim aside, after checking
that the file it moves is still the claim it judged; so two claimants that both judged one dead claim never
both take the folder, and a live claim is never moved aside. A holder this machine cannot check (a process
on another host), or a SLURM job SLURM cannot be asked about right now, counts as alive: never trained
twice is worth a wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from .run_folder import CLAIM_NAME

LIVE_SLURM_STATES = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED",
}  # fmt: skip
UNKNOWN = "UNKNOWN"  # what job_state_or_unknown says when SLURM did not answer
SLURM_TRIES = 3  # a busy controller gets this many tries, a second apart, before a job's state is unknown
SLURM_RETRY_S = 1.0
ATTEMPTS = 5  # rounds of claim, judge and take over before a contended folder is left for later


class ClaimedElsewhere(RuntimeError):
    """The run folder is claimed by a holder that is still running (or being taken over by another)."""


class SlurmUnreachable(RuntimeError):
    """SLURM did not answer (controller busy or down, accounting unreachable): a job's state is unknown."""


@dataclass(frozen=True)
class Holder:
    """Who trains a run: one process on a host, inside a SLURM job (array task) and its ``restart`` count,
    or not in SLURM at all."""

    host: str
    pid: int
    job_id: str | None = None
    restart: int = 0

    @classmethod
    def here(cls) -> Holder:
        """This process, in the SLURM job (array task) it runs in, if any."""
        return cls(socket.gethostname(), os.getpid(), current_job(), current_restart())

    def describe(self) -> str:
        where = f"process {self.pid} on {self.host}"
        return f"{where} in SLURM job {self.job_id}" if self.job_id else where


def current_job() -> str | None:
    """This process's SLURM job, as ``squeue`` names it (``<array>_<task>`` for an array task)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def current_restart() -> int:
    """How many times SLURM has requeued this job (0 outside SLURM and for a job's first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


@dataclass(frozen=True)
class Claim:
    """A claim as read from disk: its holder, and the token that names this one claim."""

    holder: Holder
    token: str


def read_claim(folder: Path) -> Holder | None:
    """The holder of the folder's current claim, or None (no claim, or one being replaced right now)."""
    current = _read(Path(folder) / CLAIM_NAME)
    return current.holder if current is not None else None


def slurm_job_state(job_id: str) -> str | None:
    """The state SLURM reports for the job (``squeue``, else ``sacct`` for one that has left the queue), or
    None when SLURM does not know it (or its commands are not on this machine). Raises
    :class:`SlurmUnreachable` when SLURM could not be asked, after :data:`SLURM_TRIES` tries: a busy
    controller is not a dead job."""
    if shutil.which("squeue") is None:
        return None
    failure = ""
    for attempt in range(SLURM_TRIES):
        if attempt:
            time.sleep(SLURM_RETRY_S)
        try:
            return _ask_slurm(job_id)
        except SlurmUnreachable as exc:
            failure = str(exc)
    raise SlurmUnreachable(f"SLURM did not answer about job {job_id} ({SLURM_TRIES} tries): {failure}")


def _ask_slurm(job_id: str) -> str | None:
    queue = _slurm_command(["squeue", "-h", "-j", job_id, "-o", "%T"], gone="invalid job id")
    if queue.stdout.split():
        return queue.stdout.split()[0].rstrip("+")
    # the queue no longer has it (a finished job is purged after MinJobAge): ask the accounting
    if shutil.which("sacct") is None:
        return None
    states = _slurm_command(["sacct", "-n", "-X", "-j", job_id, "-o", "State"]).stdout.split()
    return states[0].rstrip("+") if states else None


def _slurm_command(command: list[str], gone: str | None = None) -> subprocess.CompletedProcess:
    """Run a SLURM query; a timeout or a failure (other than one whose message has ``gone``: the job is not
    known, which is an answer) raises SlurmUnreachable."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable(f"{command[0]} timed out") from None
    if result.returncode != 0 and not (gone and gone in result.stderr.lower()):
        raise SlurmUnreachable(f"{command[0]}: {result.stderr.strip() or f'exit code {result.returncode}'}")
    return result


def job_state_or_unknown(job_id: str) -> str | None:
    """:func:`slurm_job_state`, with ``"UNKNOWN"`` (and a warning that says why) when SLURM did not answer;
    callers treat that as alive, never as ended."""
    try:
        return slurm_job_state(job_id)
    except SlurmUnreachable as exc:
        warnings.warn(f"{exc}; counted as still running, asked again later", stacklevel=2)
        return UNKNOWN


def slurm_job_alive(state: str | None) -> bool:
    """Whether a job in ``state`` (from :func:`job_state_or_unknown`) may still run: queued, running, or
    not known because SLURM did not answer."""
    return state in LIVE_SLURM_STATES or state == UNKNOWN


def holder_alive(holder: Holder) -> bool:
    """Whether the holder may still be training. A process of this job (or outside SLURM) on this host is
    alive while it exists; a run of this job before its requeue is over; another job is alive while SLURM has
    it queued or running, or while SLURM cannot be asked. A process on another host that SLURM cannot vouch
    for counts as alive."""
    if holder.job_id and holder.job_id == current_job():
        if holder.restart < current_restart():
            return False  # a requeue ended every process of the job's earlier run
        return holder.host != socket.gethostname() or process_alive(holder.pid)
    if holder.job_id:
        if shutil.which("squeue") is None:
            return True  # a SLURM job seen from a machine without SLURM: cannot tell
        return slurm_job_alive(job_state_or_unknown(holder.job_id))
    return holder.host != socket.gethostname() or process_alive(holder.pid)


def process_alive(pid: int) -> bool:
    """Whether a process of this host exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return not zombie(pid)


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
    for _ in range(ATTEMPTS):
        if _create(path, holder):
            return note
        current = _read(path)
        if current is None:
            continue  # released between our two looks: try again
        if current.holder == holder:  # our own claim, from an earlier run in this process
            return note
        if holder_alive(current.holder):
            raise ClaimedElsewhere(
                f"{folder} is being trained by {current.holder.describe()}; it was left to it (remove "
                f"{path} if that is wrong)"
            )
        if _take_over(path, current, holder):
            return f"reclaimed {folder} from {current.holder.describe()}, which is no longer running"
        time.sleep(0.05)  # another claimant is taking it over: look again once it has
    raise ClaimedElsewhere(f"{folder} is contended by several claimants at once; it was left for later")


def release(folder: Path, holder: Holder) -> None:
    """Remove the claim if it is ``holder``'s own (a claim taken over by someone else is theirs to remove)."""
    path = Path(folder) / CLAIM_NAME
    current = _read(path)
    if current is not None and current.holder == holder:
        path.unlink(missing_ok=True)


def _take_over(path: Path, dead: Claim, holder: Holder) -> bool:
    """Replace the dead claim ``dead`` by ``holder``'s, if this claimant is the one that takes it over.

    The takeover of one claim is itself claimed, with ``.takeover-<its token>`` created like a claim; the
    loser returns False and looks again. A takeover whose taker died half-way is a dead claim too, taken over
    the same way. The winner moves the claim aside only while it is still the one judged dead, and then
    creates its own; a fresh claimant that wins the moment in between holds the folder alone."""
    marker = path.with_name(f".takeover-{dead.token}")
    if not _create(marker, holder):
        taker = _read(marker)
        if taker is None or holder_alive(taker.holder) or not _take_over(marker, taker, holder):
            return False
    try:
        if _read(path) != dead:  # taken over and replaced already: judge again
            return False
        aside = path.with_name(f".claim-{dead.token}.stale.json")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if _read(aside) != dead:  # cannot happen while takeovers are claimed; never keep a live claim aside
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            return False
        return _create(path, holder)
    finally:
        marker.unlink(missing_ok=True)


def _read(path: Path) -> Claim | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    holder = Holder(data["host"], int(data["pid"]), data.get("job_id"), int(data.get("restart", 0)))
    # a claim written before claims had tokens is named by its own record
    return Claim(holder, data.get("token") or f"{data['host']}-{data['pid']}-{data.get('claimed', 0)}")


def _record(holder: Holder) -> bytes:
    record = {**dataclasses.asdict(holder), "token": uuid.uuid4().hex, "claimed": time.time()}
    return json.dumps(record).encode()


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
