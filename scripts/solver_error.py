"""How far each sampler lands from where it should, against its network calls, on each grid: the exact
denoiser of Gaussian data (bench.process.oracles.GaussianData) drives DDIM (eta 0), Euler, Heun and
DPM-Solver++(2M) from the same 64 noises on DDIM's uniform timesteps, EDM's karras grid (rho 7) and the
log-SNR grid, and the largest distance to the exact probability-flow endpoint is printed per NFE, with the
slope of log error against log NFE fitted over 50-400 calls (the solver's order).

    python scripts/solver_error.py                       # linear and cosine schedules, every grid, T = 1000
    python scripts/solver_error.py --schedules linear --grids log-snr --nfe 10,20,50
"""

from __future__ import annotations

import argparse

import numpy as np

import schedules
from bench.process.diffusion import Diffusion
from bench.process.grids import GRIDS, Grid
from bench.process.oracles import GaussianData
from bench.process.sampling import network_calls

SOLVERS = {"ddim": {"eta": 0.0}, "euler": {}, "heun": {}, "dpmpp-2m": {}}
ORDER_RANGE = (50, 400)


def steps_for(method: str, nfe: int) -> int:
    """The steps whose network calls come closest to ``nfe`` from below (Heun: 2 per step but the last)."""
    return max(s for s in range(1, nfe + 1) if network_calls(method, s) <= nfe) if nfe > 1 else 1


def table(data: GaussianData, diffusion: Diffusion, grid: Grid, budgets: list[int]) -> None:
    """One schedule and grid: each solver's largest endpoint error (and NFE) per budget, then its order."""
    print("   NFE  " + "  ".join(f"{method:>16}" for method in SOLVERS))
    for nfe in budgets:
        cells = []
        for method, settings in SOLVERS.items():
            steps = steps_for(method, nfe)
            if method == "heun" and steps < 2:
                cells.append(f"{'-':>16}")
                continue
            error = data.sampler_error(diffusion, method, steps, grid=grid, **settings)
            cells.append(f"{error:9.2e} ({network_calls(method, steps):>3})")
        print(f"  {nfe:>4}  " + "  ".join(cells))
    slopes = []
    for method, settings in SOLVERS.items():
        points = [n for n in (50, 100, 200, 400) if ORDER_RANGE[0] <= n <= ORDER_RANGE[1]]
        calls = [network_calls(method, steps_for(method, n)) for n in points]
        errors = [data.sampler_error(diffusion, method, steps_for(method, n), grid=grid, **settings)
                  for n in points]  # fmt: skip
        slopes.append(-np.polyfit(np.log(calls), np.log(errors), 1)[0])
    print("  order " + "  ".join(f"{s:>16.2f}" for s in slopes) + f"   (slope over {ORDER_RANGE} NFE)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", default="linear,cosine")
    parser.add_argument("--grids", default=",".join(GRIDS))
    parser.add_argument("--nfe", default="5,8,10,15,20,30,50,100,200,400")
    args = parser.parse_args()
    data = GaussianData()
    budgets = [int(n) for n in args.nfe.split(",")]
    for name in args.schedules.split(","):
        diffusion = Diffusion(schedules.get(name)(1000))
        for kind in args.grids.split(","):
            grid = Grid(kind)
            print(
                f"\n{name} schedule, {grid.describe()} grid, T = 1000, data N({data.mean}, {data.std}^2): "
                "largest endpoint error"
            )
            table(data, diffusion, grid, budgets)


if __name__ == "__main__":
    main()
