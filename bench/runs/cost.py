"""What a run cost in network FLOPs, with whatever it learnt from counted too.

A design that learns from a teacher is only as cheap as the teacher it needs: a one-call student of a
50-call teacher has paid for the teacher's training, the teacher calls that made its pairs and those it
makes during training. Every run records its own training FLOPs; a run with a teacher adds the teacher's
total (which includes the teacher's own teacher, for a chain such as a flow, its reflow and the reflow's
one-call student), the pair generation (pairs x teacher NFE x teacher forward FLOPs) and the teacher calls
made during training (consistency distillation's ODE steps). What a training step costs beyond the student's
forward and backward is what its objective declared (:class:`bench.training.objectives.StepCost`).
"""

from __future__ import annotations

from pathlib import Path

from ..training.objectives import StepCost
from .run_folder import RunFolder, TrainMetrics

NO_EXTRA_CALLS = StepCost()


def own_training_flops(train: TrainMetrics, *, extra_forwards_per_image: float = 0) -> float | None:
    """The run's own training FLOPs: each image seen costs a forward and backward pass of the network, and
    ``extra_forwards_per_image`` more forward passes of it (a consistency model's target network)."""
    if train.training_flops_per_image is None:
        return None
    per_image = train.training_flops_per_image + extra_forwards_per_image * (
        train.forward_flops_per_image or 0.0
    )
    return train.images_seen * per_image


def total_flops(run_dir: Path) -> float | None:
    """A finished run's total cost: its recorded ``cost.total_flops``, or for a run from before costs were
    recorded (which had no teacher) its own training FLOPs."""
    metrics = RunFolder(run_dir).read_metrics()
    if metrics.cost and metrics.cost.get("total_flops") is not None:
        return float(metrics.cost["total_flops"])
    return own_training_flops(metrics.train) if metrics.train is not None else None


def run_cost(
    train: TrainMetrics,
    *,
    step_cost: StepCost = NO_EXTRA_CALLS,
    teacher_dir: Path | None = None,
    teacher_forward_flops: float | None = None,
    pair_flops: float | None = None,
) -> dict[str, float | int | None]:
    """The cost section of metrics.json: the run's own training FLOPs (with the extra forwards of
    ``step_cost``), and with a teacher its total, the pairs, the teacher calls during training
    (``step_cost.teacher_calls`` per example) and the sum of all."""
    own = own_training_flops(train, extra_forwards_per_image=step_cost.extra_forwards)
    cost: dict[str, float | int | None] = {"train_flops": own}
    if teacher_dir is None:
        cost["total_flops"] = own
        return cost
    calls = train.images_seen * step_cost.teacher_calls
    call_flops = calls * teacher_forward_flops if teacher_forward_flops is not None else None
    teacher = total_flops(teacher_dir)
    parts = [own, teacher, pair_flops or 0.0, call_flops or 0.0]
    cost.update(
        teacher_flops=teacher,
        pair_flops=pair_flops,
        teacher_calls=calls,
        teacher_call_flops=call_flops,
        total_flops=None if any(p is None for p in parts) else sum(parts),  # type: ignore[arg-type]
    )
    return cost
