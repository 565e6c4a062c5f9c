import math

import numpy as np
import pytest
import torch

import schedules


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas, 0)


def test_linear_matches_ho_et_al_endpoints():
    b = schedules.get("linear")(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert b[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert torch.allclose(b, torch.from_numpy(np.linspace(1e-4, 0.02, 1000)))


def test_linear_scales_ends_for_other_T():
    b = schedules.get("linear")(250)
    assert b[0].item() == pytest.approx(4e-4) and b[-1].item() == pytest.approx(0.08)


def test_cosine_matches_nichol_dhariwal_formula():
    T, s = 1000, 0.008
    f = [math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = [min(1 - f[t + 1] / f[t], 0.999) for t in range(T)]
    b = schedules.get("cosine")(T)
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert torch.allclose(b, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert b.max().item() == pytest.approx(0.999)
    # alpha_bar[t] = f(t+1) / f(0) wherever the cap is not hit
    assert alpha_bar(b)[500].item() == pytest.approx(f[501] / f[0], rel=1e-10)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "scaled-linear"])
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_every_schedule_is_valid_and_monotone(name, T):
    b = schedules.get(name)(T)
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert ((b > 0) & (b < 1)).all()
    ab = alpha_bar(b)
    assert (ab[1:] < ab[:-1]).all(), "alpha_bar must strictly decrease"
    if T == 1000:
        assert ab[-1] < 0.01, "the last step must be close to pure noise"


def test_sigmoid_alpha_bar_follows_its_closed_form():
    T = 1000
    b = schedules.get("sigmoid")(T)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    gamma = lambda tau: (sig(3) - sig(6 * tau - 3)) / (sig(3) - sig(-3))  # noqa: E731
    assert alpha_bar(b)[399].item() == pytest.approx(gamma(400 / T), rel=1e-9)


def test_zero_terminal_snr_rescaling():
    base = schedules.get("linear")(1000)
    b = schedules.make("linear", 1000, zero_terminal_snr=True)
    ab, ab0 = alpha_bar(b), alpha_bar(base)
    assert ab[-1].item() == 0.0 and b[-1].item() == pytest.approx(1.0)
    assert ab[0].item() == pytest.approx(ab0[0].item(), rel=1e-12)
    # sqrt(alpha_bar) is an affine map of the original one (Lin et al. 2024, Algorithm 1)
    s, s0 = ab.sqrt(), ab0.sqrt()
    slope = (s[0] - s[-1]) / (s0[0] - s0[-1])
    assert torch.allclose(s, (s0 - s0[-1]) * slope, atol=1e-12)


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "10", None])
@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_bad_T_is_a_clear_error(name, T):
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        schedules.get(name)(T)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("linear", {"beta_start": 0.0}, "beta_start"),
        ("linear", {"beta_end": 1.5}, "beta_end"),
        ("linear", {"beta_start": 0.1, "beta_end": 0.01}, "beta_end"),
        ("cosine", {"s": -0.1}, "s must be"),
        ("cosine", {"max_beta": 1.2}, "max_beta"),
        ("sigmoid", {"start": 3.0, "end": -3.0}, "end > start"),
        ("sigmoid", {"tau": 0.0}, "tau"),
    ],
)
def test_bad_parameters_name_themselves(name, params, match):
    with pytest.raises(ValueError, match=match):
        schedules.get(name)(100, **params)


def test_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown schedule 'cosin'.*cosine, linear.*Did you mean 'cosine'"):
        schedules.get("cosin")
