"""The flow-map sampler: a network that learnt where the flow goes from any time t to any r <= t (a flow
map, :data:`bench.process.denoiser.FLOW_MAP`) jumps between the points of a grid, one call per jump, with
no error of its own: ``x_{t_{k+1}} = x_{t_k} - (t_k - t_{k+1}) u(x_{t_k}, t_{k+1}, t_k)`` in flow time,
on the rectified-flow path ``x = r x_t`` (:meth:`bench.process.denoiser.Denoiser.flow_variables`).

On the rectified-flow schedule the path is the schedule's own; on a variance-preserving schedule each grid
timestep is read as its flow time t_flow = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)) and x_t scaled by r onto
the path (the same map ``--target flow`` uses), so the grids of every schedule serve. For N calls the grid
has N + 1 points, and its last, timestep 0, is taken to flow time 0 (the data) rather than to t_flow at
timestep 0 (0.001 on rectified flow at T = 1000): one call goes from pure noise to the image."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .denoiser import FLOW_MAP, Denoiser, ImpossibleDesign
from .diffusion import Diffusion
from .grids import vp_coefficients
from .sampler_registry import SAMPLERS, TO_THE_DATA

FLOW_MAP_SAMPLER = "flow-map"


def path_point(diffusion: Diffusion, t: int | float) -> tuple[float, float]:
    """(r, t_flow) of a grid timestep: x = r x_t is on the rectified-flow path at flow time t_flow, with
    r = 1 / (sqrt(ab) + sqrt(1 - ab)) and t_flow = sqrt(1 - ab) r (1 at pure noise)."""
    alpha, sigma, _ = vp_coefficients(diffusion, t)
    r = 1.0 / (alpha + sigma)
    return r, sigma * r


def check_flow_map(prediction: str, method: str) -> None:
    """Refuse the flow-map sampler for a network that is not a flow map (it has no second time to jump
    with)."""
    if method == FLOW_MAP_SAMPLER and prediction != FLOW_MAP:
        raise ImpossibleDesign(
            f"the flow-map sampler jumps with a network's average velocity u(x, r, t); a {prediction!r} "
            "prediction is not a flow map (train --denoiser meanflow or shortcut); sample this run with "
            "another --method"
        )


@SAMPLERS.register(FLOW_MAP_SAMPLER, **TO_THE_DATA)
def flow_map_sampler(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """N jumps of a flow map along a grid of N + 1 timesteps, the last to the data: N network calls."""
    check_flow_map(denoiser.prediction, FLOW_MAP_SAMPLER)
    times = [path_point(denoiser.diffusion, t)[1] for t in timesteps[:-1]] + [0.0]
    z = x * path_point(denoiser.diffusion, timesteps[0])[0]  # onto the flow path: x = r x_t
    n = x.shape[0]
    pairs = list(zip(times[:-1], times[1:], strict=True))
    for t, r in tqdm(pairs, desc="flow-map", disable=not progress, leave=False):
        z = denoiser.flow_map(z, x.new_full((n,), t), x.new_full((n,), r))
    return z
