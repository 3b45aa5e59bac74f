"""Preconditioning: every parameterization, given the ideal network output, is the ideal denoiser."""

import pytest
import torch
from torch import nn

from diffuse.denoiser import Denoiser, EDMLoss, alphas_cumprod_to_sigmas, eps_from_x0, preconditioning, x0_from_eps


class Oracle(nn.Module):
    """A 'network' that returns exactly the target its parameterization asks for, given the
    clean image y and noise n it was built from."""

    def __init__(self, kind, y, n, sigma, sigma_data):
        super().__init__()
        self.kind, self.y, self.n, self.sigma, self.sd = kind, y, n, sigma, sigma_data

    def forward(self, x_in, c_noise, cond=None):
        p = preconditioning(self.kind, self.sigma, self.sd)
        b = lambda t: t.reshape(-1, 1, 1, 1)
        x = self.y + b(self.sigma) * self.n
        return (self.y - b(p.c_skip) * x) / b(p.c_out)  # F_target, EDM eq. 8


@pytest.mark.parametrize("kind", ["edm", "eps", "v", "x0"])
def test_parameterizations_recover_clean_image(kind):
    g = torch.Generator().manual_seed(0)
    y, n = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0])
    den = Denoiser(Oracle(kind, y, n, sigma, 0.5), kind, 0.5)
    assert torch.allclose(den(y + sigma.reshape(-1, 1, 1, 1) * n, sigma), y, atol=1e-4)


def test_eps_target_is_the_noise_and_v_target_matches_salimans_ho():
    sigma, sd = torch.tensor([0.7]), 0.5
    y, n = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    x = y + sigma * n
    p = preconditioning("eps", sigma, sd)
    assert torch.allclose((y - p.c_skip * x) / p.c_out, n, atol=1e-5)
    # v = alpha n - beta y in units of sigma_data (Salimans & Ho 2022)
    alpha, beta = sd / (sigma ** 2 + sd ** 2).sqrt(), sigma / (sigma ** 2 + sd ** 2).sqrt()
    p = preconditioning("v", sigma, sd)
    assert torch.allclose((y - p.c_skip * x) / p.c_out, alpha * n - beta * y / sd, atol=1e-5)


def test_edm_effective_target_has_unit_variance():
    # EDM sec. 5: with sigma_data matching the data, c_in x and the target both have variance 1.
    sd = 0.5
    for s in [0.01, 0.5, 5.0, 80.0]:
        sigma = torch.tensor([s])
        y, n = torch.randn(200000) * sd, torch.randn(200000)
        p = preconditioning("edm", sigma, sd)
        assert (p.c_in * (y + sigma * n)).std().item() == pytest.approx(1, abs=0.02)
        assert ((y - p.c_skip * (y + sigma * n)) / p.c_out).std().item() == pytest.approx(1, abs=0.02)
        assert (EDMLoss(sigma_data=sd).weight(sigma) * p.c_out ** 2).item() == pytest.approx(1, rel=1e-5)


def test_eps_x0_conversions_invert():
    x, x0, sigma = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([0.3, 4.0])
    assert torch.allclose(x0_from_eps(x, sigma, eps_from_x0(x, sigma, x0)), x0, atol=1e-5)


def test_ddpm_timesteps_map_to_sigmas():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    sig = alphas_cumprod_to_sigmas(torch.cumprod(1 - betas, 0))
    assert sig[0] == pytest.approx(0.01, rel=1e-3) and 80 < sig[-1] < 160 and torch.all(sig[1:] > sig[:-1])


def test_loss_samples_log_normal_sigmas():
    loss = EDMLoss()
    s = loss.sample_sigma(100000, torch.Generator().manual_seed(0)).log()
    assert s.mean().item() == pytest.approx(-1.2, abs=0.02) and s.std().item() == pytest.approx(1.2, abs=0.02)


def test_high_share_draws_log_uniform_sigmas_where_sampling_starts():
    g = lambda: torch.Generator().manual_seed(0)
    plain = EDMLoss(p_mean=-0.4).sample_sigma(100000, g())
    mixed = EDMLoss(p_mean=-0.4, high_share=0.1).sample_sigma(100000, g())
    assert torch.equal(EDMLoss(p_mean=-0.4, high_share=0.0).sample_sigma(100000, g()), plain)  # 0: as before
    # the log-normal puts 0.2% above sigma 20; a tenth drawn log-uniformly over [5, 80] adds half of it there
    assert (plain > 20).float().mean().item() < 0.005
    assert (mixed > 20).float().mean().item() == pytest.approx(0.1 * 0.5 + 0.9 * 0.002, abs=0.004)
    assert (mixed > 5).float().mean().item() == pytest.approx(0.1 + 0.9 * 0.047, abs=0.005)
    only = EDMLoss(high_share=1.0).sample_sigma(100000, g()).log()  # log-uniform over [5, 80]
    assert only.min().item() >= torch.tensor(5.0).log().item() and only.max().item() <= torch.tensor(80.0).log().item()
    assert only.mean().item() == pytest.approx(torch.tensor(20.0).log().item(), abs=0.01)  # ln 20 is the midpoint
