"""One training step of each teacher-free one-call objective beside a plain flow-matching step on the same
network (the ``unet`` backbone with the second time, ``target=flow`` for the plain step; the consistency
designs' U-Net is the same without the second time's small embedding):

- ``flow``: flow matching, one forward and backward;
- ``meanflow-jvp``: MeanFlow with du/dt by ``torch.func.jvp`` (the math attention kernel and PyTorch's
  GroupNorm inside the JVP), then the student's forward and backward;
- ``meanflow-fd``: the same with two more forwards instead of the JVP;
- ``shortcut``: flow matching on 3/4 of the batch, two half-step forwards on the other 1/4;
- ``ect``: easy consistency tuning, the target's forward under stop-gradient (started from an EDM U-Net's
  weights);
- ``sct-jvp`` and ``sct-fd``: continuous-time consistency training, its tangent by ``torch.func.jvp``
  through the consistency wrapper, or by two more forwards.

The aim for MeanFlow is at most 2.5x a plain step. ``extra_info`` records each case's ratio to the plain
step's median when it ran first in the same session (``ratio_to_flow``), and the forwards each declares.
"""

from __future__ import annotations

import pytest
import torch

import denoisers
import schedules
from bench.config import FlowMapConfig, RunConfig, TrainConfig
from bench.environment import configure_allocator, device_name
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.training.objectives import ObjectiveContext, build_objective, declaration
from bench.training.trainer import Trainer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
PRESETS = [("small", (1, 28, 28), 64, 256), ("ddpm-cifar10", (3, 32, 32), 8, 128)]
CASES = {  # design, flow-map settings; the plain step first, for the ratios
    "flow": ("unet", {}),
    "meanflow-jvp": ("meanflow", {"derivative": "jvp"}),
    "meanflow-fd": ("meanflow", {"derivative": "finite-difference"}),
    "shortcut": ("shortcut", {}),
    "ect": ("ect", {}),
    "sct-jvp": ("sct", {"derivative": "jvp"}),
    "sct-fd": ("sct", {"derivative": "finite-difference"}),
}
MEDIANS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def allocator_as_bench_run():
    configure_allocator(DEVICE, True)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("preset", "shape", "cpu_batch", "gpu_batch"), PRESETS, ids=[p[0] for p in PRESETS])
def test_flow_map_step(benchmark, preset, shape, cpu_batch, gpu_batch, case):
    benchmark.group = f"flow-map-step:{preset}"
    batch = gpu_batch if CUDA else cpu_batch
    design, settings = CASES[case]
    torch.manual_seed(0)
    options = {"target": "flow", "second_time": True} if design == "unet" else {}
    net = denoisers.get(design)(shape, preset=preset, **options).to(DEVICE, memory_format=torch.channels_last)
    diffusion = Diffusion(schedules.get("rectified-flow")(1000))
    config = RunConfig(train=TrainConfig(batch_size=batch), flow_map=FlowMapConfig(**settings))
    teacher = None
    if declaration(net.recipe.objective).teacher is not None:  # ECT's initial weights: an EDM U-Net's
        teacher = Denoiser.of(denoisers.get("unet")(shape, preset=preset, target="edm").to(DEVICE), diffusion)
    context = ObjectiveContext(config, net.recipe, net, diffusion, shape, teacher=teacher)
    objective = build_objective(context)
    images = torch.rand(batch * 4, *shape) * 2 - 1
    trainer = Trainer(
        net, diffusion, images, config.train, net.recipe, device=DEVICE, seed=0, objective=objective
    )
    x0 = trainer.images[:batch]

    def step():
        trainer.train_step(x0)
        if CUDA:
            torch.cuda.synchronize()

    step()  # allocation, kernel selection and PyTorch's JVP decompositions outside the timing
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    median = benchmark.stats.stats.median
    MEDIANS[(preset, case)] = median
    benchmark.extra_info.update(
        {
            "batch": batch,
            "image_shape": list(shape),
            "device": device_name(DEVICE),
            "threads": torch.get_num_threads(),
            "declared_extra_forwards": declaration(net.recipe.objective).cost(config).extra_forwards,
            "images_per_s": batch / median if median else None,
        }
    )
    if case != "flow" and (preset, "flow") in MEDIANS:
        benchmark.extra_info["ratio_to_flow"] = median / MEDIANS[(preset, "flow")]
