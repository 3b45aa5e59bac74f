"""Samplers: stateless functions that integrate the probability-flow ODE (or its SDE) in sigma space.

Every sampler has the signature
    sample(denoiser, x, sigmas, cond=None, *, noise=None, callback=None) -> x0
where `x` is pure noise already scaled by sigmas[0] (or a partly noised image, for img2img),
`sigmas` a descending schedule ending in 0, and `noise()` returns fresh N(0, I) noise shaped like x
(stochastic samplers only; pass a per-image seeded source to make images batch-independent).
`callback` receives a `Step` after every denoiser evaluation of a step.
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import RequestError

NoiseFn = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """What a sampler reports after each step: for progress bars, live previews and explanations."""

    index: int               # 0-based step number
    total: int               # number of steps in this run
    x: torch.Tensor          # the current noisy image x_i, at noise level `sigma`
    sigma: float             # the noise level of `x`
    sigma_next: float        # the noise level this step moves to
    denoised: torch.Tensor   # the denoiser's current guess of the clean image


def _ones(x: torch.Tensor) -> torch.Tensor:
    return x.new_ones(x.shape[0])


def _report(callback, i, sigmas, x, denoised):
    if callback is not None:
        callback(Step(i, len(sigmas) - 1, x, float(sigmas[i]), float(sigmas[i + 1]), denoised))


def _default_noise(x: torch.Tensor) -> NoiseFn:
    return lambda: torch.randn_like(x)


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3 with
    sigma(t) = t)."""
    return (x - denoised) / sigma


@torch.no_grad()
def sample_euler(denoiser, x, sigmas, cond=None, *, noise=None, callback=None):
    """Euler's method on the PF-ODE: one denoiser evaluation per step, first order."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * _ones(x), cond)
        _report(callback, i, sigmas, x, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])  # Euler step
    return x


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, cond=None, *, noise=None, callback=None):
    """EDM algorithm 1 (deterministic, S_churn = 0): Euler step plus the trapezoidal 2nd-order
    correction, skipped on the final step to sigma = 0 where the derivative is undefined."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s * _ones(x), cond)
        _report(callback, i, sigmas, x, denoised)
        d = to_d(x, s, denoised)
        x_next = x + d * (s_next - s)  # Euler step (alg. 1, line 8)
        if s_next > 0:  # 2nd order correction (alg. 1, lines 9-11)
            d_next = to_d(x_next, s_next, denoiser(x_next, s_next * _ones(x), cond))
            x_next = x + (d + d_next) / 2 * (s_next - s)
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, sigmas, cond=None, *, noise=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2) in sigma space, with t = -log(sigma):
    a multistep second-order solver of the data-prediction ODE, one evaluation per step."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s * _ones(x), cond)
        _report(callback, i, sigmas, x, denoised)
        if s_next == 0:  # the last step lands on the current estimate
            x = denoised
            continue
        h = math.log(s) - math.log(s_next)
        if old_denoised is None:
            d = denoised  # first step: DPM-Solver++(1), i.e. DDIM
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised  # alg. 2, line 6
        x = (s_next / s) * x - math.expm1(-h) * d  # exact integration of the linear part
        old_denoised, h_last = denoised, h
    return x


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split a step from sigma to sigma_next into a deterministic move to sigma_down and fresh
    noise of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2. eta = 1 is the DDPM
    posterior (ancestral sampling), eta = 0 is deterministic DDIM (Song et al. 2021, eq. 16, in
    the variance-exploding form)."""
    if sigma_next == 0 or eta == 0:
        return float(sigma_next), 0.0
    up = eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2)
    up = min(float(sigma_next), up)
    return math.sqrt(sigma_next ** 2 - up ** 2), up


@torch.no_grad()
def sample_ddim(denoiser, x, sigmas, cond=None, *, noise=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12). In sigma space its update is x_next = x0 + sigma_down *
    eps + sigma_up * z with eps = (x - x0) / sigma: an Euler step to sigma_down plus fresh noise.
    eta = 0 is deterministic (and equals Euler on the PF-ODE); eta = 1 is DDPM's ancestral sampler."""
    if eta < 0:
        raise RequestError(f"eta must be >= 0, got {eta}")
    noise = noise or _default_noise(x)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, s * _ones(x), cond)
        _report(callback, i, sigmas, x, denoised)
        down, up = ancestral_step(s, s_next, eta)
        x = denoised + to_d(x, s, denoised) * down
        if up > 0:
            x = x + noise() * up
    return x


def sample_euler_ancestral(denoiser, x, sigmas, cond=None, *, noise=None, callback=None, eta: float = 1.0):
    """Euler ancestral (k-diffusion): the same update as DDIM with eta = 1 by default; new noise
    enters at every step, so few-step results differ more between samplers but forgive errors."""
    return sample_ddim(denoiser, x, sigmas, cond, noise=noise, callback=callback, eta=eta)


@torch.no_grad()
def sample_consistency(denoiser, x, sigmas, cond=None, *, noise=None, callback=None):
    """Multistep consistency sampling (Song et al. 2023, alg. 1): the model's clean image at each
    level, noised afresh to the next, x_{i+1} = f(x_i, sigma_i) + sigma_{i+1} z, and the last
    clean image as it is. The paper's sqrt(tau^2 - eps^2) is sigma_{i+1} here: our denoiser's
    boundary eps = sigma_min = 0.002 is far below any level a few-step grid visits. Made for a
    consistency-distilled student (distill.py); any denoiser runs it, as a fully stochastic sampler."""
    noise = noise or _default_noise(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * _ones(x), cond)
        _report(callback, i, sigmas, x, denoised)
        x = denoised + noise() * sigmas[i + 1] if sigmas[i + 1] > 0 else denoised
    return x


SAMPLERS: dict[str, Callable] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "ddim": sample_ddim,
    "euler_ancestral": sample_euler_ancestral,
    "consistency": sample_consistency,
}
STOCHASTIC = {"ddim", "euler_ancestral"}


def get_sampler(name: str) -> Callable:
    if name not in SAMPLERS:
        raise RequestError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


class SeededNoise:
    """Noise for a batch where image k draws only from its own generator seeded with seeds[k],
    so every image is the same whether it is generated alone or in any batch (EDM's
    StackedRandomGenerator idea). Call `initial(sigma)` once, then the object itself gives the
    per-step noise that stochastic samplers ask for."""

    def __init__(self, seeds: list[int], shape: tuple[int, ...], device="cpu", dtype=torch.float32):
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> torch.Tensor:
        # Drawn on the CPU so that a seed means the same image on every device.
        x = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
        return x.to(self.device, self.dtype)

    def initial(self, sigma: float) -> torch.Tensor:
        return self() * sigma
