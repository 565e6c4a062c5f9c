"""``bench sweep status OUT``: one line per grid point of a sweep, read from the results folder (its manifest,
each run's status, claim and loss curve, the job ids it recorded) and from SLURM, never written to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io import read_json
from ..runs.claims import (
    LIVE_SLURM_STATES,
    UNKNOWN,
    holder_alive,
    job_state_or_unknown,
    read_claim,
)
from ..runs.run_folder import RunFolder
from .executors import recorded_jobs

STATES = ("pending", "running", "requeued", "complete", "failed", "interrupted", "unknown")
LOG_LINES = 5


@dataclass(frozen=True)
class PointStatus:
    name: str
    state: str
    job_id: str | None
    step: int | None
    seconds: float | None
    log_tail: list[str]


def point_status(out: Path, name: str, job: dict | None) -> PointStatus:
    """What one grid point is doing: its run's own state, and its job's, where the run has none yet."""
    folder = RunFolder(out / name)
    status = read_json(folder.file("status.json")) if folder.file("status.json").is_file() else {}
    holder = read_claim(folder.path)
    job_id = holder.job_id if holder is not None and holder.job_id else (job or {}).get("job_id")
    on_slurm = job_id and (job or {}).get("executor", "slurm") == "slurm"
    slurm = job_state_or_unknown(job_id) if on_slurm else None
    run_state = status.get("state")
    if run_state in ("complete", "failed"):
        state = run_state
    elif slurm == UNKNOWN:  # SLURM did not answer: say so rather than guess
        state = "unknown"
    elif holder is not None and holder_alive(holder) and slurm not in ("PENDING", "REQUEUED"):
        state = "running"
    elif slurm in ("REQUEUED", "REQUEUE_HOLD") or (slurm == "PENDING" and folder.checkpoint.exists()):
        state = "requeued"
    elif slurm in LIVE_SLURM_STATES or (run_state is None and slurm is None):
        state = "pending"
    elif slurm in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "TIMEOUT"):
        state = "failed"
    else:
        state = "interrupted"
    curve = folder.read_loss_curve() if folder.loss_curve.is_file() else []
    seconds = curve[-1]["train_seconds"] if curve else None
    tail = log_tail(folder) if state == "failed" else []
    return PointStatus(name, state, job_id, status.get("step"), seconds, tail)


def log_tail(folder: RunFolder, lines: int = LOG_LINES) -> list[str]:
    """The last lines of the newest job log beside the run (``RUN_DIR/slurm/*.err``), or its failure
    reason from status.json."""
    logs = sorted(
        (p for sub in ("slurm", "local") for p in (folder.path / sub).glob("*.err")),
        key=lambda p: p.stat().st_mtime if p.exists() else 0,
    )
    for log in reversed(logs):
        if log.exists():
            text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            return text[-lines:]
    status = folder.file("status.json")
    reason = read_json(status).get("reason") if status.is_file() else None
    return [reason] if reason else []


def sweep_status(out: Path) -> list[PointStatus]:
    """Every grid point of the sweep in ``out`` (its manifest's order), with its state."""
    manifest = out / "sweep.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no sweep: no sweep.json, which bench sweep writes")
    names = list(read_json(manifest).get("runs", {}))
    jobs = recorded_jobs(out)
    return [point_status(out, name, jobs.get(name)) for name in names]


def format_status(points: list[PointStatus], command: str | None) -> str:
    """The table, then for each failed point its last log lines and how to submit it again."""
    rows = [("run", "state", "job", "step", "seconds")]
    for p in points:
        seconds = f"{p.seconds:,.0f}" if p.seconds is not None else "-"
        rows.append((p.name, p.state, p.job_id or "-", str(p.step) if p.step is not None else "-", seconds))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    counts = {s: sum(p.state == s for p in points) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for p in points:
        if p.state == "failed":
            lines += ["", f"{p.name} failed; last lines of its log:", *(f"  {line}" for line in p.log_tail)]
            # the sweep's command submits what is neither complete nor running: a failed run resumes from its
            # last checkpoint
            lines.append(f"  submit it again: {command or 'the command that started the sweep'}")
    return "\n".join(lines)
