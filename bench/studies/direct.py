"""``bench study direct``: the seed's question, "why not train a denoiser that predicts the image directly
from pure noise?", answered with four runs that share the backbone, schedule, data and budget:

  unet (eps)         the DDPM design: predict the noise at every t, sample iteratively;
  unet (x0)          the same network predicting the image at every t, sampled iteratively;
  direct             the same network predicting the image from pure noise only, sampled in one call, trained
                     on independent (noise, image) pairs;
  direct-distilled   the same again, trained on coupled pairs: each image is what the unet (eps) run, as a
                     teacher, makes of that very noise with deterministic DDIM (Luhman & Luhman 2021);

and the teacher itself sampled with 1, 2, 4, 8 and 50 deterministic DDIM steps (what few-step sampling
gives without distillation), a figure of the teacher's, the distilled student's and direct's image of the
same noises,

and a curve that needs no training: how much of x0 can be recovered from x_t at all. For the empirical
training distribution the best possible (MSE-optimal) predictor is exact,

    E[x0 | x_t] = sum_i w_i x_i,  w = softmax_i(-||x_t - sqrt(alpha_bar) x_i||^2 / (2 (1 - alpha_bar))),

so its error on held-out images at each t bounds what any network can do from x_t alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import schedules  # noqa: E402

from ..config import RunConfig  # noqa: E402
from ..images import grid_image  # noqa: E402
from ..io import write_text_atomic  # noqa: E402
from ..process.denoiser import Denoiser  # noqa: E402
from ..process.diffusion import Diffusion  # noqa: E402
from ..process.sampling import sample  # noqa: E402
from ..reports.compare_report import save_figure  # noqa: E402
from .runner import Study, run_study  # noqa: E402

DESIGNS = {
    "unet-eps": ("unet", {}),
    "unet-x0": ("unet", {"target": "x0"}),
    "direct": ("direct", {}),
    "direct-distilled": ("direct-distilled", {}),
}
TEACHER = "unet-eps"
TEACHER_STEPS = (1, 2, 4, 8, 50)
FIGURE_NOISES = 8


@torch.inference_mode()
def recoverability(
    train: torch.Tensor,
    test: torch.Tensor,
    diffusion: Diffusion,
    timesteps: list[int],
    *,
    seed: int = 0,
    chunk: int = 50,
) -> pd.DataFrame:
    """Per t: SNR, the MSE of the exact posterior mean E[x0 | x_t] under the empirical training distribution,
    and the MSE of always answering the mean image, both on held-out images (per pixel)."""
    g = torch.Generator().manual_seed(seed)
    xs = train.flatten(1).double()  # (N, D)
    x0 = test.flatten(1).double()  # (M, D)
    mean_mse = (x0 - xs.mean(0)).pow(2).mean().item()
    sq_norms = xs.pow(2).sum(1)  # (N,)
    rows = []
    for t in timesteps:
        a, b2 = diffusion.sqrt_alpha_bar[t].item(), 1 - diffusion.alpha_bar[t].item()
        x_t = a * x0 + b2**0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        errs = []
        for i in range(0, x_t.shape[0], chunk):
            q = x_t[i : i + chunk]
            # -||q - a x_i||^2 / (2 b2), dropping the term in ||q||^2 that the softmax cancels
            logits = (2 * a * q @ xs.T - a * a * sq_norms) / (2 * b2)
            estimate = torch.softmax(logits, dim=1) @ xs
            errs.append((estimate - x0[i : i + chunk]).pow(2).mean(1))
        rows.append(
            {
                "t": t,
                "snr": a * a / b2,
                "mse_optimal": torch.cat(errs).mean().item(),
                "mse_mean_image": mean_mse,
            }
        )
    return pd.DataFrame(rows)


def plot_recoverability(curves: dict[str, pd.DataFrame], path: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, df in curves.items():
        ax1.plot(df["t"], df["mse_optimal"], label=f"best possible E[x0|x_t] ({name})")
        ax2.plot(df["t"], df["snr"], label=name)
    first = next(iter(curves.values()))
    ax1.axhline(first["mse_mean_image"].iloc[0], color="k", ls="--", lw=1, label="always the mean image")
    ax1.set_xlabel("timestep t (0-based)")
    ax1.set_ylabel("MSE per pixel on held-out images")
    ax1.set_title("How much of x0 is recoverable from x_t")
    ax1.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xlabel("timestep t (0-based)")
    ax2.set_ylabel("SNR = alpha_bar / (1 - alpha_bar)")
    ax2.set_title("Signal-to-noise ratio of x_t")
    ax2.legend(fontsize=7)
    return save_figure(fig, path)


def study_configs(base: RunConfig, out: Path = Path("results/study-direct")) -> dict[str, RunConfig]:
    """The designs with everything else (data, schedule, budget, seed, sampler steps) shared; the distilled
    one learns from ``out/<TEACHER>`` with as many DDIM steps as the runs are sampled with."""
    distill = replace(base.distill, teacher=str(out / TEACHER), teacher_steps=TEACHER_STEPS[-1])
    return {
        name: replace(
            base,
            denoiser=denoiser,
            denoiser_options={**base.denoiser_options, **options},
            distill=distill if denoiser == "direct-distilled" else base.distill,
        )
        for name, (denoiser, options) in DESIGNS.items()
    }


def evaluate_teacher(teacher_dir: Path, base: RunConfig, *, progress: bool) -> None:
    """Score the teacher with each of TEACHER_STEPS deterministic DDIM steps, skipping those it has."""
    from ..runs.resample import evaluate_run
    from ..runs.run_folder import RunFolder

    n, seed = base.sample.n, base.seed
    done = {
        e.sample.steps
        for e in RunFolder(teacher_dir).read_metrics().evaluations
        if (e.sample.method, e.sample.eta, e.sample.n, e.sample.seed) == ("ddim", 0.0, n, seed)
    }
    missing = [steps for steps in TEACHER_STEPS if steps not in done]
    if missing:
        evaluate_run(
            teacher_dir,
            n=n,
            method="ddim",
            steps=missing,
            eta=0.0,
            seed=seed,
            device=base.device,
            progress=progress,
        )


def distillation_figure(out: Path, base: RunConfig, path: Path) -> Path:
    """For a few fixed noises: the teacher's deterministic DDIM image, the distilled student's one call, and
    direct's one call (random pairs), one row each."""
    from ..runs.experiment import load_run
    from ..training.pairs import noise

    rows = {}
    for label, name, method, steps in (
        (f"teacher ({TEACHER}), DDIM {TEACHER_STEPS[-1]}, eta 0", TEACHER, "ddim", TEACHER_STEPS[-1]),
        ("direct-distilled, one call", "direct-distilled", "one_shot", 1),
        ("direct (random pairs), one call", "direct", "one_shot", 1),
    ):
        exp, ckpt = load_run(out / name, device=base.device)
        exp.model.load_state_dict(ckpt["ema"]["module"])
        model = exp.model.to(exp.device).eval()
        x_T = noise(base.seed, 0, FIGURE_NOISES, exp.data.image_shape, held_out=True)
        denoiser = Denoiser.of(model, exp.diffusion, exp.recipe, clip_x0=True)
        x = sample(denoiser, tuple(x_T.shape), method=method, steps=steps, x_T=x_T, device=exp.device)
        rows[label] = x.float().cpu().clamp(-1, 1)
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.2 * FIGURE_NOISES, 1.6 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items(), strict=True):
        ax.imshow(grid_image(images, scale=4, nrow=FIGURE_NOISES), cmap="gray")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle("The same noises x_T, mapped to images", fontsize=10)
    return save_figure(fig, path)


def run_direct_study(base: RunConfig, out: Path, *, progress: bool = True, jobs: int = 1) -> list[Path]:
    """Train (or resume, or skip when complete) the designs into ``out/<design>``, score the teacher at few
    steps, then write the comparison, the distillation figure and the recoverability curves into
    ``out/report``."""
    study = Study(
        designs=list(study_configs(base, out).items()),
        finish=lambda out, progress: evaluate_teacher(out / TEACHER, base, progress=progress),
        figures=lambda report: [
            distillation_figure(out, base, report / "distillation.png"),
            *recoverability_report(base, report),
        ],
    )
    return run_study(study, out, progress=progress, jobs=jobs)


def recoverability_report(base: RunConfig, report_dir: Path) -> list[Path]:
    """The recoverability curves on the linear and the cosine schedule, as a CSV and a figure."""
    from .. import datasets

    written = []
    data = datasets.load(base.dataset, root=base.data_root, image_size=base.image_size)
    curves = {}
    for schedule in ("linear", "cosine"):
        diffusion = Diffusion(schedules.make(schedule, base.diffusion.timesteps))
        ts = sorted({int(t) for t in torch.linspace(0, base.diffusion.timesteps - 1, 40).round().tolist()})
        curves[schedule] = recoverability(data.train_images, data.test_images[:200], diffusion, ts)
    csv = pd.concat([df.assign(schedule=name) for name, df in curves.items()])
    written.append(write_text_atomic(report_dir / "recoverability.csv", csv.to_csv(index=False)))
    written.append(plot_recoverability(curves, report_dir / "recoverability.png"))
    return written
