"""``bench run``'s orchestration: build the experiment a RunConfig names, train it (resuming where a run
folder left off), sample and measure it, and keep everything in a run folder (:mod:`bench.runs.run_folder`)
that describes itself."""

from __future__ import annotations

import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import RunConfig, SampleConfig, config_differences
from ..distributed import DistInfo, barrier, broadcast_object, init_distributed, shutdown
from ..environment import environment, resolve_device
from ..images import save_grid, save_samples_npz
from ..io import create_run_dir
from ..metrics.fidelity import StandardInception
from ..process.denoiser import Denoiser
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.noise_levels import concentration_warning
from ..training.objectives import (
    Objective,
    ObjectiveContext,
    build_objective,
    check_objective,
    declaration,
    needs_teacher,
    step_cost,
)
from ..training.pairs import Pairs, Teacher, distillation_metrics, make_pairs
from ..training.stopping import looking_at
from ..training.train_log import TrainLog
from ..training.trainer import NonFiniteLossError, Trainer
from .claims import ClaimedElsewhere, Holder, claim, release
from .cost import run_cost
from .experiment import Experiment, build_experiment, generate, resolve_sampler, sample_labels
from .measure import evaluate, run_metrics, score_during_training, standard_inception
from .run_folder import RunFolder
from .teacher import load_teacher
from .tensorboard_log import TensorBoardLog, open_log, require


def new_run_id(config: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    design = f"{config.denoiser}-{config.diffusion.schedule}-{config.dataset}-s{config.seed}"
    return f"{stamp}-{design}-{secrets.token_hex(2)}"


class AlreadyComplete(Exception):
    """The run folder holds a complete run of the same config: there is nothing to train or rewrite."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is already complete")
        self.path = path


def execute(
    config: RunConfig,
    *,
    out: Path = Path("results"),
    run_id: str | None = None,
    resume: Path | None = None,
    download: bool = False,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> Path:
    """Train, sample and measure one run; returns its folder. ``resume`` continues a run folder instead
    (or starts one in an empty folder). The folder is claimed while it trains (:mod:`bench.runs.claims`):
    one another live process or job holds raises ClaimedElsewhere, and a complete run of the same config
    (checked under the claim, so a run that completed a moment ago counts) raises AlreadyComplete.
    ``stop``, once set, ends training after a step as Ctrl-C does."""
    dist = init_distributed(resolve_device(config.device).type)
    try:
        t0 = time.perf_counter()
        setup = prepare(config, download=download)  # every check of the input, before anything is written
        if resume is not None:
            check_extension(config, setup.exp, RunFolder(resume))
        setup.phases["setup_s"] = time.perf_counter() - t0
        folder, holder = claim_folder(config, dist, out=out, run_id=run_id, resume=resume)
        try:
            return train_and_finish(
                config, setup, folder, dist, resumed=resume is not None, progress=progress, stop=stop
            )
        finally:
            if holder is not None:
                release(folder.path, holder)
    finally:
        shutdown(dist)


@dataclass
class Setup:
    """What a config resolves to, checked before the run folder exists."""

    exp: Experiment
    sample_cfg: SampleConfig
    teacher: Teacher | None
    inception: StandardInception | None
    objective: Objective
    phases: dict[str, float] = field(default_factory=dict)


def prepare(config: RunConfig, *, download: bool) -> Setup:
    if config.tensorboard:
        require()
    exp = build_experiment(config, download=download)
    check_objective(exp.recipe, exp.diffusion, config.train, conditional=config.conditional)
    if warning := concentration_warning(config.train):
        warnings.warn(warning, stacklevel=2)
    sample_cfg = resolve_sampler(
        config.sample, exp.recipe, exp.diffusion, teacher_steps=config.distill.teacher_steps
    )
    teacher = load_teacher(config.distill, exp) if needs_teacher(exp.recipe) else None
    context = ObjectiveContext(
        config,
        exp.recipe,
        exp.model,
        exp.diffusion,
        tuple(exp.data.image_shape),
        teacher.denoiser if teacher is not None else None,
    )
    objective = build_objective(context)  # a distilled student may start from the teacher's weights here
    inception = standard_inception(config, exp, download=download)
    return Setup(exp, sample_cfg, teacher, inception, objective)


def check_extension(config: RunConfig, exp: Experiment, folder: RunFolder) -> None:
    """Refuse to extend the budget of a run whose objective follows a plan of its steps (iCT's N doubles in
    stretches of the planned steps): the steps already trained followed another schedule than the longer
    run's, and the result would be neither run."""
    name = exp.recipe.objective
    reason = declaration(name).fixed_plan
    if reason is None or not folder.is_run():
        return
    planned = folder.read_config().train.steps
    if planned != config.train.steps:
        raise ValueError(
            f"{folder.path} is a {name} run planned for {planned} steps: {reason}, so it cannot be extended "
            f"to {config.train.steps} and be the run its config describes; start a new run with --steps "
            f"{config.train.steps}"
        )


def claim_folder(
    config: RunConfig, dist: DistInfo, *, out: Path, run_id: str | None, resume: Path | None
) -> tuple[RunFolder, Holder | None]:
    """The main process creates (or, resuming, takes) the run folder and claims it; every process learns
    the folder, or that a live holder has it (then all raise ClaimedElsewhere), or that the run finished
    with this very config before the claim was had (then all raise AlreadyComplete: a complete run is never
    rewritten)."""
    holder, shared = None, None
    if dist.is_main:
        run_dir = resume if resume is not None else create_run_dir(out, run_id or new_run_id(config))
        holder, refusal, complete = Holder.here(), None, False
        try:
            note = claim(run_dir, holder)
            if note:
                warnings.warn(note, stacklevel=3)
            complete = finished_as_asked(RunFolder(run_dir), config)
        except ClaimedElsewhere as exc:
            holder, refusal = None, str(exc)
        if complete:
            release(run_dir, holder)
            holder = None
        shared = (str(run_dir), refusal, complete)
    run_dir, refusal, complete = broadcast_object(shared, dist)
    if refusal:
        raise ClaimedElsewhere(refusal)
    if complete:
        raise AlreadyComplete(Path(run_dir))
    return RunFolder(run_dir), holder


def finished_as_asked(folder: RunFolder, config: RunConfig) -> bool:
    """Whether the folder holds a complete run of ``config`` (a larger budget, say, is more to train)."""
    if folder.state() != "complete":
        return False
    return not config_differences(folder.read_config().to_dict(), config.to_dict())


def train_and_finish(
    config: RunConfig,
    setup: Setup,
    folder: RunFolder,
    dist: DistInfo,
    *,
    resumed: bool,
    progress: bool,
    stop: threading.Event | None,
) -> Path:
    exp, sample_cfg, teacher, inception, phases = (
        setup.exp, setup.sample_cfg, setup.teacher, setup.inception, setup.phases
    )  # fmt: skip
    progress = progress and dist.is_main
    pairs = None
    if teacher is not None and exp.recipe.pairs == "teacher":
        pairs = teacher_pairs(teacher, config, folder, dist, progress=progress)
        phases["pairs_s"] = pairs.seconds
    trainer = Trainer(
        exp.model,
        exp.diffusion,
        pairs.x0 if pairs is not None else exp.data.train_images,
        config.train,
        exp.recipe,
        device=exp.device,
        seed=config.seed,
        dist=dist,
        inputs=pairs.x_T if pairs is not None else None,
        labels=exp.data.train_labels if config.conditional else None,
        stop=stop,
        objective=setup.objective,
    )
    history: list[dict] = []
    scores: list[dict] = []  # eval.csv, with --eval-every
    earlier_train_s = 0.0  # wall seconds of training before this process's segment
    if resumed and folder.checkpoint.exists():
        ckpt = load_checkpoint(folder.checkpoint, exp.identity)
        trainer.load_state_dict(ckpt)
        earlier_train_s = float(ckpt.get("wall_train_s", 0.0))
        history = [row for row in folder.read_loss_curve() if row["step"] <= trainer.step]
        scores = [row for row in folder.read_eval_curve() if row["step"] <= trainer.step]
    if dist.is_main:
        folder.write_config(config)
        folder.write_environment(environment(exp.device, dist.world_size))
        folder.write_status("training", step=trainer.step)
    enabled = config.tensorboard and dist.is_main  # one writer: the main process's
    tb = open_log(folder, enabled=enabled, step=trainer.step, history=history, scores=scores)
    try:  # the writer is closed however the run ends

        def checkpoint(tr: Trainer) -> None:
            state = tr.state_dict()  # on every process: it gathers each one's random state
            state["wall_train_s"] = earlier_train_s + time.perf_counter() - t0
            if dist.is_main:
                save_checkpoint(folder.checkpoint, exp.identity, state)
                folder.write_loss_curve(history + tr.log.intervals)
                tb.losses(tr.log.intervals)
                folder.write_status("training", step=tr.step)
            barrier(dist)

        def score(tr: Trainer) -> None:
            if dist.is_main:
                row, samples = score_during_training(exp, tr, sample_cfg, inception)
                scores.append(row)
                folder.write_eval_curve(scores)
                tb.losses(tr.log.intervals)  # the curves up to this step, beside its score
                tb.score(row, samples)
            barrier(dist)

        t0 = time.perf_counter()
        try:
            with looking_at(stop):  # training stops at its next step; elsewhere a stop request acts at once
                log = trainer.run(
                    progress=progress, on_checkpoint=checkpoint, on_eval=score, eval_every=config.eval_every
                )
        except NonFiniteLossError as exc:
            if dist.is_main:
                folder.write_loss_curve(history + trainer.log.intervals)
                tb.losses(trainer.log.intervals)
                folder.write_status("failed", step=trainer.step, reason=str(exc))
            raise
        phases["train_s"] = earlier_train_s + time.perf_counter() - t0
        checkpoint(trainer)
        # a request that came as the last step ended: the checkpoint is written, so stop before sampling
        if log.stop_reason == "interrupted" or (stop is not None and stop.is_set()):
            if dist.is_main:
                folder.write_status("interrupted", step=trainer.step)
            raise KeyboardInterrupt(
                f"stopped at step {trainer.step}; continue with `bench run --resume {folder.path}`"
            )

        if dist.is_main:
            try:
                report = None
                if teacher is not None and pairs is not None:
                    student = Denoiser.of(trainer.ema.module, exp.diffusion, exp.recipe, clip_x0=True)
                    mean_image = exp.data.train_images.mean(0, keepdim=True)
                    report = distillation_metrics(teacher, pairs, student, mean_image, seed=config.seed)
                cost = cost_inputs(config, exp, teacher, pairs)
                finish(
                    exp, trainer, log, sample_cfg, folder, phases, inception, report, cost,
                    progress=progress, tb=tb,
                )  # fmt: skip
            except KeyboardInterrupt:  # every file is written whole or not at all: sampling starts again
                folder.write_status("interrupted", step=trainer.step)
                raise KeyboardInterrupt(
                    f"stopped after training, while sampling or evaluating; continue with "
                    f"`bench run --resume {folder.path}`"
                ) from None
        barrier(dist)
        return folder.path
    finally:
        tb.close()


def cost_inputs(config: RunConfig, exp: Experiment, teacher: Teacher | None, pairs: Pairs | None) -> dict:
    """What :func:`bench.runs.cost.run_cost` needs beside the run's training metrics: the network calls per
    example its objective declared (or measured on the network), and the teacher's folder, forward FLOPs
    and pairs."""
    shape = tuple(exp.data.image_shape)
    inputs: dict = {"step_cost": step_cost(exp.recipe.objective, config, exp.model, shape)}
    if teacher is not None:
        inputs.update(
            teacher_dir=teacher.path,
            teacher_forward_flops=teacher.forward_flops,
            pair_flops=(
                pairs.x0.shape[0] * config.distill.teacher_steps * teacher.forward_flops
                if pairs is not None
                else None
            ),
        )
    return inputs


def teacher_pairs(
    teacher: Teacher, config: RunConfig, folder: RunFolder, dist: DistInfo, *, progress: bool
) -> Pairs:
    """The main process makes (or resumes) the pairs; the others then read the finished cache."""
    if dist.is_main:
        folder.write_config(config)
        folder.write_status("making teacher pairs")
        try:
            pairs = make_pairs(
                teacher, config.distill, seed=config.seed, path=folder.pairs, progress=progress
            )
        except KeyboardInterrupt:
            folder.write_status("interrupted")
            raise KeyboardInterrupt(
                f"stopped while making teacher pairs (those made are kept); continue with "
                f"`bench run --resume {folder.path}`"
            ) from None
    barrier(dist)
    if not dist.is_main:
        pairs = make_pairs(teacher, config.distill, seed=config.seed, path=folder.pairs, progress=False)
    return pairs


def finish(
    exp: Experiment,
    trainer: Trainer,
    log: TrainLog,
    sample_cfg: SampleConfig,
    folder: RunFolder,
    phases: dict[str, float],
    inception: StandardInception | None = None,
    distillation: dict | None = None,
    cost: dict | None = None,
    *,
    progress: bool,
    tb: TensorBoardLog | None = None,
) -> None:
    """Sample from the trained model, write the grid and the metrics (to TensorBoard too, with ``tb``), and
    mark the run complete."""
    folder.write_status("sampling", step=trainer.step)
    model = trainer.ema.module if sample_cfg.use_ema else trainer.model
    # --compile covers sampling too: the fixed-shape sampling loop is where compilation pays most (1.3x
    # over eager channels-last on a 2-core CPU); its compile time is part of the sampling seconds.
    sampler = torch.compile(model) if exp.config.train.compile else model
    samples, sample_s = generate(
        exp, sampler, sample_cfg, sample_cfg.n, seed=exp.config.seed, progress=progress
    )
    phases["sample_s"] = sample_s
    labels = sample_labels(exp, sample_cfg, samples.shape[0])
    save_grid(folder.samples_png, samples[:64])
    save_samples_npz(folder.samples_npz, samples, labels)
    metrics = run_metrics(exp, trainer, log, sample_cfg, n=samples.shape[0], sample_s=sample_s)
    metrics = replace(
        metrics,
        run_id=folder.name,
        distillation=distillation,
        cost=run_cost(metrics.train, **(cost or {})),
    )
    if exp.config.evaluate:
        folder.write_status("evaluating", step=trainer.step)
        start = time.perf_counter()
        scores = evaluate(exp, model, samples, progress=progress, inception=inception, labels=labels)
        metrics = replace(metrics, **scores.evaluation_fields())
        phases["eval_s"] = time.perf_counter() - start
    metrics = replace(metrics, phases=phases)
    folder.write_metrics(metrics)
    if tb is not None:
        tb.finish(folder, metrics, exp.config.to_dict(), samples)
    folder.write_status("complete", step=trainer.step)
