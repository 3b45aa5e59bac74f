"""Convergence order of each sampler against the exact solution, no training.

    .venv/bin/python benchmarks/sampler_order.py

Data N(0, s^2) with s = 0.5 has the ideal denoiser D(x, sigma) = s^2 / (s^2 + sigma^2) x, and the
probability-flow ODE from sigma_max = 80 has the exact end point x * s / sqrt(s^2 + 80^2). Printed:
the largest error over 4,096 values at 16..128 Karras steps, and the observed order
log2(err(N) / err(2N)) between the last two.
"""

import math

import torch

from diffuse.samplers import get_sampler
from diffuse.schedules import karras_sigmas

S, SIGMA_MAX = 0.5, 80.0


def gaussian_denoiser(x, sigma, cond=None):
    return S ** 2 / (S ** 2 + sigma.reshape(-1, 1, 1, 1) ** 2) * x


def main():
    x = torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SIGMA_MAX
    exact = x * S / math.sqrt(S ** 2 + SIGMA_MAX ** 2)
    steps = (16, 32, 64, 128)
    print("| sampler | " + " | ".join(f"{n} steps" for n in steps) + " | observed order |")
    print("| --- |" + " --- |" * (len(steps) + 1))
    for name in ("euler", "ddim", "heun", "dpmpp_2m"):
        errs = [(get_sampler(name)(gaussian_denoiser, x, karras_sigmas(n).double()) - exact).abs().max().item()
                for n in steps]
        print(f"| {name} | " + " | ".join(f"{e:.2e}" for e in errs) + f" | {math.log2(errs[-2] / errs[-1]):.2f} |")


if __name__ == "__main__":
    main()
