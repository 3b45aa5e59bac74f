"""Noise schedules: descending sigma tensors that end in exactly 0.

A schedule of `n` steps has `n + 1` entries: sigma_0 = sigma_max > ... > sigma_{n-1} = sigma_min,
then a final 0 so that the last step lands on the denoised image (Karras et al. 2022, sec. 3).
One runs its ramp down to 0 itself instead: karras0, the grid distilled students step on
(distill.py), where the grid of 2n steps holds every point of the grid of n. Two end at sigma 1
for consistency models: karras1, EDM's ramp to 1, and cm, sigma_max then a ramp from 10 to 1,
the levels consistency students sample on by default.
"""

import math

import torch

SIGMA_MIN = 0.002  # EDM defaults (Karras et al. 2022, table 1)
SIGMA_MAX = 80.0


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = 7.0) -> torch.Tensor:
    """EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).float()


def exponential_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """Steps evenly spaced in log sigma (the log-SNR uniform schedule of DPM-Solver, Lu et al. 2022)."""
    _check(n, sigma_min, sigma_max)
    steps = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    return append_zero(steps.exp()).float()


def vp_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
              beta_d: float = 19.9, beta_min: float = 0.1) -> torch.Tensor:
    """The VP-SDE schedule (Song et al. 2021) in sigma form, EDM table 1:
    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), with t uniform between the times
    at which sigma(t) equals sigma_max and sigma_min (the inverse of that formula)."""
    _check(n, sigma_min, sigma_max)

    def t_of(sigma: float) -> float:
        return (math.sqrt(beta_min ** 2 + 2 * beta_d * math.log1p(sigma ** 2)) - beta_min) / beta_d

    t = torch.linspace(t_of(sigma_max), t_of(sigma_min), n, dtype=torch.float64)
    return append_zero(torch.sqrt(torch.expm1(beta_d * t ** 2 / 2 + beta_min * t))).float()


def karras0_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0) -> torch.Tensor:
    """EDM eq. 5 with sigma_min = 0: n + 1 levels evenly spaced in sigma^(1/rho) from sigma_max to
    exactly 0 (sigma_min is not used), so that halving the steps keeps every other level
    (progressive distillation, Salimans & Ho 2022, distills 2n steps into n on one such grid)."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return (((1 - ramp) * sigma_max ** (1 / rho)) ** rho).float()


KARRAS1_LAST = 1.0


def karras1_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """Levels for a consistency model (Song et al. 2023, alg. 1: which levels multistep sampling
    visits is free; the paper picks them by greedy search), the students' default before cm:
    EDM's ramp (eq. 5, rho 7) of n levels from sigma_max down to sigma 1 (sigma_min is not used),
    then 0. On karras0 the last of 4 levels is 0.005, where a pass changes almost nothing; stopping
    at 1 spends every pass where the image still changes. Chosen among ramps ending at 0.005 to 5
    by `diffuse eval` on disjoint seeds (benchmarks/consistency_grid.py; RESULTS, "A longer
    consistency distillation, and where a consistency student stops")."""
    return karras_sigmas(n, KARRAS1_LAST, sigma_max)


CM_FIRST = 10.0


def cm_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """The levels consistency students sample on by default: sigma_max, then EDM's ramp (eq. 5,
    rho 7) of n - 1 levels from 10 down to 1 (one level: 1; sigma_min is not used), then 0. For 4
    steps 80, 10, 3.5, 1, where karras1 visits 80, 24.6, 5.9, 1: noise of std 24.6, fifty times
    the data's (0.5), buries the first pass's draft again, so that second pass decides little.
    Jumping to 10 spends the passes after the first where the shapes are decided. For 1 and 2
    steps it is karras1. Chosen by `diffuse eval` among 27 level sets (80; 10, 16 or 24.6; 3, 4.5
    or 6; 0.6, 1 or 1.5) on seeds 3, 10 and 11, and confirmed on seeds 4-9, which share no image
    with them (benchmarks/consistency_grid.py; RESULTS, "Where a consistency student's four levels
    lie")."""
    _check(n, sigma_min, sigma_max)
    if n == 1:
        rest = torch.zeros(0)
    elif n == 2:
        rest = torch.tensor([KARRAS1_LAST])
    else:
        rest = karras_sigmas(n - 1, KARRAS1_LAST, min(CM_FIRST, sigma_max))[:-1]
    return append_zero(torch.cat([torch.tensor([float(sigma_max)]), rest]))


SCHEDULES = {"karras": karras_sigmas, "exponential": exponential_sigmas, "vp": vp_sigmas, "karras0": karras0_sigmas,
             "karras1": karras1_sigmas, "cm": cm_sigmas}


def get_sigmas(name: str, n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    from .errors import RequestError
    if name not in SCHEDULES:
        raise RequestError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](n, sigma_min, sigma_max)


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    from .errors import RequestError
    if n < 1:
        raise RequestError(f"steps must be at least 1, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise RequestError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
