"""``bench run``'s orchestration: build the pieces a RunConfig names, train, sample, measure, and keep
everything in a run folder (:mod:`bench.run_folder`) that describes itself and can be resumed; and the
same for a finished run's later ``bench sample`` and ``bench eval``."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

import denoisers
import schedules
from denoisers.common import count_parameters
from denoisers.kernels.group_norm import fused_kernel_ran, use_fused_kernels

from . import datasets
from .checkpoint import identity, load_checkpoint, save_checkpoint
from .config import AUTO_SAMPLER, RunConfig, SampleConfig
from .denoiser import Denoiser
from .diffusion import Diffusion
from .distributed import DistInfo, barrier, broadcast_object, init_distributed, shutdown
from .environment import (
    configure_allocator,
    configure_tf32,
    device_name,
    environment,
    resolve_device,
)
from .images import save_grid, save_samples_npz
from .io import create_run_dir
from .likelihood import nll_bits_per_dim
from .run_folder import (
    EvalSample,
    Evaluation,
    EvaluationEntry,
    RunFolder,
    RunMetrics,
    SampleMetrics,
    TrainMetrics,
)
from .sampling import sample
from .scoring import EvalConfig, score_samples
from .throughput import (
    efficiency,
    forward_flops_per_image,
    matmul_peak,
    peak_memory_bytes,
    training_flops_per_image,
)
from .trainer import NonFiniteLossError, Trainer, TrainLog


@dataclass
class Experiment:
    """The objects a RunConfig resolves to."""

    config: RunConfig
    data: datasets.ImageData
    diffusion: Diffusion
    model: nn.Module
    recipe: denoisers.Recipe
    device: torch.device

    @property
    def identity(self) -> dict:
        return identity(
            self.config.denoiser,
            self.config.denoiser_options,
            self.data.image_shape,
            self.diffusion.num_timesteps,
        )


def build_experiment(config: RunConfig, *, download: bool = False) -> Experiment:
    """Resolve every name in ``config`` to an object; raises ValueError/FileNotFoundError on bad input."""
    device = resolve_device(config.device)
    data = datasets.load(
        config.dataset, root=config.data_root, download=download, image_size=config.image_size
    )
    betas = schedules.make(
        config.diffusion.schedule,
        config.diffusion.timesteps,
        zero_terminal_snr=config.diffusion.zero_terminal_snr,
    )
    factory = denoisers.get(config.denoiser)
    torch.manual_seed(config.seed)  # the initial weights
    model = factory(data.image_shape, **config.denoiser_options)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    use_fused_kernels(model, config.fused_norm)
    configure_tf32(device, config.tf32)
    configure_allocator(device, config.tune_malloc)
    return Experiment(config, data, Diffusion(betas), model, denoisers.recipe_of(model), device)


def resolve_sampler(sample_cfg: SampleConfig, recipe: denoisers.Recipe) -> SampleConfig:
    """Turn ``method="auto"`` into a concrete sampler: one shot for a denoiser trained only at t = T-1, DDIM
    with ``steps`` steps otherwise; refuse iterative sampling of a model that never saw t < T-1."""
    method = sample_cfg.method
    if method == AUTO_SAMPLER:
        method = recipe.sampler if recipe.timesteps == "terminal" else "ddim"
    if recipe.timesteps == "terminal" and method != "one_shot":
        raise ValueError(
            f"this denoiser is trained only on pure noise (t = T-1), so it can only be sampled with "
            f"method 'one_shot', not {method!r}"
        )
    steps = sample_cfg.steps
    if method == "one_shot":
        steps = 1
    elif method == "ancestral":
        steps = None
    return replace(sample_cfg, method=method, steps=steps)


def new_run_id(config: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    design = f"{config.denoiser}-{config.diffusion.schedule}-{config.dataset}-s{config.seed}"
    return f"{stamp}-{design}-{secrets.token_hex(2)}"


def generate(
    exp: Experiment, model: nn.Module, sample_cfg: SampleConfig, n: int, *, seed: int, progress: bool
) -> tuple[torch.Tensor, float]:
    """``n`` samples in [-1, 1] (on CPU) in batches, and the seconds it took (device synchronised)."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    denoiser = Denoiser(model, exp.diffusion, exp.recipe.prediction, clip_x0=sample_cfg.clip_x0)
    chunks, start = [], time.perf_counter()
    for i in range(0, n, sample_cfg.batch_size):
        b = min(sample_cfg.batch_size, n - i)
        x = sample(
            denoiser,
            (b, *exp.data.image_shape),
            method=sample_cfg.method,
            steps=sample_cfg.steps,
            generator=gen,
            device=exp.device,
            progress=progress,
            **sample_cfg.settings(),
        )
        chunks.append(x.float().cpu())
    if exp.device.type == "cuda":
        torch.cuda.synchronize(exp.device)
    return torch.cat(chunks).clamp(-1, 1), time.perf_counter() - start


def execute(
    config: RunConfig,
    *,
    out: Path = Path("results"),
    run_id: str | None = None,
    resume: Path | None = None,
    download: bool = False,
    progress: bool = True,
) -> Path:
    """Train, sample and measure one run; returns its folder. ``resume`` continues a run folder instead."""
    dist = init_distributed(resolve_device(config.device).type)
    try:
        return _execute(
            config, dist, out=out, run_id=run_id, resume=resume, download=download, progress=progress
        )
    finally:
        shutdown(dist)


def _execute(
    config: RunConfig,
    dist: DistInfo,
    *,
    out: Path,
    run_id: str | None,
    resume: Path | None,
    download: bool,
    progress: bool,
) -> Path:
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    exp = build_experiment(config, download=download)
    sample_cfg = resolve_sampler(config.sample, exp.recipe)
    phases["setup_s"] = time.perf_counter() - t0
    progress = progress and dist.is_main

    if dist.is_main:
        run_dir = resume if resume is not None else create_run_dir(out, run_id or new_run_id(config))
    else:
        run_dir = None
    folder = RunFolder(broadcast_object(str(run_dir) if run_dir else None, dist))

    trainer = Trainer(
        exp.model,
        exp.diffusion,
        exp.data.train_images,
        config.train,
        exp.recipe,
        device=exp.device,
        seed=config.seed,
        dist=dist,
    )
    history: list[dict] = []
    if resume is not None and folder.checkpoint.exists():
        ckpt = load_checkpoint(folder.checkpoint, exp.identity)
        trainer.load_state_dict(ckpt)
        history = [row for row in folder.read_loss_curve() if row["step"] <= trainer.step]
    if dist.is_main:
        folder.write_config(config)
        folder.write_environment(environment(exp.device, dist.world_size))
        folder.write_status("training", step=trainer.step)

    def checkpoint(tr: Trainer) -> None:
        if dist.is_main:
            save_checkpoint(folder.checkpoint, exp.identity, tr.state_dict())
            folder.write_loss_curve(history + tr.log.intervals)
            folder.write_status("training", step=tr.step)
        barrier(dist)

    t0 = time.perf_counter()
    try:
        log = trainer.run(progress=progress, on_checkpoint=checkpoint)
    except NonFiniteLossError as exc:
        if dist.is_main:
            folder.write_loss_curve(history + trainer.log.intervals)
            folder.write_status("failed", step=trainer.step, reason=str(exc))
        raise
    phases["train_s"] = time.perf_counter() - t0
    checkpoint(trainer)
    if log.stop_reason == "interrupted":
        if dist.is_main:
            folder.write_status("interrupted", step=trainer.step)
        raise KeyboardInterrupt(
            f"stopped at step {trainer.step}; continue with `bench run --resume {folder.path}`"
        )

    if dist.is_main:
        finish(exp, trainer, log, sample_cfg, folder, phases, progress=progress)
    barrier(dist)
    return folder.path


def finish(
    exp: Experiment,
    trainer: Trainer,
    log: TrainLog,
    sample_cfg: SampleConfig,
    folder: RunFolder,
    phases: dict[str, float],
    *,
    progress: bool,
) -> None:
    """Sample from the trained model, write the grid and the metrics, and mark the run complete."""
    folder.write_status("sampling", step=trainer.step)
    model = trainer.ema.module if sample_cfg.use_ema else trainer.model
    # --compile covers sampling too: the fixed-shape sampling loop is where compilation pays most (1.3x
    # over eager channels-last on a 2-core CPU); its compile time is part of the sampling seconds.
    sampler = torch.compile(model) if exp.config.train.compile else model
    samples, sample_s = generate(
        exp, sampler, sample_cfg, sample_cfg.n, seed=exp.config.seed, progress=progress
    )
    phases["sample_s"] = sample_s
    save_grid(folder.samples_png, samples[:64])
    save_samples_npz(folder.samples_npz, samples)
    metrics = run_metrics(exp, trainer, log, sample_cfg, n=samples.shape[0], sample_s=sample_s)
    metrics = replace(metrics, run_id=folder.name)
    if exp.config.evaluate:
        folder.write_status("evaluating", step=trainer.step)
        start = time.perf_counter()
        scores = evaluate(exp, model, samples, progress=progress)
        metrics = replace(metrics, **scores.evaluation_fields())
        phases["eval_s"] = time.perf_counter() - start
    folder.write_metrics(replace(metrics, phases=phases))
    folder.write_status("complete", step=trainer.step)


def evaluate(
    exp: Experiment,
    model: nn.Module,
    samples: torch.Tensor,
    *,
    progress: bool,
    config: EvalConfig | None = None,
) -> Evaluation:
    """Quality metrics beside the reference rows, and the NLL bound for denoisers trained on every t."""
    config = config or EvalConfig()
    result = Evaluation(**score_samples(samples, exp.data, config, progress=progress))
    if exp.recipe.timesteps == "all":
        nll = nll_bits_per_dim(
            Denoiser(model, exp.diffusion, exp.recipe.prediction),
            exp.data.test_images[: config.nll_images],
            num_timesteps=config.nll_timesteps,
            device=exp.device,
            generator=torch.Generator().manual_seed(config.seed),
        )
        result = replace(result, nll=nll.to_dict())
    return result


def run_metrics(
    exp: Experiment, trainer: Trainer, log: TrainLog, sample_cfg: SampleConfig, *, n: int, sample_s: float
) -> RunMetrics:
    """Parameters, speed and hardware efficiency of training and sampling."""
    forward = forward_flops_per_image(trainer.model, exp.data.image_shape, exp.device)
    training = training_flops_per_image(trainer.model, exp.data.image_shape, exp.device)
    peak = matmul_peak(exp.device)
    best = (log.images_per_second or 0.0) * training
    if best > peak:  # a peak cached while the machine was busy: measure it again
        peak = matmul_peak(exp.device, refresh=True)
    nfe = sampler_calls(sample_cfg, exp.diffusion.num_timesteps)
    sample_ips = n / sample_s
    return RunMetrics(
        parameters=count_parameters(trainer.model),
        image_shape=list(exp.data.image_shape),
        train=TrainMetrics(
            steps=trainer.step,
            images_seen=trainer.step * exp.config.train.batch_size * trainer.dist.world_size,
            images_per_s=log.images_per_second,
            data_wait_s=log.data_seconds,
            final_loss=(log.intervals[-1]["loss"] if log.intervals else None),
            stop_reason=log.stop_reason,
            train_seconds_total=trainer.train_seconds,
            forward_flops_per_image=forward,
            training_flops_per_image=training,
            **efficiency(log.images_per_second, training, peak),
        ),
        sample=SampleMetrics(
            method=sample_cfg.method,
            steps=sample_cfg.steps,
            eta=sample_cfg.eta,
            n=n,
            images_per_s=sample_ips,
            network_evaluations_per_image=nfe,
            network_evaluations_per_s=sample_ips * nfe,
            **efficiency(sample_ips * nfe, forward, peak),
            ema=sample_cfg.use_ema,
        ),
        hardware={
            "device": str(exp.device),
            "device_name": device_name(exp.device),
            "dtype": exp.config.train.precision,
            "threads": torch.get_num_threads(),
            "matmul_peak_flops_per_s": peak,
            "peak_memory_bytes": peak_memory_bytes(exp.device),
            "fused_norm_kernel": fused_kernel_ran(trainer.model),
        },
    )


def sampler_calls(sample_cfg: SampleConfig, num_timesteps: int) -> int:
    """Network evaluations per sample: the resolved step count (all T for ancestral)."""
    return sample_cfg.steps if sample_cfg.steps is not None else num_timesteps


def load_run(run_dir: Path, *, device: str | None = None) -> tuple[Experiment, dict]:
    """Rebuild a run's experiment from its folder and load its checkpoint (checked against its config)."""
    config = RunFolder(run_dir).read_config()
    if device is not None:
        config = replace(config, device=device)
    exp = build_experiment(config)
    ckpt = load_checkpoint(RunFolder(run_dir).checkpoint, exp.identity)
    return exp, ckpt


def sample_run(
    run_dir: Path,
    *,
    n: int,
    method: str,
    steps: int | None,
    eta: float,
    seed: int,
    use_ema: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Sample ``n`` images from a run into ``run_dir/samples/``, never touching the run's own files."""
    exp, ckpt = load_run(run_dir, device=device)
    exp.model.load_state_dict(ckpt["ema"]["module"] if use_ema else ckpt["model"])
    exp.model.to(exp.device)
    cfg = resolve_sampler(
        replace(
            exp.config.sample,
            method=method,
            steps=steps,
            eta=eta,
            batch_size=min(exp.config.sample.batch_size, n),
        ),
        exp.recipe,
    )
    samples, seconds = generate(exp, exp.model, cfg, n, seed=seed, progress=progress)
    out = RunFolder(run_dir).extra_samples
    out.mkdir(exist_ok=True)
    stem = f"{cfg.method}-{cfg.steps or exp.diffusion.num_timesteps}steps-eta{cfg.eta:g}-n{n}-seed{seed}"
    stem = f"{stem}-{'ema' if use_ema else 'raw'}-{secrets.token_hex(2)}"
    return [save_grid(out / f"{stem}.png", samples[:64]), save_samples_npz(out / f"{stem}.npz", samples)]


def evaluate_run(
    run_dir: Path,
    *,
    n: int,
    method: str,
    steps: list[int | None],
    eta: float,
    seed: int,
    device: str = "auto",
    progress: bool = True,
) -> list[EvaluationEntry]:
    """Sample a finished run with each step count and score it; each result is appended to the run's
    ``metrics.json`` under ``evaluations`` (the run's own numbers are kept as they are)."""
    folder = RunFolder(run_dir)
    if not folder.has_metrics():
        raise FileNotFoundError(f"{str(run_dir)!r} has no metrics.json: the run has not finished")
    exp, ckpt = load_run(run_dir, device=device)
    exp.model.load_state_dict(ckpt["ema"]["module"])
    exp.model.to(exp.device)
    entries = []
    for count in steps:
        cfg = resolve_sampler(
            replace(
                exp.config.sample,
                method=method,
                steps=count,
                eta=eta,
                n=n,
                batch_size=min(exp.config.sample.batch_size, n),
            ),
            exp.recipe,
        )
        samples, seconds = generate(exp, exp.model, cfg, n, seed=seed, progress=progress)
        scores = evaluate(exp, exp.model, samples, progress=progress)
        entry = EvaluationEntry(
            **scores.evaluation_fields(),
            sample=EvalSample(cfg.method, cfg.steps, cfg.eta, n, seed, n / seconds),
        )
        folder.add_evaluation(entry)
        entries.append(entry)
    return entries
