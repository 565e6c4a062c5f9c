"""``bench study direct``: the seed's question, "why not train a denoiser that predicts the image directly
from pure noise?", answered with three runs that share the backbone, schedule, data and budget:

  unet (eps)       the DDPM design: predict the noise at every t, sample iteratively;
  unet (x0)        the same network predicting the image at every t, sampled iteratively;
  direct           the same network predicting the image from pure noise only, sampled in one call;

plus a curve that needs no training: how much of x0 can be recovered from x_t at all. For the empirical
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

from .compare_report import save_figure  # noqa: E402
from .config import RunConfig  # noqa: E402
from .diffusion import Diffusion  # noqa: E402
from .io import write_text_atomic  # noqa: E402

DESIGNS = {
    "unet-eps": ("unet", {}),
    "unet-x0": ("unet", {"target": "x0"}),
    "direct": ("direct", {}),
}


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


def study_configs(base: RunConfig) -> dict[str, RunConfig]:
    """The three designs with everything else (data, schedule, budget, seed, sampler steps) shared."""
    return {
        name: replace(base, denoiser=denoiser, denoiser_options={**base.denoiser_options, **options})
        for name, (denoiser, options) in DESIGNS.items()
    }


def run_direct_study(base: RunConfig, out: Path, *, progress: bool = True) -> list[Path]:
    """Train (or resume, or skip when complete) the three designs into ``out/<design>``, then write the
    comparison and the recoverability curves into ``out/report``."""
    from . import compare_report, datasets
    from .sweep import run_or_resume

    for name, config in study_configs(base).items():
        run_or_resume(config, out, name, progress=progress)

    report_dir = out / "report"
    written = compare_report.write_folder_report(out, report_dir, "fd")
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
