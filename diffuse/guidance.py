"""Guidance as a denoiser wrapper, so that it composes with every sampler.

Classifier-free guidance (Ho & Salimans 2022, eq. 6, written in x0 space):
    D_cfg = D(x | uncond) + w (D(x | cond) - D(x | uncond))
w = 1 is the plain conditional model (the unconditional pass is skipped), w = 0 the unconditional
one. A negative prompt is simply the text whose encoding stands in for `uncond`.
"""

import dataclasses

import torch

from .errors import RequestError


def cat_cond(a, b):
    """Stack two conditionings along the batch (tensors, None, or objects with `.cat`)."""
    if a is None and b is None:
        return None
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    return a.cat(b)


class CFGDenoiser:
    def __init__(self, denoiser, uncond, scale: float):
        if not scale >= 0:  # also rejects NaN
            raise RequestError(f"guidance must be >= 0, got {scale}")
        self.denoiser, self.uncond, self.scale = denoiser, uncond, float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        if self.scale == 1:
            return self.denoiser(x, sigma, cond)
        if self.scale == 0:
            return self.denoiser(x, sigma, self.uncond)
        # One batched pass for both predictions: cheaper than two on every backend.
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond(cond, self.uncond))
        c, u = both.chunk(2)
        return torch.lerp(u, c, self.scale)


class GuidanceInput:
    """Guidance for a distilled student that takes the scale as an input (Meng et al. 2023,
    distill.py): one pass at the scale, against the empty prompt it was distilled with."""

    def __init__(self, denoiser, scale: float):
        self.denoiser, self.scale = denoiser, float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        w = torch.full((x.shape[0],), self.scale, dtype=x.dtype, device=x.device)
        return self.denoiser(x, sigma, dataclasses.replace(cond, guidance=w))
