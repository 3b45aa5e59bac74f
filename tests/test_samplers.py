"""Samplers against ideal denoisers known in closed form (no training)."""

import math

import pytest
import torch

from diffuse.errors import RequestError
from diffuse.samplers import SAMPLERS, STOCHASTIC, SeededNoise, get_sampler, sample_consistency, sample_ddim
from diffuse.schedules import karras0_sigmas, karras_sigmas

DETERMINISTIC = [s for s in SAMPLERS if s not in STOCHASTIC]


def _final_error(denoiser, name, steps):
    sigmas = karras_sigmas(steps, 0.002, 80.0).double()
    x = torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    out = get_sampler(name)(denoiser, x, sigmas)
    return (out - denoiser.exact(x, 80.0)).abs().max().item()


@pytest.mark.parametrize("name,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_error_shrinks_at_expected_order(gaussian, name, order):
    errs = [_final_error(gaussian, name, n) for n in (16, 32, 64, 128)]
    rates = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert errs[-1] < errs[0] / 4
    assert min(rates[-2:]) > order - 0.35 and max(rates[-2:]) < order + 0.6, (errs, rates)


@pytest.mark.parametrize("name,tol", [("euler", 0.03), ("ddim", 0.03), ("heun", 1e-3), ("dpmpp_2m", 1e-3)])
def test_deterministic_samplers_reach_exact_solution(gaussian, name, tol):
    """Max error over 4,096 values at 200 steps (data std 0.5): first-order samplers are within
    3% of it, second-order ones within 0.1%."""
    assert _final_error(gaussian, name, 200) < tol


@pytest.mark.parametrize("name", [s for s in SAMPLERS if s != "consistency"])
def test_gaussian_data_distribution_is_reproduced(gaussian, name):
    """Every sampler of a denoiser, deterministic or not, turns N(0, sigma_max^2) into N(0, s^2).
    Ancestral sampling converges at first order in the variance (5% low at 100 steps, 2% at 400).
    The consistency sampler is for consistency functions (the test after next), not denoisers."""
    x = torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 80.0
    noise = SeededNoise(list(range(4000)), (1, 4, 4))
    out = get_sampler(name)(gaussian, x, karras_sigmas(400 if name in STOCHASTIC else 100), noise=noise)
    assert out.std().item() == pytest.approx(0.5, rel=0.03)
    assert abs(out.mean().item()) < 0.01


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_finite_data_samples_land_on_training_points(finite, name):
    x = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 80.0
    out = get_sampler(name)(finite, x, karras_sigmas(60), noise=SeededNoise(list(range(64)), (3, 4, 4)))
    assert finite.nearest_distance(out).max().item() < 1e-2
    hits = ((out[:, None] - finite.points[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert len(set(hits.tolist())) >= 4  # not collapsed onto one point


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_last_step_returns_denoised_and_callback_sees_every_step(gaussian, name):
    steps = []
    x = torch.randn(3, 1, 4, 4) * 80.0
    out = get_sampler(name)(gaussian, x, karras_sigmas(7), callback=steps.append)
    assert [s.index for s in steps] == list(range(7)) and all(s.total == 7 for s in steps)
    assert steps[0].sigma == pytest.approx(80.0) and steps[-1].sigma_next == 0.0
    assert torch.allclose(out, steps[-1].denoised, atol=1e-6)


def test_single_step_is_one_denoiser_call(gaussian):
    calls = []
    den = lambda x, s, c=None: (calls.append(1), gaussian(x, s))[1]
    x = torch.randn(2, 1, 2, 2) * 80
    for name in SAMPLERS:
        calls.clear()
        out = get_sampler(name)(den, x, karras_sigmas(1))
        assert len(calls) == 1 and torch.allclose(out, gaussian(x, torch.tensor(80.0)), atol=1e-4)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_noise_is_batch_independent(finite, name):
    """Image k of a batch equals the same seed sampled alone, stochastic samplers included."""
    seeds = [7, 8, 9]
    batch_noise = SeededNoise(seeds, (3, 4, 4))
    out = get_sampler(name)(finite, batch_noise.initial(80.0), karras_sigmas(12), noise=batch_noise)
    alone_noise = SeededNoise([8], (3, 4, 4))
    alone = get_sampler(name)(finite, alone_noise.initial(80.0), karras_sigmas(12), noise=alone_noise)
    assert torch.allclose(out[1:2], alone, atol=1e-5)


def test_ddim_eta_zero_equals_euler(finite):
    x = torch.randn(4, 3, 4, 4) * 80
    sig = karras_sigmas(10)
    assert torch.allclose(sample_ddim(finite, x, sig), SAMPLERS["euler"](finite, x, sig), atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampling_is_exact_with_the_exact_consistency_function(gaussian, steps):
    """For data N(0, s^2) the PF-ODE maps x at sigma to x s / sqrt(s^2 + sigma^2) at 0: the exact
    consistency function. Multistep consistency sampling with it gives N(0, s^2) in any number of
    steps, since re-noising its output to sigma gives the right marginal N(0, s^2 + sigma^2); the
    denoiser itself, a posterior mean, does not (its one-step output has std s^2 / sqrt(s^2 + 80^2))."""
    def consistency(x, sigma, cond=None):
        return x * 0.5 / (0.25 + torch.as_tensor(sigma).reshape(-1, 1, 1, 1) ** 2) ** 0.5
    noise = SeededNoise(list(range(4000)), (1, 4, 4))
    out = sample_consistency(consistency, noise.initial(80.0), karras0_sigmas(steps), noise=noise)
    assert out.std().item() == pytest.approx(0.5, rel=0.03)
    noise = SeededNoise(list(range(4000)), (1, 4, 4))
    assert sample_consistency(gaussian, noise.initial(80.0), karras0_sigmas(1), noise=noise).std().item() < 0.01


def test_unknown_sampler_and_bad_eta(gaussian):
    with pytest.raises(RequestError, match="unknown sampler"):
        get_sampler("plms")
    with pytest.raises(RequestError, match="eta"):
        sample_ddim(gaussian, torch.zeros(1, 1), karras_sigmas(2), eta=-1)
