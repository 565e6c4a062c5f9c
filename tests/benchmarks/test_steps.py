"""One training step (the shared trainer's: forward, backward, clipping, AdamW, EMA) and one sampler step
for every denoiser plugin, at a small CPU preset and a paper-sized one, on CUDA when available, as `bench run`
runs them: weights in channels-last, the fused GroupNorm kernel on CPU, glibc's raised mmap threshold.

``extra_info`` records the forward FLOPs per image (torch.utils.flop_counter), the batch, the device and the
images/s implied by the median; ``bench compare`` reads the JSON these write.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import denoisers
import schedules
from bench.config import TrainConfig
from bench.environment import configure_allocator, device_name
from bench.evaluation.throughput import forward_flops_per_image
from bench.process.denoiser import Denoiser, Guidance
from bench.process.diffusion import Diffusion
from bench.process.sampling import network_calls, sample
from bench.training.trainer import Trainer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# (denoiser, preset, image shape, batch on CPU, batch on GPU)
CASES = [
    ("unet", "small", (1, 28, 28), 64, 256),
    ("unet", "ddpm-cifar10", (3, 32, 32), 8, 128),
    ("direct", "small", (1, 28, 28), 64, 256),
    ("direct", "ddpm-cifar10", (3, 32, 32), 8, 128),
    ("transformer", "small", (1, 28, 28), 64, 256),
    ("transformer", "DiT-S/2", (4, 32, 32), 8, 128),
]
IDS = [f"{d}-{p}" for d, p, *_ in CASES]


@pytest.fixture(scope="module", autouse=True)
def allocator_as_bench_run():
    configure_allocator(DEVICE, True)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def record(benchmark, net, shape, batch) -> None:
    benchmark.extra_info.update(
        {
            "forward_flops_per_image": forward_flops_per_image(net, shape, DEVICE),
            "batch": batch,
            "image_shape": list(shape),
            "device": device_name(DEVICE),
            "threads": torch.get_num_threads(),
        }
    )


def images_per_s(benchmark, batch) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = batch / median if median else None


@pytest.mark.parametrize(("name", "preset", "shape", "cpu_batch", "gpu_batch"), CASES, ids=IDS)
def test_train_step(benchmark, name, preset, shape, cpu_batch, gpu_batch):
    benchmark.group = f"train-step:{name}"
    batch = gpu_batch if CUDA else cpu_batch
    torch.manual_seed(0)
    net = denoisers.get(name)(shape, preset=preset).to(memory_format=torch.channels_last)
    images = torch.rand(batch * 4, *shape) * 2 - 1
    trainer = Trainer(
        net,
        Diffusion(schedules.get("linear")(1000)),
        images,
        TrainConfig(batch_size=batch),
        net.recipe,
        device=DEVICE,
        seed=0,
    )
    record(benchmark, trainer.model, shape, batch)
    x0 = trainer.images[:batch]

    def step():
        trainer.train_step(x0)
        sync()

    step()  # allocation and kernel selection happen outside the timing
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    images_per_s(benchmark, batch)


@pytest.mark.parametrize(("name", "preset", "shape", "cpu_batch", "gpu_batch"), CASES, ids=IDS)
def test_sampler_step(benchmark, name, preset, shape, cpu_batch, gpu_batch):
    benchmark.group = f"sampler-step:{name}"
    batch = gpu_batch if CUDA else cpu_batch
    torch.manual_seed(0)
    net = denoisers.get(name)(shape, preset=preset).to(DEVICE, memory_format=torch.channels_last).eval()
    diffusion = Diffusion(schedules.get("linear")(1000))
    method = net.recipe.sampler if net.recipe.timesteps == "terminal" else "ddim"
    record(benchmark, net, shape, batch)

    def step():
        sample(Denoiser.of(net, diffusion), (batch, *shape), method=method, steps=1, device=DEVICE)
        sync()

    step()
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    images_per_s(benchmark, batch)


CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
SOLVERS = [
    ("ddim", {"eta": 0.0}),
    ("euler", {}),
    ("heun", {}),
    ("dpmpp-2m", {}),
    # the same solvers on real-valued grids, and with EDM's churn (fresh noise, no extra call)
    ("ddim", {"eta": 0.0, "grid": "log-snr"}),
    ("dpmpp-2m", {"grid": "log-snr"}),
    ("heun", {"grid": "karras"}),
    ("heun", {"grid": "karras", **CHURN}),
    ("euler", {"grid": "karras", **CHURN}),
]
SOLVER_IDS = [
    "-".join([m, *(str(o.get(k)) for k in ("grid",) if k in o), *(["churn"] if "s_churn" in o else [])])
    for m, o in SOLVERS
]


@pytest.mark.parametrize(("method", "settings"), SOLVERS, ids=SOLVER_IDS)
def test_solver_cost_per_network_call(benchmark, method, settings):
    """Ten steps of each ODE solver on the small U-Net: the solvers' own arithmetic, the grid's real-valued
    timesteps and EDM's churn should cost nothing measurable beside the network, so time per network call
    (extra_info) should match DDIM's on the uniform grid."""
    benchmark.group = "solver:unet-small"
    shape, batch, steps = (1, 28, 28), (256 if CUDA else 64), 10
    torch.manual_seed(0)
    net = denoisers.get("unet")(shape, preset="small").to(DEVICE, memory_format=torch.channels_last).eval()
    denoiser = Denoiser.of(net, Diffusion(schedules.get("linear")(1000)))
    record(benchmark, net, shape, batch)
    calls = network_calls(method, steps)

    def run():
        sample(denoiser, (batch, *shape), method=method, steps=steps, device=DEVICE, **settings)
        sync()

    run()
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"nfe": calls, "ms_per_call": 1e3 * median / calls})
    images_per_s(benchmark, batch)


@pytest.mark.parametrize(("method", "settings"), SOLVERS, ids=SOLVER_IDS)
def test_solver_overhead_without_the_network(benchmark, method, settings):
    """The same ten steps with a network that costs nothing (it returns zeros): what the solver, its grid and
    its churn cost on their own, per network call, to set beside a network call's time above. On a busy
    machine this is the figure that stays readable: it is milliseconds where a U-Net call is 100 times
    more."""
    benchmark.group = "solver-overhead:1x28x28"
    shape, batch, steps = (1, 28, 28), (256 if CUDA else 64), 10
    denoiser = Denoiser(lambda x, t: torch.zeros_like(x), Diffusion(schedules.get("linear")(1000)))
    calls = network_calls(method, steps)

    def run():
        generator = torch.Generator().manual_seed(0)
        sample(denoiser, (batch, *shape), method=method, steps=steps, device=DEVICE, generator=generator,
               **settings)  # fmt: skip
        sync()

    run()
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    benchmark.extra_info.update({"nfe": calls, "ms_per_call": 1e3 * benchmark.stats.stats.median / calls})


# (id, guidance, network batches of B per call): the step's t = T-1 has sigma ~ 157, outside (0, 1]
GUIDANCE = [
    ("unguided", Guidance(1.0), 1),
    ("guided", Guidance(2.0), 2),
    ("outside-interval", Guidance(2.0, (0.0, 1.0)), 1),
]


@pytest.mark.parametrize(("guidance", "batches"), [g[1:] for g in GUIDANCE], ids=[g[0] for g in GUIDANCE])
def test_guidance_step(benchmark, guidance, batches):
    """One sampler step of the small class-conditional U-Net at batch B: plain conditional (scale 1), guided
    (scale 2: one network batch of 2B) and guided only inside an interval that excludes the step's sigma (one
    batch of B). Side by side, the guided median should be about twice the other two, which should match:
    guidance costs nothing where the interval turns it off."""
    benchmark.group = "guidance-step:unet-small"
    shape, batch = (1, 28, 28), (256 if CUDA else 64)
    torch.manual_seed(0)
    net = denoisers.get("unet")(shape, num_classes=10).to(DEVICE, memory_format=torch.channels_last).eval()
    labels = torch.arange(batch, device=DEVICE) % 10
    denoiser = replace(
        Denoiser.of(net, Diffusion(schedules.get("linear")(1000))), labels=labels, guidance=guidance
    )
    record(benchmark, net, shape, batch)
    seen: list[int] = []
    hook = net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))

    def step():
        sample(denoiser, (batch, *shape), method="ddim", steps=1, device=DEVICE)
        sync()

    step()  # allocation and kernel selection happen outside the timing; and the batch is checked
    hook.remove()
    assert seen == [batches * batch], f"expected one network call of {batches * batch} images, got {seen}"
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(
        {"network_batch": batches * batch, "guidance_scale": guidance.scale, "interval": guidance.interval}
    )
    images_per_s(benchmark, batch)
