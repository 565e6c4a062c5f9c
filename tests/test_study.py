from pathlib import Path

import pytest
import torch

import schedules
from bench.config import RunConfig
from bench.datasets import load
from bench.process.diffusion import Diffusion
from bench.studies.direct import recoverability, study_configs


def test_recoverability_goes_from_everything_to_nothing():
    data = load("digits")
    diffusion = Diffusion(schedules.get("linear")(1000))
    df = recoverability(data.train_images, data.test_images[:100], diffusion, [0, 300, 999])
    mse = df.set_index("t")["mse_optimal"]
    # At t = 0 the best guess is (nearly) the nearest training image; at T-1 nothing of x0 is left,
    # so the best possible predictor is the mean image.
    assert mse[0] < 0.35 * df["mse_mean_image"].iloc[0]
    assert mse[999] == pytest.approx(df["mse_mean_image"].iloc[0], rel=0.03)
    assert mse[0] < mse[300] < mse[999] * 1.01


def test_recoverability_at_both_ends_is_the_nearest_image_then_the_mean():
    """Two training images, all +1 and all -1, whose mean (0) is neither. At t = 0 (noise std 0.01) the
    posterior puts all its weight on the training image nearer x_t; at zero terminal SNR x_t says nothing,
    and the best guess is the mean image."""
    train = torch.tensor([1.0, -1.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    test = torch.tensor([0.5, -0.8, 1.0], dtype=torch.float64).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    diffusion = Diffusion(torch.tensor([1e-4, 0.5, 1.0], dtype=torch.float64))
    df = recoverability(train, test, diffusion, [0, 2]).set_index("t")
    nearest = (0.5**2 + 0.2**2 + 0.0) / 3  # to +1, -1 and +1
    mean = (0.5**2 + 0.8**2 + 1.0**2) / 3  # to 0
    assert df.loc[0, "mse_optimal"] == pytest.approx(nearest, rel=1e-12)
    assert df.loc[2, "mse_optimal"] == pytest.approx(mean, rel=1e-12)
    assert df["mse_mean_image"].tolist() == pytest.approx([mean, mean], rel=1e-12)
    assert df["snr"].tolist() == pytest.approx([(1 - 1e-4) / 1e-4, 0.0], rel=1e-9)


def test_study_shares_everything_but_the_design():
    configs = study_configs(RunConfig(seed=3), Path("out"))
    assert [c.denoiser for c in configs.values()] == ["unet", "unet", "direct", "direct-distilled"]
    assert configs["unet-x0"].denoiser_options == {"target": "x0"}
    assert configs["direct-distilled"].distill.teacher == str(Path("out") / "unet-eps")
    assert all(c.distill == RunConfig().distill for n, c in configs.items() if n != "direct-distilled")
    assert configs["direct-distilled"].distill.teacher_steps == configs["unet-eps"].sample.steps
    assert len({(c.train, c.diffusion, c.dataset, c.seed, c.sample) for c in configs.values()}) == 1


def test_study_command_sizes_and_lays_out_like_bench_run(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import bench.studies.direct
    from bench.cli import main

    bases = []
    def record(base, out, progress, jobs=1):
        bases.append(base)
        return []

    monkeypatch.setattr(bench.studies.direct, "run_direct_study", record)
    for extra in ([], ["--image-size", "28", "--no-channels-last"]):
        result = CliRunner().invoke(main, ["study", "direct", "--out", str(tmp_path), *extra])
        assert result.exit_code == 0, result.output
    assert [(b.image_size, b.channels_last) for b in bases] == [(14, True), (28, False)]
