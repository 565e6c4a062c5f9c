"""``bench sample`` and ``bench eval``: a finished (or checkpointed) run sampled again, or sampled and
scored with other samplers and step counts, never touching the run's own files except to append to
``metrics.json``'s ``evaluations``."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

from .experiment import generate, load_run, resolve_sampler
from .images import save_grid, save_samples_npz
from .measure import evaluate
from .run_folder import EvalSample, EvaluationEntry, RunFolder


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
