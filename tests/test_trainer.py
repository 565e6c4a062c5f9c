import math

import pytest
import torch

import schedules
from bench.config import TrainConfig
from bench.process.diffusion import Diffusion
from bench.training.ema import EMA
from bench.training.noise_levels import lognormal_timesteps, sample_timesteps
from bench.training.trainer import NonFiniteLossError, Trainer
from denoisers import Recipe
from tests.helpers import TinyDenoiser, make_trainer, toy_images

CPU = torch.device("cpu")


def test_training_reduces_the_loss():
    trainer = make_trainer(60)
    log = trainer.run(progress=False)
    assert log.stop_reason == "steps" and trainer.step == 60
    assert log.intervals[-1]["loss"] < log.intervals[0]["loss"]
    assert log.images_per_second and log.images_per_second > 0


def test_resume_is_exact():
    """N steps, save, load into a fresh trainer, N more == 2N straight (same weights, EMA and optimizer)."""
    straight = make_trainer(20)
    straight.run(progress=False)

    first = make_trainer(10)
    first.run(progress=False)
    state = first.state_dict()
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    resumed = make_trainer(20, seed=0)
    resumed.load_state_dict(state)
    resumed.run(progress=False)

    assert resumed.step == straight.step == 20
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        straight.ema.module.state_dict().values(), resumed.ema.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_checkpoint_callback_runs_every_interval():
    seen = []
    make_trainer(15).run(progress=False, on_checkpoint=lambda tr: seen.append(tr.step))
    assert seen == [5, 10, 15]


def test_nan_loss_stops_with_a_clear_error_before_checkpointing():
    trainer = make_trainer(50)
    saved = []

    def poison(tr):
        saved.append(tr.step)
        with torch.no_grad():
            next(tr.model.parameters()).fill_(math.nan)

    with pytest.raises(NonFiniteLossError, match="loss became nan between steps 6 and 10"):
        trainer.run(progress=False, on_checkpoint=poison)
    assert saved == [5]  # no checkpoint after the loss went bad


def test_minutes_budget_stops_training():
    trainer = make_trainer(10_000, minutes=0.02)
    log = trainer.run(progress=False)
    assert log.stop_reason == "minutes" and trainer.step < 10_000


def test_batches_cover_each_epoch_once():
    trainer = make_trainer(1)
    n, b = trainer.images.shape[0], trainer.config.batch_size
    epoch = torch.cat([trainer.batch_indices(s) for s in range(n // b)])
    assert sorted(epoch.tolist()) == list(range(n))
    assert torch.equal(trainer.batch_indices(3), make_trainer(1).batch_indices(3))


def test_timesteps_follow_the_recipe():
    g = torch.Generator().manual_seed(0)
    t_all = sample_timesteps(Recipe(timesteps="all"), 50, 4000, g, CPU)
    assert t_all.min() == 0 and t_all.max() == 49
    t_term = sample_timesteps(
        Recipe(prediction="x0", timesteps="terminal", sampler="one_shot"), 50, 8, g, CPU
    )
    assert t_term.tolist() == [49] * 8


def test_lognormal_noise_levels_are_edms_distribution():
    """ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022), as real-valued timesteps: mapped back through the
    schedule's interpolated sigma, the quartiles are those of the normal, and only the tails beyond the
    schedule's range [sigma_0, sigma_{T-1}] are clamped to its ends."""
    diffusion = Diffusion(schedules.get("linear")(1000))
    g = torch.Generator().manual_seed(0)
    t = lognormal_timesteps(diffusion, 40_000, g, CPU, p_mean=-1.2, p_std=1.2)
    assert t.is_floating_point() and t.min() >= 0 and t.max() <= 999
    log_sigma = diffusion.t_to_sigma(t).log()
    quartiles = torch.quantile(log_sigma, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    normal = [-1.2 - 0.6745 * 1.2, -1.2, -1.2 + 0.6745 * 1.2]  # N(-1.2, 1.2^2)'s quartiles
    assert quartiles.tolist() == pytest.approx(normal, abs=0.03)
    # all draws below sigma_0 = sqrt(beta_0 / (1 - beta_0)), beta_0 = 1e-4, land on t = 0: P = Phi(-2.84)
    z = (0.5 * math.log(1e-4 / (1 - 1e-4)) + 1.2) / 1.2
    assert (t == 0).double().mean().item() == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))), abs=0.001)


def test_a_lognormal_weighted_edm_design_trains_and_resumes_exactly():
    def trained(steps, resume_from=None):
        torch.manual_seed(0)
        model = TinyDenoiser(recipe=Recipe(prediction="edm"))
        config = TrainConfig(
            steps=steps, batch_size=16, log_every=5, checkpoint_every=5, warmup_steps=3,
            loss_weight="min-snr", noise_levels="lognormal",
        )  # fmt: skip
        diffusion = Diffusion(schedules.get("linear")(100))
        trainer = Trainer(model, diffusion, toy_images(), config, model.recipe, device=CPU, seed=0)
        if resume_from is not None:
            trainer.load_state_dict(resume_from)
        log = trainer.run(progress=False)
        return trainer, log

    full, log = trained(20)
    assert all(math.isfinite(row["loss"]) for row in log.intervals)
    half, _ = trained(10)
    resumed, _ = trained(20, resume_from=half.state_dict())
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("recipe", "zero_terminal_snr", "cfg", "match"),
    [
        (Recipe(prediction="x0", timesteps="terminal", sampler="one_shot"), False,
         {"noise_levels": "lognormal"}, "trains at t = T-1 only"),
        (Recipe(prediction="x0", timesteps="terminal", sampler="one_shot"), False,
         {"loss_weight": "min-snr"}, "trains at t = T-1 only"),
        (Recipe(prediction="eps"), True, {"loss_weight": "edm"}, "infinite where SNR = 0"),
    ],
)  # fmt: skip
def test_a_weighting_that_means_nothing_for_the_design_is_refused(recipe, zero_terminal_snr, cfg, match):
    diffusion = Diffusion(schedules.make("linear", 100, zero_terminal_snr=zero_terminal_snr))
    model, config = TinyDenoiser(recipe=recipe), TrainConfig(**cfg)
    with pytest.raises(ValueError, match=match):
        Trainer(model, diffusion, toy_images(), config, recipe, device=CPU, seed=0)


def test_ema_follows_the_warmup_rule():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # decay = min(0.9, 2/11)
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(100):
        ema.update()
    assert ema.module.weight.item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"batch_size": -1}, "batch_size"),
        ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"minutes": -1.0}, "minutes"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bf16_autocast_trains_on_cpu():
    trainer = make_trainer(10, precision="bf16")
    log = trainer.run(progress=False)
    assert trainer.step == 10 and math.isfinite(log.intervals[-1]["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


def test_hflip_mirrors_about_half_the_images_and_resumes_exactly():
    from bench.training.trainer import random_hflip

    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3).repeat(500, 1, 1, 1)
    flipped = random_hflip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert ((flipped == images).flatten(1).all(1) | mirrored).all()  # each image kept or mirrored whole
    assert 400 < mirrored.sum() < 600
    straight = make_trainer(10, hflip=True)
    straight.run(progress=False)
    half = make_trainer(5, hflip=True)
    half.run(progress=False)
    state = half.state_dict()  # before the next trainer re-seeds the global RNG it records
    resumed = make_trainer(10, hflip=True)
    resumed.load_state_dict(state)
    resumed.run(progress=False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True)
    )
    plain = make_trainer(10)
    plain.run(progress=False)
    assert not all(
        torch.equal(a, b) for a, b in zip(straight.model.parameters(), plain.model.parameters(), strict=True)
    )
