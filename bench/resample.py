"""``bench sample`` and ``bench eval``: a finished (or checkpointed) run sampled again, or sampled and
scored with other samplers and step counts, never touching the run's own files except to append to
``metrics.json``'s ``evaluations``."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

from .config import SampleConfig
from .datasets._base import uint8_to_unit
from .experiment import Experiment, generate, load_run, resolve_sampler
from .fid_samples import CHUNK, chunk_folder, chunked_samples
from .images import save_grid, save_samples_npz
from .measure import evaluate
from .metrics.fidelity import StandardInception, reference_features, standard_metrics
from .run_folder import EvalSample, EvaluationEntry, RunFolder

CLASSIFIER_SAMPLES = 10_000
"""At most this many of an FID evaluation's samples are scored in the classifier's feature space."""


def sampler_config(exp: Experiment, *, method: str, steps: int | None, eta: float, n: int) -> SampleConfig:
    """The run's own sampling settings with another sampler, step count, eta and number of samples."""
    cfg = replace(exp.config.sample, method=method, steps=steps, eta=eta, n=n)
    return resolve_sampler(replace(cfg, batch_size=min(cfg.batch_size, n)), exp.recipe)


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
    cfg = sampler_config(exp, method=method, steps=steps, eta=eta, n=n)
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
    fid_weights: Path | None = None,
    fid_chunk: int = CHUNK,
) -> list[EvaluationEntry]:
    """Sample a finished run with each step count and score it; each result is appended to the run's
    ``metrics.json`` under ``evaluations`` (the run's own numbers are kept as they are).

    With ``fid_weights`` the samples are drawn in resumable chunks (:mod:`bench.fid_samples`) and scored
    with standard FID, IS and KID too; the classifier-space metrics then use the first
    ``CLASSIFIER_SAMPLES`` of them."""
    folder = RunFolder(run_dir)
    if not folder.has_metrics():
        raise FileNotFoundError(f"{str(run_dir)!r} has no metrics.json: the run has not finished")
    exp, ckpt = load_run(run_dir, device=device)
    exp.model.load_state_dict(ckpt["ema"]["module"])
    exp.model.to(exp.device)
    extractor = StandardInception(fid_weights, device=exp.device) if fid_weights is not None else None
    entries = []
    for count in steps:
        cfg = sampler_config(exp, method=method, steps=count, eta=eta, n=n)
        if extractor is None:
            samples, seconds = generate(exp, exp.model, cfg, n, seed=seed, progress=progress)
            scores, images_per_s = evaluate(exp, exp.model, samples, progress=progress), n / seconds
        else:
            where = chunk_folder(
                folder.extra_samples, cfg, seed, True, extractor.weights_hash, int(ckpt["step"])
            )
            fs = chunked_samples(
                exp,
                exp.model,
                cfg,
                n,
                seed=seed,
                folder=where,
                extractor=extractor,
                chunk=fid_chunk,
                progress=progress,
            )
            samples = uint8_to_unit(fs.images[:CLASSIFIER_SAMPLES])
            reference = reference_features(extractor, exp.data.name, exp.data.train_images, progress=progress)
            standard = standard_metrics(fs.pool, fs.logits, reference)
            scores = replace(evaluate(exp, exp.model, samples, progress=progress), **standard)
            images_per_s = fs.made / fs.seconds if fs.made else None
        entry = EvaluationEntry(
            **scores.evaluation_fields(),
            sample=EvalSample(cfg.method, cfg.steps, cfg.eta, n, seed, images_per_s),
        )
        folder.add_evaluation(entry)
        entries.append(entry)
    return entries
