"""Classifier-free guidance against an exact class-conditional oracle.

The data are two classes, each N(m_k, s_k^2) in every dimension of an item, drawn with weights w_k; the class
is shared by all the item's dimensions (:class:`bench.process.oracles.GaussianMixture`). Its exact network
gives E[target | x_t, y = k] for a label and E[target | x_t] of the mixture for the null label, so the real
wrapper and the real samplers fed it must, with every label of class 0: sample class 0's Gaussian at scale 1,
the mixture at scale 0, and at a scale > 1 follow the guided x0 estimate

    D_g = D_u + scale (D_0 - D_u) = D_0 - (scale - 1) r_1 (D_1 - D_0),
    D_1 - D_0 = sigma^2 / (s^2 + sigma^2) (m_1 - m_0)

in EDM's y = x_t / sqrt(alpha_bar) (D_k = m_k + s^2 / (s^2 + sigma^2) (y - m_k) is class k's denoiser,
D_u = r_0 D_0 + r_1 D_1 the mixture's, r_k = p(class k | x_t), one std s for both classes). With m_1 > m_0,
D_g < D_0 < D_u in every dimension wherever r_1 > 0: guidance pulls every step below the conditional one,
away from class 1, by an amount that vanishes deep inside class 0 (r_1 -> 0). What that implies for the
samples is checked two ways that need no sampler as reference: the exact guided ODE endpoint, integrated here
from the closed forms with scipy, and an ordering that holds item by item for DDIM and ancestral sampling
from the same noise (see :func:`test_guidance_moves_every_sample_away_from_the_other_class`).

Tolerances on moments are z standard errors of n items, computed from the closed forms; the samplers used
for moments (Heun with 100 steps, ancestral with all T steps) have discretisation errors well below that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import schedules
from bench.config import SampleConfig
from bench.process.denoiser import NULL_LABEL, PREDICTIONS, Denoiser, Guidance
from bench.process.diffusion import Diffusion
from bench.process.grids import ddim_timesteps
from bench.process.oracles import GaussianMixture
from bench.process.sampling import guided_network_calls, sample
from bench.runs.measure import sampler_calls

MEANS, STDS, WEIGHTS = (-0.5, 0.5), (0.2, 0.2), (0.3, 0.7)
MIXTURE = GaussianMixture(MEANS, STDS, WEIGHTS)
N, SHAPE = 2000, (1, 2, 2)  # items, and an item's four dimensions, which share its class
DIMS = math.prod(SHAPE)
Z = 4.0  # standard errors allowed
SCALE = 3.0  # a guided scale
# the samplers that draw the N items: Heun and ancestral, nearly exact, for the moments; DDIM (first order:
# 100 steps shrink class 0's std by 6%) and ancestral for the item-by-item ordering, which holds at any steps
SAMPLERS = {
    "heun": {"method": "heun", "steps": 100},
    "ancestral": {"method": "ancestral", "variance": "posterior"},
    "ddim": {"method": "ddim", "steps": 100, "eta": 0.0},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The oracle's small tensors run 40x slower on two threads of a shared CPU than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def draw(diffusion, noise):
    """``draw(sampler, scale)``: N samples (N, DIMS), float64, all labelled class 0, from the same x_T and the
    same generator seed (so the same fresh noise for the stochastic sampler); cached across tests."""
    cache: dict[tuple[str, float], torch.Tensor] = {}
    labels = torch.zeros(N, dtype=torch.long)

    def run(sampler: str, scale: float) -> torch.Tensor:
        if (sampler, scale) not in cache:
            denoiser = Denoiser(
                MIXTURE.network(diffusion), diffusion, labels=labels, guidance=Guidance(scale)
            )
            x = sample(
                denoiser,
                (N, *SHAPE),
                x_T=noise,
                generator=torch.Generator().manual_seed(1),
                **SAMPLERS[sampler],
            )
            cache[sampler, scale] = x.reshape(N, -1).double()
        return cache[sampler, scale]

    return run


# ----------------------------------------------------------------------------------- closed forms
def moments(means, stds, weights, dims: int, n: int) -> tuple[float, float, float, float]:
    """(mean, std) of every value of n items of ``dims`` dimensions from the mixture, and their standard
    errors. Items are independent but an item's dimensions share its class, so the errors are those of
    per-item averages: the item's mean for the mean, and for the variance the item's mean squared deviation
    q = mean_i (x_i - mu)^2, whose class-k mean is d_k^2 + s_k^2 (d_k = m_k - mu) and class-k variance
    (4 d_k^2 s_k^2 + 2 s_k^4) / dims; std = sqrt(var) divides its error by 2 std."""
    w, m, s = (np.asarray(v, dtype=np.float64) for v in (weights, means, stds))
    mu = (w * m).sum()
    d = m - mu
    var = (w * (s**2 + d**2)).sum()
    se_mean = math.sqrt((w * (s**2 / dims + d**2)).sum() / n)
    var_q = (w * (4 * d**2 * s**2 + 2 * s**4) / dims).sum() + (w * (d**2 + s**2 - var) ** 2).sum()
    return mu, math.sqrt(var), se_mean, math.sqrt(var_q / n) / (2 * math.sqrt(var))


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def log_density(x_t: torch.Tensor, t: torch.Tensor, diffusion: Diffusion, y: torch.Tensor) -> torch.Tensor:
    """log p(x_t | y) per item, up to a constant: class k's x_t is N(sqrt(ab) m_k, ab s_k^2 + 1 - ab) in every
    dimension; the null label's is the mixture of the classes with weights w_k."""
    a = diffusion.sqrt_alpha_bar[t].view(-1, 1)
    b2 = 1 - diffusion.alpha_bar[t].view(-1, 1)
    per_class = []
    for m, s in zip(MEANS, STDS, strict=True):
        var = a**2 * s**2 + b2
        per_class.append((-0.5 * (x_t.flatten(1) - a * m) ** 2 / var - 0.5 * var.log()).sum(1))
    per_class = torch.stack(per_class, 1)  # (B, K)
    mixture = (per_class + torch.tensor(WEIGHTS, dtype=torch.float64).log()).logsumexp(1)
    own = per_class.gather(1, y.clamp(min=0).view(-1, 1)).squeeze(1)
    return torch.where(y == NULL_LABEL, mixture, own)


def guided_d(y: np.ndarray, sigma: float, scale: float) -> np.ndarray:
    """The guided x0 estimate of class 0 in EDM's y (items, dims): D_u + scale (D_0 - D_u), from the classes'
    denoisers D_k = m_k + s_k^2 / (s_k^2 + sigma^2) (y - m_k) and y | k ~ N(m_k, s_k^2 + sigma^2) per
    dimension."""
    m, s = np.asarray(MEANS)[:, None, None], np.asarray(STDS)[:, None, None]
    var = s**2 + sigma**2
    d_k = m + s**2 / var * (y - m)  # (K, items, dims)
    log_r = np.log(WEIGHTS)[:, None] + (-0.5 * (y - m) ** 2 / var - 0.5 * np.log(var)).sum(2)
    r = np.exp(log_r - log_r.max(0))
    r /= r.sum(0)
    d_u = (r[:, :, None] * d_k).sum(0)
    return d_u + scale * (d_k[0] - d_u)


def guided_ode_endpoint(diffusion: Diffusion, x_T: torch.Tensor, scale: float) -> torch.Tensor:
    """Where a deterministic sampler with the guided estimate should land from x_T at t = T-1: the
    probability-flow ODE dy / d ln sigma = y - D_g(y; sigma) (Karras et al. 2022, eq. 3) integrated to the
    grid's last sigma at a 1e-9 tolerance, then D_g there (every sampler's last step)."""
    sigma_max, sigma_min = float(diffusion.sigmas[-1]), float(diffusion.sigmas[0])
    y_T = x_T.reshape(x_T.shape[0], -1).double().numpy() * math.sqrt(1 + sigma_max**2)

    def slope(log_sigma: float, y: np.ndarray) -> np.ndarray:
        y = y.reshape(y_T.shape)
        return (y - guided_d(y, math.exp(log_sigma), scale)).ravel()

    span = (math.log(sigma_max), math.log(sigma_min))
    solution = solve_ivp(slope, span, y_T.ravel(), method="DOP853", rtol=1e-9, atol=1e-9)
    assert solution.success, solution.message
    y = solution.y[:, -1].reshape(y_T.shape)
    return torch.from_numpy(guided_d(y, sigma_min, scale))


# ------------------------------------------------------------------------------------ the oracle
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_oracle_is_tweedie_of_the_class_and_mixture_densities(diffusion, prediction):
    """Tweedie: E[eps | x_t, y] = -sqrt(1 - ab) grad log p(x_t | y) and E[x0 | x_t, y] = (x_t + (1 - ab)
    grad log p(x_t | y)) / sqrt(ab), with p written above as densities (not as the oracle's posterior
    means), for a label per item (each class and the null one) and every prediction type."""
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0, 10, 100, 300, 600, 999]).repeat(3)
    y = torch.tensor([0, 1, NULL_LABEL]).repeat_interleave(6)
    x_t = (torch.randn(18, 1, 3, 1, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    (score,) = torch.autograd.grad(log_density(x_t, t, diffusion, y).sum(), x_t)
    x_t = x_t.detach()
    a = diffusion.sqrt_alpha_bar[t].view(-1, 1, 1, 1)
    b = diffusion.sqrt_one_minus_alpha_bar[t].view(-1, 1, 1, 1)
    net = MIXTURE.network(diffusion, prediction)
    x0_hat, eps_hat = Denoiser(net, diffusion, prediction, labels=y)(x_t, t)
    torch.testing.assert_close(eps_hat, -b * score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x0_hat, (x_t + b**2 * score) / a, rtol=1e-9, atol=1e-9)
    # no labels is the null label for every item
    x0_none, _ = Denoiser(net, diffusion, prediction)(x_t, t)
    x0_null, _ = Denoiser(net, diffusion, prediction, labels=torch.full_like(y, NULL_LABEL))(x_t, t)
    torch.testing.assert_close(x0_none, x0_null, rtol=0, atol=0)


def test_oracle_refuses_labels_it_does_not_know(diffusion):
    net = MIXTURE.network(diffusion)
    x, t = torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"0\.\.1 or NULL_LABEL"):
        net(x, t, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels have shape"):
        net(x, t, torch.tensor([0]))


# ------------------------------------------------------------------------- sampling with the oracle
@pytest.mark.parametrize("sampler", ["heun", "ancestral"])
def test_scale_one_samples_the_class(draw, sampler):
    x = draw(sampler, 1.0)
    mean, std, se_mean, se_std = moments(MEANS[:1], STDS[:1], (1.0,), DIMS, N)
    assert x.mean().item() == pytest.approx(mean, abs=Z * se_mean)
    assert x.std().item() == pytest.approx(std, abs=Z * se_std)
    assert bool((x.mean(1) < 0).all()), "every item in class 0's mode"


@pytest.mark.parametrize("sampler", ["heun", "ancestral"])
def test_scale_zero_samples_the_mixture(draw, sampler):
    """Mean, std, the share of items in each mode (their weights) and, as the class is an item's, the share of
    items whose dimensions all lie on one side of the midpoint 0 (near 1, where a class drawn per dimension
    would give about w_0^4 + w_1^4 = 0.25)."""
    x = draw(sampler, 0.0)
    mean, std, se_mean, se_std = moments(MEANS, STDS, WEIGHTS, DIMS, N)
    assert x.mean().item() == pytest.approx(mean, abs=Z * se_mean)
    assert x.std().item() == pytest.approx(std, abs=Z * se_std)
    w0 = WEIGHTS[0]  # an item mean is misplaced with probability Phi(-0.5 / (0.2 / 2)) ~ 3e-7
    assert (x.mean(1) < 0).double().mean().item() == pytest.approx(w0, abs=Z * math.sqrt(w0 * (1 - w0) / N))
    one_side = sum(
        w * (normal_cdf(abs(m) / s) ** DIMS + normal_cdf(-abs(m) / s) ** DIMS)
        for m, s, w in zip(MEANS, STDS, WEIGHTS, strict=True)
    )
    same = ((x < 0).all(1) | (x >= 0).all(1)).double().mean().item()
    assert same == pytest.approx(one_side, abs=Z * math.sqrt(one_side * (1 - one_side) / N))


@pytest.mark.parametrize("scale", [1.0, 0.0, SCALE])
def test_guided_heun_lands_on_the_exact_guided_ode_endpoint(diffusion, noise, draw, scale):
    """Item by item, against the ODE of the guided estimate integrated from the closed forms above. Heun's
    error with 100 steps is at most 6e-3 here (2e-2 with 50: a second-order method's ratio); getting the
    label, the null label or the combination wrong moves items by 0.1 or more. At scale 3 the exact guided
    ODE moves class 0's mean to about -0.64, away from class 1."""
    x = draw("heun", scale)
    assert (x - guided_ode_endpoint(diffusion, noise, scale)).abs().max().item() < 1e-2
    if scale == SCALE:
        _, _, se_mean, _ = moments(MEANS[:1], STDS[:1], (1.0,), DIMS, N)
        assert x.mean().item() < MEANS[0] - Z * se_mean


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_guidance_moves_every_sample_away_from_the_other_class(draw, sampler):
    """Item by item and dimension by dimension, from the same noise: scale 3 < scale 1 < scale 0.

    Why, for any number of steps: a DDIM or ancestral step is x' = c_D D + c_x x (+ the same fresh noise),
    with c_D > 0 and c_x > 0 (DDIM: c_D = sqrt(ab_s) - sqrt(1 - ab_s - sigma^2) sqrt(ab_t / (1 - ab_t)) > 0
    as ab_s > ab_t; ancestral: the posterior mean's coefficients). With D_0 increasing in x, the class-0
    step Phi_0 is increasing, and D_g < D_0 < D_u pointwise wherever r_1 > 0 (the module's docstring), so by
    induction x_g' = Phi_g(x_g) < Phi_0(x_g) <= Phi_0(x_0) = x_0', and likewise x_u' > x_0'. (Here the
    smallest gap is 5e-3, far above float32 rounding.)

    The stochastic sampler is held to this ordering and to a mean below class 0's, not to the ODE's
    endpoint: the guided estimates are not the denoisers of any one diffusion's marginals, so sampling with
    fresh noise lands elsewhere (mean about -0.53 here, against the ODE's -0.64)."""
    guided, conditional, unconditional = (draw(sampler, s) for s in (SCALE, 1.0, 0.0))
    assert bool((guided < conditional).all()) and bool((conditional < unconditional).all())
    _, _, se_mean, _ = moments(MEANS[:1], STDS[:1], (1.0,), DIMS, N)
    assert guided.mean().item() < MEANS[0] - Z * se_mean


# ------------------------------------------------------------------------------ the wrapper alone
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0, 4.5])
def test_combining_outputs_is_combining_estimates(diffusion, prediction, scale):
    """With x_t fixed, the guided (x0_hat, eps_hat) is uncond + s (cond - uncond) of the estimates read off a
    conditional and an unconditional call, for every prediction type; with an interval, items whose sigma is
    outside it get the conditional estimates. Per-item timesteps put some items on each side."""
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([5, 50, 200, 400, 700, 999])
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    x_t = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    net = MIXTURE.network(diffusion, prediction)
    cond = Denoiser(net, diffusion, prediction, labels=labels)(x_t, t)
    uncond = Denoiser(net, diffusion, prediction, labels=torch.full_like(labels, NULL_LABEL))(x_t, t)
    interval = (float(diffusion.sigmas[50]), float(diffusion.sigmas[700]))  # guides t = 200, 400, 700
    inside = torch.tensor([False, False, True, True, True, False]).view(-1, 1, 1, 1)
    for guidance, guided in ((Guidance(scale), torch.ones_like(inside)), (Guidance(scale, interval), inside)):
        got = Denoiser(net, diffusion, prediction, labels=labels, guidance=guidance)(x_t, t)
        for estimate, c, u in zip(got, cond, uncond, strict=True):
            expected = torch.where(guided, u + scale * (c - u), c)
            torch.testing.assert_close(estimate, expected, rtol=1e-9, atol=1e-9)


class CountingNet:
    """The mixture oracle, recording each call's batch size, labels and inputs."""

    def __init__(self, diffusion: Diffusion) -> None:
        self.net = MIXTURE.network(diffusion)
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        assert y is not None, "a conditional denoiser always passes labels"
        self.calls.append((x.shape[0], y.clone(), t.clone(), x.clone()))
        return self.net(x, t, y)

    @property
    def items(self) -> int:
        return sum(batch for batch, *_ in self.calls)


B = 3
LABELS = torch.tensor([0, 1, 0])
NULLS = torch.full((B,), NULL_LABEL)


@pytest.mark.parametrize(
    ("guidance", "expected_labels"),
    [
        (Guidance(2.0), torch.cat([LABELS, NULLS])),
        (Guidance(2.0, (0.0, 1.0)), LABELS),  # t = 500 has sigma ~ 3.4, outside the interval
        (Guidance(1.0), LABELS),
        (Guidance(0.0), NULLS),
        (Guidance(0.0, (0.0, 1.0)), LABELS),
    ],
    ids=["guided", "outside-interval", "scale-1", "scale-0", "scale-0-outside-interval"],
)
def test_one_network_call_per_denoiser_call(diffusion, guidance, expected_labels):
    """A guided call is one batch of 2B (conditional half first, the null label in the second half, the same
    input and timesteps in both); every other call one batch of B with the labels it needs."""
    net = CountingNet(diffusion)
    x_t = torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    Denoiser(net, diffusion, labels=LABELS, guidance=guidance)(x_t, 500)
    assert len(net.calls) == 1
    batch, labels, t, x = net.calls[0]
    assert batch == expected_labels.numel() and torch.equal(labels, expected_labels)
    assert bool((t == 500).all()) and torch.equal(x, x_t.repeat(batch // B, 1, 1, 1))


def test_interval_is_open_below_and_closed_above(diffusion):
    """lo < sigma <= hi: a call at sigma = lo exactly is conditional (B items), at sigma = hi guided (2B)."""
    lo, hi = 100, 300
    guidance = Guidance(2.0, (float(diffusion.sigmas[lo]), float(diffusion.sigmas[hi])))
    x_t = torch.zeros(B, 1)
    for t, batch in ((lo - 1, B), (lo, B), (lo + 1, 2 * B), (hi - 1, 2 * B), (hi, 2 * B), (hi + 1, B)):
        net = CountingNet(diffusion)
        Denoiser(net, diffusion, labels=LABELS, guidance=guidance)(x_t, t)
        assert [c[0] for c in net.calls] == [batch], f"t = {t}"
        assert guidance.calls(float(diffusion.sigmas[t])) == batch // B


@pytest.mark.parametrize(
    ("method", "steps", "settings"),
    [
        ("ddim", 10, {"eta": 1.0}),
        ("euler", 10, {}),
        ("heun", 10, {}),
        ("dpmpp-2m", 10, {}),
        ("ancestral", None, {}),
        ("one_shot", 1, {}),
    ],
)
@pytest.mark.parametrize("scale", [0.0, 2.0])
@pytest.mark.parametrize("interval", [None, (9, 39)], ids=["everywhere", "interval"])
def test_network_calls_match_what_is_declared(method, steps, settings, scale, interval):
    """Items through the network / B = guided_network_calls = bench.runs.measure.sampler_calls, guided
    everywhere and with an interval (sigma_9, sigma_39] that covers part of the grid (for 10 steps of T = 40
    the grid is 39, 35, 30, 26, 22, 17, 13, 9, 4, 0: both ends are on it, and the first call is inside, so a
    sampler that declared its calls shifted by one would be counted wrong). Each call, by its own timestep, is
    2B items inside the interval at scale 2, B null-labelled items inside at scale 0, and B labelled items
    outside."""
    T = 40
    diffusion = Diffusion(schedules.get("linear")(T))
    sigmas = diffusion.sigmas
    if interval is not None:
        interval = (float(sigmas[interval[0]]), float(sigmas[interval[1]]))
    guidance = Guidance(scale, interval)
    net = CountingNet(diffusion)
    denoiser = Denoiser(net, diffusion, labels=LABELS, guidance=guidance)
    sample(
        denoiser, (B, 1), method=method, steps=steps, generator=torch.Generator().manual_seed(6), **settings
    )
    inside = []
    for batch, labels, t, _ in net.calls:
        sigma = float(sigmas[int(t[0])])
        inside.append(interval is None or interval[0] < sigma <= interval[1])
        expected = torch.cat([LABELS, NULLS]) if scale == 2.0 and inside[-1] else LABELS
        expected = NULLS if scale == 0.0 and inside[-1] else expected
        assert batch == expected.numel() and torch.equal(labels, expected)
    if interval is not None and method != "one_shot":
        assert any(inside) and not all(inside), "the interval covers part of the grid"
    grid = ddim_timesteps(T, steps or T)
    declared = guided_network_calls(method, grid, diffusion, guidance)
    config = SampleConfig(method=method, steps=steps, guidance_scale=scale, guidance_interval=interval)
    assert net.items / B == declared == sampler_calls(config, diffusion)
