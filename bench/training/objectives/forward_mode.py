"""Forward-mode differentiation of the project's networks, shared by the objectives whose target holds a
total derivative along a path: MeanFlow's du/dt (:mod:`.flow_map`) and sCT's dF/dt (:mod:`.continuous`).

Forward-mode AD is not implemented for PyTorch's fused attention kernels nor for the fused CPU GroupNorm, so
a JVP runs with SDPA's math kernel (``sdpa_kernel(MATH)``, which timm's attention uses too), PyTorch's
GroupNorm and float32 (:func:`differentiable_forward`). Each objective runs it on the bare model (the
trainer's ``bind``), without gradients: under DistributedDataParallel a forward-mode pass through the
wrapper would not take part in its gradient sync, so only the student's own forward, which the loss
differentiates, goes through the wrapper.

What a JVP costs is measured, not assumed: :func:`jvp_forwards` counts its FLOPs against a forward's with
PyTorch's FlopCounterMode on the run's own network, and :func:`check_jvp` tries one before anything is
trained, so that a network the JVP cannot run through is refused with what to do instead.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from denoisers.kernels.group_norm import GroupNorm

from ...config import RunConfig
from .base import StepCost

JVP_FORWARDS = 3
"""A JVP's FLOPs in forwards of the network, as PyTorch's FlopCounterMode counts them (3.0 for both
backbones and presets): what ``bench list`` shows. A run records the count measured on its own network
(:func:`jvp_forwards`)."""

Probe = Callable[[nn.Module, torch.Tensor], tuple[Callable[[], object], Callable[[], object]]]
"""An objective's look at a network: given the model and a batch of zero images on its device, the two
calls to compare, (one forward as the objective makes it, the JVP the objective takes)."""


@contextlib.contextmanager
def differentiable_forward(model: nn.Module) -> Iterator[None]:
    """Run ``model`` so that forward-mode AD works: SDPA's math kernel, PyTorch's GroupNorm, float32."""
    norms = [m for m in model.modules() if isinstance(m, GroupNorm)]
    fused = [m.fused for m in norms]
    for m in norms:
        m.fused = False
    try:
        with sdpa_kernel([SDPBackend.MATH]), torch.autocast(_device_type(model), enabled=False):
            yield
    finally:
        for m, was in zip(norms, fused, strict=True):
            m.fused = was


def _device_type(model: nn.Module) -> str:
    parameter = next(model.parameters(), None)
    return parameter.device.type if parameter is not None else "cpu"


def jvp(function: Callable, primals: tuple, tangents: tuple) -> torch.Tensor:
    """The derivative of ``function`` at ``primals`` in the direction ``tangents`` (``torch.func.jvp``)."""
    with warnings.catch_warnings():  # PyTorch's first JVP loads its decompositions with torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        return torch.func.jvp(function, primals, tangents)[1]


@contextlib.contextmanager
def probing(model: nn.Module, image_shape: tuple[int, ...], *, batch: int) -> Iterator[torch.Tensor]:
    """Zero images for a look at the network before training: in eval mode, without gradients, as the JVP
    runs it, its random numbers drawn on a fork of the RNG so that the run's own draws are untouched."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    forks = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=forks), torch.no_grad(), differentiable_forward(model):
            yield torch.zeros(batch, *image_shape, device=device)
    finally:
        model.train(was_training)


def jvp_forwards(model: nn.Module, image_shape: tuple[int, ...], probe: Probe, batch: int = 2) -> float:
    """FLOPs of the objective's JVP over FLOPs of one of its forwards, both counted by PyTorch's
    FlopCounterMode on a probe batch of the run's network."""
    with probing(model, image_shape, batch=batch) as z:
        forward, derivative = probe(model, z)
        with FlopCounterMode(display=False) as forward_count:
            forward()
        with FlopCounterMode(display=False) as jvp_count:
            derivative()
    return jvp_count.get_total_flops() / forward_count.get_total_flops()


def check_jvp(model: nn.Module, image_shape: tuple[int, ...], probe: Probe, name: str) -> None:
    """Refuse ``--derivative jvp`` for a network that forward-mode AD cannot run through (an operation
    without a forward derivative, such as a custom autograd.Function without ``jvp``), before anything is
    trained or written: one JVP of one image."""
    try:
        with probing(model, image_shape, batch=1) as z:
            probe(model, z)[1]()
    except (RuntimeError, NotImplementedError) as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise ValueError(
            f"{name}'s --derivative jvp cannot run through this network ({reason}); use --derivative "
            "finite-difference, which takes the derivative from two more forwards"
        ) from None


def derivative_cost(config: RunConfig) -> StepCost:
    """A derivative's forwards on every example by ``--derivative``: a JVP (:data:`JVP_FORWARDS`) or the
    finite difference's two."""
    return StepCost(extra_forwards=JVP_FORWARDS if config.flow_map.derivative == "jvp" else 2)


def measured_derivative_cost(
    config: RunConfig, model: nn.Module, image_shape: tuple[int, ...], probe: Probe
) -> StepCost:
    """The same, the JVP's counted on the run's own network (:func:`jvp_forwards`)."""
    if config.flow_map.derivative != "jvp":
        return derivative_cost(config)
    return StepCost(extra_forwards=jvp_forwards(model, image_shape, probe))
