"""What a run measures once it is trained: its size, speed and hardware efficiency, and its samples'
scores beside the reference rows, with the NLL bound for denoisers trained on every t."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from denoisers.common import count_parameters
from denoisers.kernels.group_norm import fused_kernel_ran

from ..config import STEPPING_SETTINGS, RunConfig, SampleConfig
from ..environment import device_name
from ..evaluation.likelihood import nll_bits_per_dim
from ..evaluation.scoring import EvalConfig, score_samples, standard_scores
from ..evaluation.throughput import (
    efficiency,
    forward_flops_per_image,
    matmul_peak,
    peak_memory_bytes,
    training_flops_per_image,
)
from ..metrics import evaluate_samples, get_feature_extractor
from ..metrics.fidelity import StandardInception, find_weights
from ..process.denoiser import Denoiser
from ..process.diffusion import Diffusion
from ..process.sampling import grid_points, guided_network_calls, network_calls, sampler_settings
from ..training.train_log import TrainLog
from ..training.trainer import Trainer
from .experiment import Experiment, generate
from .run_folder import Evaluation, RunMetrics, SampleMetrics, TrainMetrics


def evaluate(
    exp: Experiment,
    model: nn.Module,
    samples: torch.Tensor,
    *,
    progress: bool,
    config: EvalConfig | None = None,
    inception: StandardInception | None = None,
    reuse: Evaluation | None = None,
    labels: torch.Tensor | None = None,
) -> Evaluation:
    """Quality metrics beside the reference rows, the NLL bound for denoisers trained on every t, and with
    ``inception`` standard FID, IS and KID. ``reuse``, an evaluation of the same model with as many samples
    (another sampler), lends its reference rows and NLL bound, which do not depend on the sampler.
    ``labels``, the classes a conditional run's samples were asked to be, adds the class metrics."""
    config = config or EvalConfig()
    refs = reuse.references if reuse is not None else None
    scores = score_samples(samples, exp.data, config, progress=progress, references=refs, labels=labels)
    result = Evaluation(**scores)
    if inception is not None:
        result = replace(result, **standard_scores(samples, exp.data, inception, progress=progress))
    if exp.recipe.timesteps == "all":
        if reuse is not None and reuse.nll is not None:
            return replace(result, nll=reuse.nll)
        nll = nll_bits_per_dim(
            Denoiser.of(model, exp.diffusion, exp.recipe),
            exp.data.test_images[: config.nll_images],
            num_timesteps=config.nll_timesteps,
            device=exp.device,
            generator=torch.Generator().manual_seed(config.seed),
        )
        result = replace(result, nll=nll.to_dict())
    return result


DURING_TRAINING_SAMPLES = 250
DURING_TRAINING_KEYS = ("fd", "kid_mean", "precision", "recall", "class_entropy", "missing_classes")


def standard_inception(config: RunConfig, exp: Experiment, *, download: bool) -> StandardInception | None:
    """The checked Inception extractor a ``--fid`` run needs, found before anything is written."""
    if not config.fid:
        return None
    return StandardInception(find_weights(config.inception_weights, download=download), device=exp.device)


def score_during_training(
    exp: Experiment, trainer: Trainer, sample_cfg: SampleConfig, inception: StandardInception | None = None
) -> tuple[dict, torch.Tensor]:
    """The EMA model's cheap classifier-space scores on a small sample at the current step (one row of
    ``eval.csv``, with standard FID when the run has ``--fid``), and the samples scored (for TensorBoard's
    grid), leaving every random stream of the training as it was."""

    start = time.perf_counter()
    n = DURING_TRAINING_SAMPLES
    with torch.random.fork_rng(devices=[exp.device] if exp.device.type == "cuda" else []):
        cfg = replace(sample_cfg, n=n, batch_size=min(sample_cfg.batch_size, n))
        samples, _ = generate(exp, trainer.ema.module, cfg, n, seed=exp.config.seed, progress=False)
        extractor = get_feature_extractor(exp.data.name, exp.data, progress=False)
        quality = evaluate_samples(samples, exp.data.test_images, extractor, EvalConfig().quality())
        scores = {key: quality[key] for key in DURING_TRAINING_KEYS if key in quality}
        if inception is not None:
            scores["fid"] = standard_scores(samples, exp.data, inception)["fid"]
    return {"step": trainer.step, **scores, "seconds": time.perf_counter() - start}, samples


def run_metrics(
    exp: Experiment, trainer: Trainer, log: TrainLog, sample_cfg: SampleConfig, *, n: int, sample_s: float
) -> RunMetrics:
    """Parameters, speed and hardware efficiency of training and sampling."""
    forward = forward_flops_per_image(trainer.model, exp.data.image_shape, exp.device)
    training = training_flops_per_image(trainer.model, exp.data.image_shape, exp.device)
    nfe = sampler_calls(sample_cfg, exp.diffusion)
    sample_ips = n / sample_s
    peak = matmul_peak(exp.device)
    best = max((log.images_per_second or 0.0) * training, sample_ips * nfe * forward)
    if best > peak:  # a peak cached while the machine was busy: measure it again
        peak = matmul_peak(exp.device, refresh=True)
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
            **guidance_fields(sample_cfg, exp),
            **stepping_fields(sample_cfg),
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


def guidance_fields(sample_cfg: SampleConfig, exp: Experiment) -> dict:
    """How a conditional run's samples were conditioned, for metrics.json (nothing for an unconditional
    run, whose metrics keep the fields they always had)."""
    if not exp.config.conditional:
        return {}
    interval = list(sample_cfg.guidance_interval) if sample_cfg.guidance_interval is not None else None
    return {
        "guidance_scale": sample_cfg.guidance_scale,
        "guidance_interval": interval,
        "class_label": sample_cfg.class_label,
    }


def stepping_fields(sample_cfg: SampleConfig) -> dict:
    """The grid (for a sampler that walks any) and EDM's churn settings (for Euler and Heun), for
    metrics.json; nothing for a sampler that has neither."""
    own = set(sampler_settings(sample_cfg.method))
    return {name: getattr(sample_cfg, name) for name in STEPPING_SETTINGS if name in own}


def sampler_calls(sample_cfg: SampleConfig, diffusion: Diffusion) -> int:
    """Network evaluations per sample (NFE) of the resolved sampler: what it declared for its step count
    (all T steps for ancestral), with each guided call counted twice."""
    steps = sample_cfg.steps if sample_cfg.steps is not None else diffusion.num_timesteps
    if not sample_cfg.guided:
        return network_calls(sample_cfg.method, steps)
    grid = sample_cfg.grid_choice().timesteps(diffusion, grid_points(sample_cfg.method, steps))
    return guided_network_calls(sample_cfg.method, grid, diffusion, sample_cfg.guidance())
