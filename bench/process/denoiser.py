"""The one wrapper around a network, as EDM wraps its networks once (``EDMPrecond``): a :class:`Denoiser`
knows which quantity its network predicts (``eps``, ``x0``, ``v`` or EDM's preconditioned ``F``) and turns
any output into the pair ``(x0_hat, eps_hat)``, and gives each prediction's regression target and its loss
weights over noise levels. The training objectives (:mod:`bench.training.objectives`), the samplers and the
likelihood bound take this wrapper, so the prediction type is resolved here and nowhere else.

The conversions are those of Ho et al. 2020 (eps), Salimans & Ho 2022 (v), Karras et al. 2022 (EDM,
Table 1) and flow matching's velocity (Lipman et al. 2023; Liu et al. 2023), written in
:class:`bench.process.diffusion.Diffusion`'s alpha_bar so that they stay finite at both ends of the schedule
(sigma -> 0 and, with zero terminal SNR, sigma = inf).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .diffusion import Diffusion

PREDICTIONS = ("eps", "x0", "v", "edm", "flow")
"""What a network may be trained to predict by regression (``--target``): the noise, the clean image, v =
sqrt(ab) eps - sqrt(1 - ab) x0, EDM's F (x0_hat = c_skip y + c_out F from the input c_in y), or flow
matching's velocity u = eps - x0 of the rectified-flow path x = (1 - t) x0 + t eps (from the input r x_t,
see :meth:`Denoiser.flow_variables`)."""
CONSISTENCY = "consistency"
"""The consistency models' parametrisation (Song et al. 2023): f(y, sigma) = c_skip y + c_out F with EDM's
c_in and c_skip, c_out shifted by the schedule's smallest noise level sigma_min, so that f(y, sigma_min) = y
exactly. It has no regression target: the consistency objectives
(:mod:`bench.training.objectives.consistency`) train it."""
TRIGFLOW = "trigflow"
"""TrigFlow's consistency model (Lu & Song 2024): with s = arctan(sigma / sd) and x_s = cos s y (so x_s / sd
is EDM's c_in y), f = cos s x_s - sd sin s F, i.e. x0_hat = c_skip y - c_out F with EDM's c_skip and c_out,
and the network called on (x_s / sd, :data:`TRIG_TIME_SCALE` s): TrigFlow's own time, not the schedule's
timestep, whose derivative in s grows without bound towards pure noise. f(y, 0) = y, so at the schedule's
sigma_min f is y to within sigma_min^2 / sd^2. Like ``consistency`` it has no regression target:
continuous-time consistency training (:mod:`bench.training.objectives.continuous`) trains it."""
CONSISTENCY_FUNCTIONS = (CONSISTENCY, TRIGFLOW)
"""The predictions that are consistency functions (where the ODE ends), not denoisers E[x0 | x_t]."""
TRIG_TIME_SCALE = 1.0
"""A TrigFlow network sees s itself (c_noise(s) = s, the paper's identity time transformation), in [0,
pi/2): on the backbones' sinusoidal embeddings only the lowest frequencies vary, so the time signal is
smooth in s and its derivative bounded, which the JVP of the consistency condition needs."""
FLOW_MAP = "flow-map"
"""A flow map (MeanFlow, Geng et al. 2025; shortcut models, Frans et al. 2024): a network that takes a second
time and predicts the average velocity u(x, r, t) of the rectified-flow path over [r, t] in flow time, so that
x_r = x_t - (t - r) u (:meth:`Denoiser.flow_map`). At r = t it is flow matching's velocity, so every other
sampler, and the likelihood, use it as the ``flow`` prediction. Its objectives
(:mod:`bench.training.objectives.flow_map`) train it."""
FLOW_TIME_SCALE = 1000.0
"""A flow map's network sees flow time times this (and the gap t - r likewise): the range of timesteps the
backbones' sinusoidal embeddings were made for, whatever the schedule's T."""
SIGMA_DATA = 0.5
"""EDM's sigma_data: the standard deviation of the data, 0.5 for images in [-1, 1]."""
LOSS_WEIGHTS = ("uniform", "min-snr", "edm")
"""How the per-example loss is weighted over noise levels: ``uniform`` (DDPM's L_simple on the target),
``min-snr`` (Hang et al. 2023) or ``edm`` (Karras et al. 2022, lambda(sigma) = SNR + 1 / sigma_data^2)."""
MIN_SNR_GAMMA = 5.0
NULL_LABEL = -1
"""The class label that means "no class": a conditional network maps it to its learned null embedding, the
unconditional model classifier-free guidance needs (Ho & Salimans 2022); label dropout trains it."""

Net = Callable[..., torch.Tensor]
"""``net(x_t, t)`` for an unconditional network, ``net(x_t, t, y)`` with int64 labels for a conditional."""


class Parameterization(Protocol):
    """What the wrapper needs of a denoiser plugin's recipe (``denoisers.Recipe`` has both)."""

    prediction: str
    sigma_data: float


class ImpossibleDesign(ValueError):
    """A combination of choices that cannot work together, whatever their values (an eps prediction on a
    schedule that reaches pure noise, a weighting infinite there): a run refuses it like any bad input, and a
    sweep over a grid of choices skips that point, with the reason, and runs the others."""


def check_prediction(prediction: str) -> str:
    if prediction not in (*PREDICTIONS, *CONSISTENCY_FUNCTIONS, FLOW_MAP):
        known = ", ".join((*PREDICTIONS, *CONSISTENCY_FUNCTIONS, FLOW_MAP))
        raise ValueError(f"prediction must be one of {known}, got {prediction!r}")
    return prediction


def check_sigma_data(sigma_data: object) -> float:
    number = isinstance(sigma_data, int | float) and not isinstance(sigma_data, bool)
    if not (number and math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
    return float(sigma_data)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance (Ho & Salimans 2022) in DiT's convention: the network output is
    ``uncond + scale (cond - uncond)``, so ``scale = 1`` is plain conditional sampling (one call) and
    ``scale = 0`` unconditional (one call, with the null label). With ``interval = (lo, hi)`` guidance applies
    only where lo < sigma <= hi (Kynkäänniemi et al. 2024; sigma is EDM's, sqrt((1 - ab) / ab)), and the
    other calls are plain conditional ones."""

    scale: float = 1.0
    interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_guidance(self.scale, self.interval)
        if self.interval is not None:
            object.__setattr__(self, "interval", (float(self.interval[0]), float(self.interval[1])))

    def guided(self, sigma: torch.Tensor) -> torch.Tensor:
        """Per item: whether the call at noise level ``sigma`` is guided (not plain conditional)."""
        if self.scale == 1.0:
            return torch.zeros_like(sigma, dtype=torch.bool)
        if self.interval is None:
            return torch.ones_like(sigma, dtype=torch.bool)
        lo, hi = self.interval
        return (sigma > lo) & (sigma <= hi)

    def calls(self, sigma: float) -> int:
        """Network evaluations per image of one denoiser call at ``sigma``: two where it combines the
        conditional and unconditional outputs, one elsewhere (scale 0 is the unconditional output alone)."""
        guided = bool(self.guided(torch.tensor([sigma], dtype=torch.float64)))
        return 2 if guided and self.scale != 0.0 else 1


def check_guidance(scale: object, interval: object = None) -> None:
    number = isinstance(scale, int | float) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale >= 0):
        raise ValueError(
            f"guidance scale must be a number >= 0 (1 is plain conditional sampling), got {scale!r}"
        )
    if interval is None:
        return
    ok = isinstance(interval, tuple | list) and len(interval) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in interval)
    if not (ok and 0 <= interval[0] < interval[1] and not math.isnan(interval[1])):
        raise ValueError(
            "guidance interval must be two noise levels SIGMA_LO,SIGMA_HI with 0 <= SIGMA_LO < SIGMA_HI "
            f"(sigma = sqrt((1 - alpha_bar) / alpha_bar); inf allowed), got {interval!r}"
        )


def average_velocity(net: Net, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """A flow-map network's u(z, r, t): called on (z, scale t, gap = scale (t - r)), scale
    :data:`FLOW_TIME_SCALE`."""
    return net(z, FLOW_TIME_SCALE * t, gap=FLOW_TIME_SCALE * (t - r))


@dataclass(frozen=True)
class Denoiser:
    """``net(x_t, t)`` as a denoiser of ``diffusion``: ``denoiser(x_t, t) -> (x0_hat, eps_hat)``.

    ``net`` is any callable (a module, its DDP or compiled wrapper, an analytic oracle); ``t`` may be integer
    timesteps or real-valued ones between them. With ``clip_x0`` the x0 estimate is clipped to the data range
    [-1, 1] and eps recomputed from it (as the DDPM and DDIM reference code do when sampling images), so the
    two stay consistent. ``sigma_data`` is EDM's, used by the ``edm`` prediction and loss weighting.

    ``labels`` (int64, one per item of the batches it is called on; :data:`NULL_LABEL` for none) makes the
    calls conditional, and ``guidance`` combines them with unconditional ones. Both act on the network
    output, before it is turned into (x0_hat, eps_hat): with x_t fixed every target is affine in the output,
    so combining outputs is combining x0 (and eps) estimates, for every prediction type and every sampler.
    """

    net: Net
    diffusion: Diffusion
    prediction: str = "eps"
    clip_x0: bool = False
    sigma_data: float = SIGMA_DATA
    labels: torch.Tensor | None = None
    guidance: Guidance | None = None

    def __post_init__(self) -> None:
        check_prediction(self.prediction)
        check_sigma_data(self.sigma_data)

    @classmethod
    def of(
        cls,
        net: torch.nn.Module,
        diffusion: Diffusion,
        recipe: Parameterization | None = None,
        *,
        clip_x0: bool = False,
    ) -> Denoiser:
        """Wrap a denoiser plugin's module with what its recipe (by default ``net.recipe``) declares."""
        recipe = recipe if recipe is not None else getattr(net, "recipe", None)
        if not all(hasattr(recipe, name) for name in ("prediction", "sigma_data")):
            raise TypeError(
                f"the recipe of {type(net).__name__} ({recipe!r}) does not say what it predicts: expected a "
                "denoisers.Recipe, with prediction and sigma_data"
            )
        return cls(net, diffusion, recipe.prediction, clip_x0, recipe.sigma_data)

    # ------------------------------------------------------------------ EDM's preconditioning (Table 1)
    def _edm(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_in y, c_skip y, c_out) per unit of x_t, written in alpha_bar: with y = x_t / sqrt(ab) and
        d = ab (sigma^2 + sd^2) = 1 - ab + ab sd^2, c_in y = x_t / sqrt(d), c_skip y = sd^2 sqrt(ab) x_t / d
        and c_out = sd sqrt(1 - ab) / sqrt(d)."""
        a, b = self.diffusion.coefficients(t, x)
        sd2 = self.sigma_data**2
        d = b * b + a * a * sd2
        return d.rsqrt(), sd2 * a / d, self.sigma_data * b * d.rsqrt()

    def _consistency(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_skip y, c_out) per unit of x_t of the consistency parametrisation: c_skip = sd^2 / ((sigma -
        sigma_min)^2 + sd^2) and c_out = (sigma - sigma_min) sd / sqrt(sd^2 + sigma^2), with sigma_min the
        schedule's sigma at t = 0. Written with u = sqrt(ab) (sigma - sigma_min) (= sqrt(1 - ab) at sigma =
        inf): c_skip y = sd^2 sqrt(ab) x_t / (u^2 + ab sd^2) and c_out = sd u / sqrt(1 - ab + ab sd^2), finite
        at both ends, with c_out exactly 0 at t = 0."""
        a, b = self.diffusion.coefficients(t, x)
        sigma = self.diffusion.sigma_at(t)
        shift = sigma - self.diffusion.sigmas[0].to(sigma.device)
        shape = (t.shape[0], *([1] * (x.ndim - 1)))
        u = torch.where(torch.isinf(sigma), 1.0, shift / (1.0 + sigma.pow(2)).sqrt())
        u = u.to(x.device, x.dtype).reshape(shape)
        sd2 = self.sigma_data**2
        return sd2 * a / (u * u + a * a * sd2), self.sigma_data * u * (b * b + a * a * sd2).rsqrt()

    # ------------------------------------------------------------ flow matching's variables
    def flow_variables(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, t_flow) per item: the rectified-flow path x = (1 - t_flow) x0 + t_flow eps is the
        variance-preserving one scaled, x = r x_t with r = 1 / (sqrt(ab) + sqrt(1 - ab)) and t_flow =
        sqrt(1 - ab) r (so 1 - t_flow = sqrt(ab) r, and EDM's sigma = t_flow / (1 - t_flow)). Both stay finite
        at both ends: r = 1 and t_flow = 0 at sigma = 0, t_flow = 1 at zero terminal SNR."""
        a, b = self.diffusion.coefficients(t, x)
        r = 1.0 / (a + b)
        return r, b * r

    def net_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network sees: x_t itself, EDM's c_in(sigma) y, or the flow path's r x_t."""
        if self.prediction in ("edm", *CONSISTENCY_FUNCTIONS):
            c_in, _, _ = self._edm(t, x_t)
            return c_in * x_t
        if self.prediction in ("flow", FLOW_MAP):
            r, _ = self.flow_variables(t, x_t)
            return r * x_t
        return x_t

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for (x0, eps, t): the regression target of the training loss.
        EDM's F-target (x0 - c_skip y) / c_out is written as (sqrt(1 - ab) x0 - sd^2 sqrt(ab) eps) /
        (sd sqrt(d)), which has no cancellation at small sigma."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return self.diffusion.v_from(x0, eps, t)
        if self.prediction in ("flow", FLOW_MAP):  # a flow map's at r = t: the velocity
            return eps - x0
        if self.prediction in CONSISTENCY_FUNCTIONS:
            raise ValueError(
                "a consistency model has no regression target: it is trained by consistency distillation or "
                "consistency training (bench.training.objectives.consistency, .continuous)"
            )
        a, b = self.diffusion.coefficients(t, x0)
        sd = self.sigma_data
        return (b * x0 - sd * sd * a * eps) / (sd * (b * b + a * a * sd * sd).sqrt())

    def split(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network output into (x0_hat, eps_hat)."""
        d = self.diffusion
        if self.prediction == "eps":
            x0, eps = d.x0_from_eps(x_t, t, output), output
        elif self.prediction == "x0":
            x0, eps = output, None
        elif self.prediction == "v":
            x0, eps = d.x0_from_v(x_t, t, output), d.eps_from_v(x_t, t, output)
        elif self.prediction in ("flow", FLOW_MAP):  # x0 = x - t u, eps = x + (1 - t) u on the path x = r x_t
            r, t_flow = self.flow_variables(t, x_t)
            x = r * x_t
            x0, eps = x - t_flow * output, x + (1.0 - t_flow) * output
        elif self.prediction == CONSISTENCY:
            c_skip_y, c_out = self._consistency(t, x_t)
            x0, eps = c_skip_y * x_t + c_out * output, None
        elif self.prediction == TRIGFLOW:  # f = cos s x_s - sd sin s F
            _, c_skip_y, c_out = self._edm(t, x_t)
            x0, eps = c_skip_y * x_t - c_out * output, None
        else:
            _, c_skip_y, c_out = self._edm(t, x_t)
            x0, eps = c_skip_y * x_t + c_out * output, None
        if self.clip_x0:
            x0, eps = x0.clamp(-1.0, 1.0), None
        if eps is None:
            eps = d.eps_from_x0(x_t, t, x0)
        return x0, eps

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | int | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at ``x_t``; a number ``t`` is that timestep for every item (as samplers call),
        an int an integer timestep, a float a real-valued one."""
        if not isinstance(t, torch.Tensor):
            dtype = torch.float64 if isinstance(t, float) else torch.long
            t = torch.full((x_t.shape[0],), t, dtype=dtype, device=x_t.device)
        output = self.output(self.net_input(x_t, t), t).to(x_t.dtype)
        return self.split(output, x_t, t)

    def trig_time(self, t: torch.Tensor) -> torch.Tensor:
        """TrigFlow's time s = arctan(sigma / sd) at timesteps ``t`` (pi / 2 where sigma is infinite)."""
        return torch.atan(self.diffusion.sigma_at(t) / self.sigma_data)

    # ---------------------------------------------------------------------------------- flow maps
    def average_velocity(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """A flow map's u(z, r, t) on the rectified-flow path z = (1 - t) x0 + t eps, at flow times ``t``
        and ``r`` (one each per item, r <= t): the network called on (z, scale t, scale (t - r))."""
        if self.prediction != FLOW_MAP:
            raise ValueError(f"a {self.prediction!r} prediction is not a flow map: it takes no second time")
        return average_velocity(self.net, z, t, r)

    def flow_map(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Where the flow takes ``z`` from flow time ``t`` to ``r`` <= t in one call: z - (t - r) u(z, r,
        t); times outside 0 <= r <= t <= 1 are an error."""
        if bool((r > t).any()) or bool((r < 0).any()) or bool((t > 1).any()):
            raise ValueError("a flow map goes from flow time t to r with 0 <= r <= t <= 1")
        gap = (t - r).to(z.dtype).reshape(-1, *[1] * (z.ndim - 1))
        return z - gap * self.average_velocity(z, t, r).to(z.dtype)

    def output(self, net_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output at ``net_input``: unconditional without labels (the call unconditional
        networks always had), conditional with them, and with guidance where it applies ``uncond + s (cond -
        uncond)`` from one batched call of twice the batch (the null label in its second half). A flow map's
        network sees flow time (:data:`FLOW_TIME_SCALE` t_flow) and no gap: the flow's velocity; a TrigFlow
        network TrigFlow's time (:data:`TRIG_TIME_SCALE` s)."""
        if self.prediction == FLOW_MAP:
            if self.labels is not None:
                raise ValueError("a flow map here is unconditional: it takes no labels")
            _, t_flow = self.flow_variables(t, net_input)
            return self.net(net_input, FLOW_TIME_SCALE * t_flow.reshape(-1))
        if self.prediction == TRIGFLOW:
            if self.labels is not None:
                raise ValueError("a TrigFlow consistency model here is unconditional: it takes no labels")
            return self.net(net_input, TRIG_TIME_SCALE * self.trig_time(t))
        if self.labels is None:
            return self.net(net_input, t)
        labels = self.labels.to(net_input.device)
        if labels.shape != (net_input.shape[0],):
            raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({net_input.shape[0]},)")
        guidance = self.guidance or Guidance()
        if guidance.scale == 1.0:  # plain conditional: no noise level to look up, no host sync
            return self.net(net_input, t, labels)
        guided = guidance.guided(self.diffusion.sigma_at(t))
        if not bool(guided.any()):
            return self.net(net_input, t, labels)
        if guidance.scale == 0.0 and bool(guided.all()):
            return self.net(net_input, t, torch.full_like(labels, NULL_LABEL))
        both = self.net(
            torch.cat([net_input, net_input]),
            torch.cat([t, t]),
            torch.cat([labels, torch.full_like(labels, NULL_LABEL)]),
        )
        cond, uncond = both.chunk(2)
        out = uncond + guidance.scale * (cond - uncond)
        if bool(guided.all()):
            return out
        return torch.where(guided.view(-1, *[1] * (out.ndim - 1)).to(out.device), out, cond)

    # ----------------------------------------------------------------------------- loss weighting
    def error_scale(self, snr: torch.Tensor) -> torch.Tensor:
        """k such that, with x_t fixed, ``||output - target||^2 = k ||x0_hat - x0||^2``: SNR for eps, 1 for
        x0, SNR + 1 for v, SNR + 1 / sd^2 for EDM's F (= 1 / c_out^2) and (1 + sqrt(SNR))^2 for the flow's
        velocity (x0_hat - x0 = -t_flow (u_hat - u), and 1 / t_flow = 1 + sqrt(SNR))."""
        if self.prediction in ("flow", FLOW_MAP):
            return (1.0 + snr.sqrt()).pow(2)
        if self.prediction in CONSISTENCY_FUNCTIONS:
            raise ValueError("a consistency model is not trained by regression: it has no loss weighting")
        return {
            "eps": snr,
            "x0": torch.ones_like(snr),
            "v": snr + 1.0,
            "edm": snr + self.sigma_data**-2,
        }[self.prediction]

    def loss_weight(self, kind: str, snr: torch.Tensor, *, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
        """The factor on this target's squared error that makes the loss ``W(SNR) ||x0_hat - x0||^2``:
        W = min(SNR, gamma) for ``min-snr`` (Hang et al. 2023) and SNR + 1 / sd^2 for ``edm`` (Karras et al.
        2022, eq. 8's lambda); 1 for ``uniform``, where W is the target's own error scale."""
        if kind == "uniform":
            return torch.ones_like(snr)
        if kind == "min-snr":
            if self.prediction == "eps":  # min(SNR, gamma) / SNR, written so that SNR = 0 gives its limit 1
                return (gamma / snr).clamp(max=1.0)
            return snr.clamp(max=gamma) / self.error_scale(snr)
        if kind == "edm":
            return (snr + self.sigma_data**-2) / self.error_scale(snr)
        raise ValueError(f"loss weight must be one of {', '.join(LOSS_WEIGHTS)}, got {kind!r}")
