"""One training step of consistency distillation (``consistency-distilled`` with a Heun teacher: the
student's forward and backward, two teacher calls for the ODE step, one target-network forward, and the
target's EMA update) beside a plain ``unet`` training step and beside a step whose work is the same network
calls done by hand (the ``unet`` step and three forward calls of the same network, without gradients).

CD's median should match the hand-made step's: its step costs its network calls and nothing measurable
beyond them (the grid lookup, the Heun arithmetic, the pseudo-Huber distance, the target's EMA).
``extra_info`` records each step's network calls and, on the CD case, its ratio to the other two medians
(``ratio_to_hand``, ``ratio_to_unet``) when they ran first in the same session.
"""

from __future__ import annotations

import copy

import pytest
import torch

import denoisers
import schedules
from bench.config import ConsistencyConfig, RunConfig, TrainConfig
from bench.environment import configure_allocator, device_name
from bench.evaluation.throughput import forward_flops_per_image
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.training.objectives import declaration
from bench.training.objectives.consistency import ConsistencyObjective
from bench.training.trainer import Trainer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# (preset, image shape, batch on CPU, batch on GPU), as tests/benchmarks/test_steps.py runs the unet
PRESETS = [
    ("small", (1, 28, 28), 64, 256),
    ("ddpm-cifar10", (3, 32, 32), 8, 128),
]
CASES = ["unet", "hand", "consistency-distilled"]  # in this order: CD's ratios need the other two first
# network work per training image: forward+backward passes and forward-only passes
CALLS = {"unet": (1, 0), "hand": (1, 3), "consistency-distilled": (1, 3)}
MEDIANS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def allocator_as_bench_run():
    configure_allocator(DEVICE, True)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def network(name: str, shape, preset: str) -> torch.nn.Module:
    return denoisers.get(name)(shape, preset=preset).to(DEVICE, memory_format=torch.channels_last)


def trainer_for(net: torch.nn.Module, diffusion: Diffusion, images, batch: int, objective=None) -> Trainer:
    return Trainer(
        net,
        diffusion,
        images,
        TrainConfig(batch_size=batch),
        net.recipe,
        device=DEVICE,
        seed=0,
        objective=objective,
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("preset", "shape", "cpu_batch", "gpu_batch"), PRESETS, ids=[p[0] for p in PRESETS])
def test_consistency_distillation_step(benchmark, preset, shape, cpu_batch, gpu_batch, case):
    benchmark.group = f"consistency-step:{preset}"
    batch = gpu_batch if CUDA else cpu_batch
    torch.manual_seed(0)
    images = torch.rand(batch * 4, *shape) * 2 - 1
    diffusion = Diffusion(schedules.get("linear")(1000))
    if case == "consistency-distilled":
        teacher_net = network("unet", shape, preset).eval().requires_grad_(False)
        student = network("consistency-distilled", shape, preset)
        student.load_state_dict(teacher_net.state_dict())  # the paper's start (--student-init teacher)
        objective = ConsistencyObjective(
            "consistency-distillation",
            ConsistencyConfig(teacher_solver="heun"),
            diffusion,
            total_steps=1000,
            image_shape=shape,
            teacher=Denoiser.of(teacher_net, diffusion),
        )
        trainer = trainer_for(student, diffusion, images, batch, objective)
        assert declaration("consistency-distillation").cost(RunConfig()).teacher_calls == 2
    else:
        trainer = trainer_for(network("unet", shape, preset), diffusion, images, batch)
    x0 = trainer.images[:batch]
    forward_only = copy.deepcopy(trainer.model).eval().requires_grad_(False)
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def step():
        trainer.train_step(x0)
        if case == "hand":  # the CD step's three extra calls (two teacher, one target), by hand
            with torch.no_grad():
                for _ in range(3):
                    forward_only(x0, t)
        sync()

    step()  # allocation and kernel selection happen outside the timing
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)

    median = benchmark.stats.stats.median
    MEDIANS[(preset, case)] = median
    forward_backward, forwards = CALLS[case]
    benchmark.extra_info.update(
        {
            "forward_flops_per_image": forward_flops_per_image(trainer.model, shape, DEVICE),
            "batch": batch,
            "image_shape": list(shape),
            "device": device_name(DEVICE),
            "threads": torch.get_num_threads(),
            "forward_backward_passes": forward_backward,
            "forward_passes": forwards,
            "images_per_s": batch / median if median else None,
        }
    )
    if case == "consistency-distilled":
        for other in ("hand", "unet"):
            if (preset, other) in MEDIANS:
                benchmark.extra_info[f"ratio_to_{other}"] = median / MEDIANS[(preset, other)]
