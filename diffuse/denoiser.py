"""The denoiser D(x, sigma, cond) -> x0 and everything about parameterization.

All sampling math works in sigma space (Karras et al. 2022, "EDM"): x = y + sigma * n with y the
clean image and n ~ N(0, I). A raw network F is turned into a denoiser by preconditioning
(EDM eq. 7):  D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)).
The eps-, v- and x0-prediction parameterizations differ only in c_skip and c_out, so they are
converted here, in this module and nowhere else; no sampler ever asks what a network predicts.
"""

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from .schedules import SIGMA_MAX


class DenoiserFn(Protocol):
    """What every sampler calls: the expected clean image E[y | x, sigma, cond]."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Precond:
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def preconditioning(kind: str, sigma: torch.Tensor, sigma_data: float) -> Precond:
    """Scalings for each parameterization, EDM table 1 and appendix B.6.

    edm: F predicts a blend of clean image and noise with unit variance for every sigma.
    eps: F predicts the noise n (DDPM, Ho et al. 2020, in VE form): D = x - sigma F.
    v:   F predicts v = alpha n - beta y (Salimans & Ho 2022, sec. 4 and appendix D), whose
         sigma-space form is EDM's scaling with c_out negated.
    x0:  F predicts the clean image directly.
    """
    s2, d2 = sigma ** 2, sigma_data ** 2
    c_in = 1 / torch.sqrt(s2 + d2)
    c_noise = torch.log(sigma.clamp(min=1e-20)) / 4
    if kind == "edm":
        c_skip, c_out = d2 / (s2 + d2), sigma * sigma_data / torch.sqrt(s2 + d2)
    elif kind == "eps":
        c_skip, c_out = torch.ones_like(sigma), -sigma
    elif kind == "v":
        # With alpha = sigma_data / sqrt(s2 + d2) and beta = sigma / sqrt(s2 + d2), the VP latent is
        # z = c_in x * sigma_data and y = alpha z - beta sigma_data v, i.e. c_skip x + c_out v below.
        c_skip, c_out = d2 / (s2 + d2), -sigma * sigma_data / torch.sqrt(s2 + d2)
    elif kind == "x0":
        c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
    else:
        raise ValueError(f"unknown parameterization {kind!r}: choose edm, eps, v or x0")
    return Precond(c_skip, c_out, c_in, c_noise)


PARAMETERIZATIONS = ("edm", "eps", "v", "x0")


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """Wraps a raw network F(x_in, c_noise, cond) into D(x, sigma, cond) -> x0."""

    def __init__(self, net: nn.Module, parameterization: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}")
        self.net = net
        self.parameterization = parameterization
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        p = preconditioning(self.parameterization, sigma, self.sigma_data)
        f = self.net(x * _bcast(p.c_in, x), p.c_noise, cond)
        return _bcast(p.c_skip, x) * x + _bcast(p.c_out, x) * f.to(x.dtype)


def eps_from_x0(x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The noise implied by a clean-image estimate: n = (x - x0) / sigma."""
    return (x - x0) / _bcast(torch.as_tensor(sigma, dtype=x.dtype).reshape(-1), x)


def x0_from_eps(x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return x - _bcast(torch.as_tensor(sigma, dtype=x.dtype).reshape(-1), x) * eps


def alphas_cumprod_to_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A DDPM timestep t with alpha_bar_t maps to sigma = sqrt((1 - alpha_bar) / alpha_bar)
    (EDM appendix C.2: the VP process x_t = sqrt(a) y + sqrt(1-a) n is x_t/sqrt(a) = y + sigma n)."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


@dataclass
class EDMLoss:
    """EDM training loss (Karras et al. 2022, eq. 8 and table 1):
    ln(sigma) ~ N(P_mean, P_std^2), loss = lambda(sigma) ||D(y + sigma n, sigma) - y||^2 with
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, which makes the network's
    effective target have unit variance at every noise level."""

    p_mean: float = -1.2  # mean of ln(sigma)
    p_std: float = 1.2    # standard deviation of ln(sigma)
    sigma_data: float = 0.5
    high_share: float = 0.0                   # share of sigmas drawn log-uniformly from high_range instead
    high_range: tuple[float, float] = (5.0, SIGMA_MAX)

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = (torch.randn(n, generator=generator) * self.p_std + self.p_mean).exp()
        if self.high_share > 0:
            # Why: samplers start at SIGMA_MAX = 80, where the log-normal above almost never draws
            # (P(sigma > 20) = 0.2% at P_mean -0.4). Untrained there, the network's first guesses
            # follow the start noise instead of the prompt, and the ODE keeps what they commit to
            # (a white background drawn navy, benchmarks/RESULTS.md). A log-uniform share over
            # that range teaches it; no extra draws when the share is 0, so older runs replay.
            pick = torch.rand(n, generator=generator) < self.high_share
            lo, hi = map(math.log, self.high_range)
            high = (lo + (hi - lo) * torch.rand(n, generator=generator)).exp()
            sigma = torch.where(pick, high, sigma)
        return sigma

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def __call__(self, denoiser: Callable, y: torch.Tensor, cond, sigma: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
        """Per-example loss; sigma and noise are drawn by the caller so that training is replayable."""
        x = y + _bcast(sigma, y) * noise
        d = denoiser(x, sigma, cond)
        per_pixel = _bcast(self.weight(sigma), y) * (d.float() - y) ** 2
        return per_pixel.flatten(1).mean(1)
