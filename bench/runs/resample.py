"""``bench sample`` and ``bench eval``: a finished (or checkpointed) run sampled again, or sampled and
scored with other samplers and step counts, never touching the run's own files except to append to
``metrics.json``'s ``evaluations``."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import SampleConfig, Stepping
from ..datasets._base import uint8_to_unit
from ..evaluation.solver_error import (
    REFERENCE,
    REFERENCE_IMAGES,
    has_solver_error,
    reference_noise,
    solver_rms,
)
from ..images import save_grid, save_samples_npz
from ..io import load_tensors, torch_save_atomic
from ..metrics.fidelity import StandardInception, reference_features, standard_metrics
from .experiment import Experiment, check_class, generate, load_run, resolve_sampler, sample_labels
from .fid_samples import CHUNK, chunk_folder, chunked_samples
from .measure import evaluate, guidance_fields, sampler_calls, stepping_fields
from .run_folder import EvalSample, EvaluationEntry, RunFolder, RunMetrics

CLASSIFIER_SAMPLES = 10_000
"""At most this many of an FID evaluation's samples are scored in the classifier's feature space."""


@dataclass(frozen=True)
class Conditioning:
    """What a conditional run's samples are asked for: a guidance scale (1: plain conditional), the noise
    levels it applies in (everywhere when None), and one class for all (balanced classes when None)."""

    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    class_label: int | None = None


def sampler_config(
    exp: Experiment,
    *,
    method: str,
    steps: int | None,
    eta: float,
    n: int,
    conditioning: Conditioning | None = None,
    stepping: Stepping | None = None,
    given: tuple[str, ...] = (),
) -> SampleConfig:
    """The run's own sampling settings with another sampler, step count, eta, grid and churn, number of
    samples and (for a conditional run) conditioning; checked against the run as its own config is, and
    resolved as the run's own sampling is (``method="auto"``: the design's choices, except for the settings
    ``given``)."""
    conditioning = conditioning or Conditioning()
    cfg = replace(
        exp.config.sample,
        **{f.name: getattr(stepping or Stepping(), f.name) for f in dataclasses.fields(Stepping)},
        method=method,
        steps=steps,
        eta=eta,
        n=n,
        guidance_scale=conditioning.guidance_scale,
        guidance_interval=conditioning.guidance_interval,
        class_label=conditioning.class_label,
        given=given,
    )
    replace(exp.config, sample=cfg)  # the run's config checks the conditioning and the sigma range
    if exp.num_classes is not None:
        check_class(cfg, exp.num_classes)  # and a class against the dataset's
    return resolve_sampler(
        replace(cfg, batch_size=min(cfg.batch_size, n)),
        exp.recipe,
        exp.diffusion,
        teacher_steps=exp.config.distill.teacher_steps,
    )


def reusable(metrics: RunMetrics, n: int, step: int) -> RunMetrics | None:
    """The run's own evaluation when its reference rows and NLL bound hold for scoring ``n`` samples of the
    EMA model at checkpoint ``step`` (they do not depend on the sampler); None otherwise."""
    sample, train = metrics.sample, metrics.train
    same = sample is not None and train is not None and (sample.n, sample.ema, train.steps) == (n, True, step)
    return metrics if same and metrics.references is not None else None


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
    conditioning: Conditioning | None = None,
    stepping: Stepping | None = None,
    given: tuple[str, ...] = (),
) -> list[Path]:
    """Sample ``n`` images from a run into ``run_dir/samples/``, never touching the run's own files; under
    ``method="auto"`` the settings ``given`` stand against the design's own sampling."""
    exp, ckpt = load_run(run_dir, device=device)
    cfg = sampler_config(
        exp,
        method=method,
        steps=steps,
        eta=eta,
        n=n,
        conditioning=conditioning,
        stepping=stepping,
        given=given,
    )
    exp.model.load_state_dict(ckpt["ema"]["module"] if use_ema else ckpt["model"])
    exp.model.to(exp.device)
    samples, seconds = generate(exp, exp.model, cfg, n, seed=seed, progress=progress)
    labels = sample_labels(exp, cfg, n)
    out = RunFolder(run_dir).extra_samples
    out.mkdir(exist_ok=True)
    stem = f"{cfg.label()}-n{n}-seed{seed}-{'ema' if use_ema else 'raw'}-{secrets.token_hex(2)}"
    npz = save_samples_npz(out / f"{stem}.npz", samples, labels)
    return [save_grid(out / f"{stem}.png", samples[:64]), npz]


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
    guidance_scales: list[float] | None = None,
    guidance_interval: tuple[float, float] | None = None,
    stepping: Stepping | None = None,
    given: tuple[str, ...] = (),
    solver_error: bool = False,
) -> list[EvaluationEntry]:
    """Sample a finished run with each step count (and, for a conditional run, each guidance scale, on
    balanced classes) and score it; each result is appended to the run's ``metrics.json`` under
    ``evaluations`` (the run's own numbers are kept as they are). ``guidance_interval`` applies to the
    scales other than 1; ``stepping`` is the grid and churn of every setting; under ``method="auto"`` the
    settings ``given`` stand against the design's own sampling (``--steps 1,2,4`` of a consistency model).
    With ``solver_error`` each deterministic sampler's RMS distance to the probability-flow ODE's converged
    solution from the same noises is measured too (:mod:`bench.evaluation.solver_error`).

    With ``fid_weights`` the samples are drawn in resumable chunks (:mod:`bench.runs.fid_samples`) and scored
    with standard FID, IS and KID too; the classifier-space metrics then use the first
    ``CLASSIFIER_SAMPLES`` of them."""
    folder = RunFolder(run_dir)
    if not folder.has_metrics():
        raise FileNotFoundError(f"{str(run_dir)!r} has no metrics.json: the run has not finished")
    exp, ckpt = load_run(run_dir, device=device)
    conditionings = [
        Conditioning(scale, guidance_interval if scale != 1 else None) for scale in (guidance_scales or [1.0])
    ]
    configs = [
        sampler_config(
            exp,
            method=method,
            steps=count,
            eta=eta,
            n=n,
            conditioning=conditioning,
            stepping=stepping,
            given=given,
        )
        for count in steps
        for conditioning in conditionings
    ]  # every setting checked before any sampling
    same = [count for count, cfg in zip(steps, configs[:: len(conditionings)], strict=True)
            if cfg.label() == configs[0].label()]  # fmt: skip
    if len(steps) > 1 and len(same) > 1:
        raise ValueError(
            f"steps {', '.join(map(str, same))} all sample this run as {configs[0].label()}: its design "
            "is sampled with a fixed number of calls; give one"
        )
    exp.model.load_state_dict(ckpt["ema"]["module"])
    exp.model.to(exp.device)
    extractor = StandardInception(fid_weights, device=exp.device) if fid_weights is not None else None
    entries: list[EvaluationEntry] = []
    scored = n if extractor is None else min(n, CLASSIFIER_SAMPLES)  # what the classifier space sees
    own = reusable(folder.read_metrics(), scored, int(ckpt["step"]))
    labels = sample_labels(exp, configs[0], scored)  # balanced: the same for every setting
    for cfg in configs:
        reuse = entries[0] if entries else own  # the reference rows and NLL bound do not change
        if extractor is None:
            samples, seconds = generate(exp, exp.model, cfg, n, seed=seed, progress=progress)
            scores = evaluate(exp, exp.model, samples, progress=progress, reuse=reuse, labels=labels)
            images_per_s = n / seconds
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
            scores = evaluate(exp, exp.model, samples, progress=progress, reuse=reuse, labels=labels)
            scores = replace(scores, **standard)
            images_per_s = fs.made / fs.seconds if fs.made else None
        drawn = EvalSample(
            cfg.method, cfg.steps, cfg.eta, n, seed, images_per_s, sampler_calls(cfg, exp.diffusion),
            **guidance_fields(cfg, exp), **stepping_fields(cfg),
        )  # fmt: skip
        error = measure_solver_error(exp, cfg, folder, seed, int(ckpt["step"]), n) if solver_error else None
        entry = EvaluationEntry(**scores.evaluation_fields(), sample=drawn, solver_error=error)
        folder.add_evaluation(entry)
        entries.append(entry)
    return entries


def measure_solver_error(
    exp: Experiment, cfg: SampleConfig, folder: RunFolder, seed: int, step: int, n: int
) -> dict | None:
    """The sampling's RMS distance to the reference solution from the same noises (None for a stochastic
    sampler). The reference's images are made once per run, checkpoint, seed, count and conditioning and
    kept under ``samples/``, so every sampler of a study is measured against the same ones."""
    if not has_solver_error(cfg):
        return None
    count = min(n, REFERENCE_IMAGES)
    solver = REFERENCE.on(exp.diffusion.num_timesteps)
    x_T = reference_noise(count, tuple(exp.data.image_shape), seed)
    reference_cfg = replace(cfg, **solver.settings(), eta=0.0, batch_size=min(cfg.batch_size, count))
    images, _ = generate(exp, exp.model, replace(cfg, batch_size=reference_cfg.batch_size), count,
                         seed=seed, progress=False, x_T=x_T)  # fmt: skip
    conditioning = f"-cfg{cfg.guidance_scale:g}" if cfg.guided else ""
    conditioning += "-interval{:g}-{:g}".format(*cfg.guidance_interval) if cfg.guidance_interval else ""
    conditioning += f"-class{cfg.class_label}" if cfg.class_label is not None else ""
    path = folder.extra_samples / (
        f"reference-{solver.method}{solver.steps}-{solver.grid}-n{count}-seed{seed}-step{step}{conditioning}.pt"
    )
    if path.is_file():
        reference = load_tensors(path)["images"]
    else:
        reference, _ = generate(exp, exp.model, reference_cfg, count, seed=seed, progress=False, x_T=x_T)
        folder.extra_samples.mkdir(exist_ok=True)
        torch_save_atomic(path, {"images": reference, "reference": solver.describe()})
    return {"rms": solver_rms(images, reference), "reference": solver.describe(), "images": count}
