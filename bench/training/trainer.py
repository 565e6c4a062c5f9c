"""The one trainer every denoiser shares: AdamW with warm-up, gradient clipping, EMA, the training objective
the denoiser's recipe names (:mod:`bench.training.objectives`: the loss, and any state it keeps beside the
model), a budget in steps or minutes, optional autocast and ``torch.compile``, DistributedDataParallel when
launched by ``torchrun``, and exact resume on CPU. The trainer keeps no loss of its own.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from denoisers import Recipe

from ..config import RunConfig, TrainConfig
from ..distributed import DistInfo, all_objects, any_rank
from ..process.denoiser import Denoiser
from ..process.diffusion import Diffusion
from .checkpoint import CheckpointError
from .ema import EMA
from .objectives import Batch, Objective, ObjectiveContext, build_objective, check_objective
from .train_log import Interval, TrainLog

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written before it is kept."""


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2, drawn from the trainer's generator (so a
    resumed run flips the same images)."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (images.ndim - 1)), images.flip(-1), images)


class Trainer:
    """Holds the training state (model, EMA, optimizer, step, RNG) and runs the loop until a budget ends."""

    def __init__(
        self,
        model: nn.Module,
        diffusion: Diffusion,
        images: torch.Tensor,
        config: TrainConfig,
        recipe: Recipe,
        *,
        device: torch.device,
        seed: int,
        dist: DistInfo | None = None,
        inputs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        stop: threading.Event | None = None,
        objective: Objective | None = None,
    ) -> None:
        """``inputs``, when given, is the x_t each of ``images`` is paired with (a teacher's pairs, for a
        recipe with ``pairs="teacher"``); otherwise x_t is drawn from q(x_t | x0) at every step. ``labels``,
        the class of each image, trains a conditional model (a fraction ``config.label_dropout`` of each
        batch with the null label). ``stop``, when set (by a scheduler's preemption signal, say), stops the
        loop after a step as Ctrl-C does. ``objective`` is the training objective, built by the caller (who
        has the run's whole config and the teacher); by default the one the recipe names is built from
        ``config`` alone."""
        self.config = config
        check_objective(recipe, diffusion, config, conditional=labels is not None)
        self.recipe = recipe
        self.device = device
        self.seed = seed
        self.dist = dist or DistInfo()
        self.diffusion = diffusion
        self.model = model.to(device)
        self.images = images.to(device)
        if (inputs is None) != (recipe.pairs == "independent"):
            raise ValueError(
                "a recipe with teacher pairs needs the inputs each image is paired with, and only it does"
            )
        if inputs is not None and config.hflip:
            raise ValueError("--hflip breaks teacher pairs: a mirrored image is not the teacher's map of x_T")
        if inputs is not None and inputs.shape != images.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} must match the images {tuple(images.shape)}")
        self.inputs = inputs.to(device) if inputs is not None else None
        if labels is not None and labels.shape != images.shape[:1]:
            raise ValueError(f"labels {tuple(labels.shape)} must give one class per image, {images.shape[0]}")
        self.labels = labels.to(device) if labels is not None else None
        if objective is None:
            context = ObjectiveContext(
                RunConfig(train=config), recipe, self.model, diffusion, tuple(images.shape[1:])
            )
            objective = build_objective(context)
        self.objective = objective
        objective.bind(self.model)
        self.ema = EMA(self.model, config.ema_decay)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            **fused_or_foreach(device),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.step = 0
        self.train_seconds = 0.0
        # Timesteps and noise come from a generator of their own (one stream per process), so that
        # resuming restores them exactly; dropout uses the global RNG, which is saved too. Every process
        # seeded the global RNG alike to draw the same initial weights; each but the first now takes a
        # stream of its own, so that no two draw the same dropout masks (the first continues its stream,
        # so a one-process run draws what it always did).
        self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + self.dist.rank)
        if self.dist.rank > 0:
            torch.manual_seed((seed * 1_000_003 + self.dist.rank) * 7_919)
        self.net = self._wrap(self.model)
        self.denoiser = Denoiser.of(self.net, diffusion, recipe)
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)
        self._stop_requested = False
        self.stop = stop
        self.grad_norm = torch.zeros((), device=device)  # the last step's, on the device (with clipping)
        self.log = TrainLog()

    def _wrap(self, model: nn.Module) -> nn.Module:
        net: nn.Module = model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        if self.config.compile:
            net = torch.compile(net)
        return net

    # ------------------------------------------------------------------------------------------- data
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of this process's batch at ``step``: consecutive slices of an endless stream of seeded
        per-epoch permutations, split across processes like a DistributedSampler. A pure function of
        ``step``, so a resumed run sees exactly the batches it would have seen."""
        n, b, world = self.images.shape[0], self.config.batch_size, self.dist.world_size
        start = (step * world + self.dist.rank) * b
        chunks = []
        while b > 0:
            epoch, offset = divmod(start, n)
            if epoch != self._perm_epoch:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm_epoch, self._perm = epoch, torch.randperm(n, generator=gen)
            take = min(b, n - offset)
            chunks.append(self._perm[offset : offset + take])
            start, b = start + take, b - take
        return torch.cat(chunks).to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------------------ steps
    def lr_at(self, step: int) -> float:
        """Linear warm-up to the base learning rate, then constant (as in DDPM)."""
        warmup = self.config.warmup_steps
        return self.config.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else self.config.lr

    def train_step(
        self, x0: torch.Tensor, x_t: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One optimisation step (``x_t``: the paired inputs, for teacher pairs; ``y``: the classes, for a
        conditional model); returns the batch loss as a device tensor (no host sync)."""
        cfg = self.config
        if cfg.hflip:
            x0 = random_hflip(x0, self.generator)
        autocast = (
            torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[cfg.precision])
            if cfg.precision in AUTOCAST_DTYPES
            else contextlib.nullcontext()
        )
        with autocast:
            loss = self.objective.loss(self.denoiser, Batch(x0, x_t, y), self.step, self.generator).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update()
        self.objective.after_step()
        self.step += 1
        return loss.detach()

    @contextlib.contextmanager
    def graceful_interrupt(self) -> Iterator[None]:
        """The first Ctrl-C (or SIGTERM, what schedulers and ``kill`` send) asks the loop to stop after the
        current step, so the checkpoint is consistent; a second one acts at once."""
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        # only signals nobody else handles (or ignores), and only from the main thread
        ours = [sig for sig, default in defaults.items() if signal.getsignal(sig) is default]
        if threading.current_thread() is not threading.main_thread():
            ours = []

        def handler(signum, frame):
            self._stop_requested = True
            for sig in ours:
                signal.signal(sig, defaults[sig])

        for sig in ours:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig in ours:
                signal.signal(sig, defaults[sig])

    def run(
        self,
        *,
        progress: bool = True,
        on_checkpoint: Callable[[Trainer], None] | None = None,
        on_eval: Callable[[Trainer], None] | None = None,
        eval_every: int | None = None,
    ) -> TrainLog:
        """Train until ``config.steps`` or ``config.minutes`` is reached, or Ctrl-C.

        The loss is read back to the host once per ``log_every`` steps (never per step); that is also where
        NaN/inf is detected, before any checkpoint, so a checkpoint never holds a diverged model. A stop
        between two log boundaries closes the interval it interrupts, so its seconds count in
        ``train_seconds`` (and the budget) and its images in the throughput, and its loss is checked too.
        ``on_eval`` runs every ``eval_every`` steps, between timed intervals, so it never counts as training.
        """
        cfg = self.config
        log = self.log = TrainLog.continuing(self.log.totals())
        budget_s = cfg.minutes * 60 if cfg.minutes is not None else math.inf
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not progress)
        interval = Interval(torch.zeros(2, device=self.device))
        with self.graceful_interrupt():
            while True:
                log.stop_reason = self._stop_reason(budget_s, interval)
                if log.stop_reason:
                    break
                t0 = time.perf_counter()
                indices = self.batch_indices(self.step)
                x0 = self.images[indices]
                x_t = self.inputs[indices] if self.inputs is not None else None
                y = self.labels[indices] if self.labels is not None else None
                log.data_seconds += time.perf_counter() - t0
                interval.sums += torch.stack([self.train_step(x0, x_t, y).float(), self.grad_norm.float()])
                interval.steps += 1
                checkpoint_due = self.step % cfg.checkpoint_every == 0
                eval_due = on_eval is not None and bool(eval_every) and self.step % eval_every == 0
                if self.step % cfg.log_every == 0 or checkpoint_due or eval_due or self.step >= cfg.steps:
                    self._close_interval(interval, log, bar)
                    if on_checkpoint is not None and checkpoint_due:
                        on_checkpoint(self)
                    if eval_due:  # between intervals: its time is not training time
                        on_eval(self)
                    interval = Interval(interval.sums.zero_())
            if interval.steps:  # stopped between two log boundaries
                self._close_interval(interval, log, bar)
        bar.close()
        return log

    def _stop_reason(self, budget_s: float, interval: Interval) -> str:
        """Why to stop before the next step ("" to go on). The time budget counts the interval still open,
        so one process overruns it by at most a step. With several processes, all must stop after the same
        step or the next collective waits forever, so they agree on the budget and on a stop request (any
        one over budget or asked to stop stops all) at log intervals, where the loss is read back anyway;
        there the budget may overrun by up to one interval."""
        if self.step >= self.config.steps:
            return "steps"
        over_budget = self.train_seconds + (time.perf_counter() - interval.start) >= budget_s
        requested = self._stop_requested or (self.stop is not None and self.stop.is_set())
        if self.dist.world_size > 1:
            if self.step % self.config.log_every != 0:
                return ""
            over_budget, requested = any_rank([over_budget, requested], self.dist, self.device)
        return "minutes" if over_budget else "interrupted" if requested else ""

    def _close_interval(self, interval: Interval, log: TrainLog, bar: tqdm) -> None:
        """Read the interval's mean loss and gradient norm (the one host sync), check the loss, count its
        seconds and images, add a row to the loss curve and show it."""
        mean_loss, grad_norm = (interval.sums / interval.steps).tolist()
        elapsed = time.perf_counter() - interval.start
        self.train_seconds += elapsed
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(
                f"the training loss became {mean_loss} between steps {self.step - interval.steps + 1} and "
                f"{self.step}; lower --lr or use --precision fp32. The last good checkpoint is kept."
            )
        images = interval.steps * self.config.batch_size * self.dist.world_size
        if log.intervals:  # the segment's first interval holds warm-up (allocation, compilation): not timed
            log.timed_images += images
            log.timed_seconds += elapsed
        row = {
            "step": self.step,
            "loss": mean_loss,
            "lr": self.lr_at(self.step - 1),
            **({"grad_norm": grad_norm} if self.config.grad_clip > 0 else {}),
            "images_per_s": images / elapsed,
            "train_seconds": self.train_seconds,
        }
        log.intervals.append(row)
        bar.update(interval.steps)
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{row['images_per_s']:.0f}")

    # ---------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit on CPU; only tensors, lists, dicts and plain types, so
        it loads with ``torch.load(..., weights_only=True)``. Each process draws its own timesteps, noise and
        dropout, so ``rng`` holds every process's random state, indexed by rank: with several processes
        this gathers them, and every process must call it (the main one then writes the result)."""
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "log": self.log.totals(),
            "rng": all_objects(rng, self.dist),
            "objective": self.objective.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``, this process taking its own entry of the random states (checked first,
        so a refused checkpoint changes nothing)."""
        rng = rank_random_state(state["rng"], self.dist)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.objective.load_state_dict(state.get("objective", {}))  # none in a regression run's of before
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.log = TrainLog.continuing(state.get("log", {}))
        if rng is None:  # see rank_random_state: a fresh stream per process, the same on every resume
            reseed = (self.seed * 1_000_003 + self.dist.rank) * 1_000_033 + self.step
            torch.manual_seed(reseed)
            self.generator.manual_seed(reseed)
            return
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def rank_random_state(saved: list[dict] | dict, dist: DistInfo) -> dict | None:
    """This process's entry of a checkpoint's random states.

    The number of processes must be the one that wrote them (the error says why). A checkpoint from before
    per-process states holds one dict, rank 0's: a one-process run takes it as its own; under several
    processes rank 0 takes it and the others get None, to reseed from the seed, rank and step (a warning
    says the resume is not exact; before, every rank took rank 0's state and drew the same noise)."""
    if isinstance(saved, dict):
        if dist.world_size > 1:
            warnings.warn(
                "this checkpoint predates per-process random states and holds only the first process's; "
                "the other processes continue on fresh seeded streams, so this resume is not exact",
                stacklevel=3,
            )
        return saved if dist.rank == 0 else None
    if len(saved) != dist.world_size:
        n = len(saved)
        how = "plain `bench run --resume`" if n == 1 else f"`torchrun --nproc-per-node {n}` (on one machine)"
        raise CheckpointError(
            f"this checkpoint was written by {processes(n)} and this run is {processes(dist.world_size)}: "
            f"resume it with {processes(n)}, {how}. Each process's batches and random streams, and the "
            "global batch of batch size x processes, depend on the number of processes, so another number "
            "would neither continue exactly nor be the same experiment"
        )
    return saved[dist.rank]


def processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def fused_or_foreach(device: torch.device) -> dict:
    """The fastest AdamW implementation available: one fused kernel over all parameters on CUDA and CPU,
    multi-tensor (``foreach``) updates elsewhere. In a U-Net's CPU training step the optimizer is about 1% of
    the time, so there the choice is within the noise (``scripts/speed_flags.py`` times both)."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
