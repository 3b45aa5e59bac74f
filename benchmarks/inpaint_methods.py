"""Which inpainting method? Measured with the exact denoiser of a finite dataset (no training).

    .venv/bin/python benchmarks/inpaint_methods.py

Data: K random training images (3x8x8). Each trial masks a random half (left/right/top/bottom)
of one training image and inpaints it; the ideal answer is that image (the known half
identifies it). Reported: the share of fills that land on the right image (within 0.05 max
error), the mean absolute error of the fill, and the seam: the mean jump across the mask
border against the same jump in the true image.

Methods:
  renoise-fresh  known region re-noised to the current sigma with fresh noise (from the image's
                 own generator) at every evaluation: diffuse's InpaintDenoiser
  renoise-fixed  the same, re-using the image's starting noise every time
  composite-only the unconditioned sample pasted into the hole at the end (the naive baseline)
"""

import torch

from diffuse.editing import InpaintDenoiser, composite
from diffuse.samplers import SAMPLERS, SeededNoise
from diffuse.schedules import karras_sigmas


class Finite:
    def __init__(self, points):
        self.points = points

    def __call__(self, x, sigma, cond=None):
        d2 = ((x[:, None].double() - self.points[None].double()) ** 2).flatten(2).sum(-1)
        w = torch.softmax(-d2 / (2 * sigma.double()[:, None] ** 2), dim=1)
        return torch.einsum("bk,k...->b...", w, self.points.double()).float()


def half_masks(n, g):
    masks = torch.zeros(n, 3, 8, 8)
    for i, side in enumerate(torch.randint(0, 4, (n,), generator=g).tolist()):
        sl = [(slice(None), slice(0, 4)), (slice(None), slice(4, 8)), (slice(0, 4), slice(None)), (slice(4, 8), slice(None))][side]
        masks[i, :, sl[0], sl[1]] = 1
    return masks


def seam(img, mask):
    """Mean absolute jump between horizontally and vertically adjacent pixels that straddle the border."""
    dx = (img[..., 1:] - img[..., :-1]).abs()[(mask[..., 1:] != mask[..., :-1])]
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs()[(mask[..., 1:, :] != mask[..., :-1, :])]
    return torch.cat([dx, dy]).mean().item()


def run(method, finite, target, mask, sampler, steps, seeds):
    noise = SeededNoise(seeds, target.shape[1:])
    start = noise()
    init = torch.where(mask > 0, torch.zeros_like(target), target)
    den = {"renoise-fixed": InpaintDenoiser(finite, init, mask, lambda: start),
           "renoise-fresh": InpaintDenoiser(finite, init, mask, noise),
           "composite-only": finite}[method]
    x = SAMPLERS[sampler](den, start * 80.0, karras_sigmas(steps), noise=noise)
    return composite(x, init, mask)


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    points = torch.rand(32, 3, 8, 8, generator=g) * 2 - 1
    finite = Finite(points)
    n = 256
    which = torch.randint(0, 32, (n,), generator=g)
    target, mask = points[which], half_masks(n, g)
    print("| method | sampler | steps | right image | fill MAE | seam / true seam |")
    print("| --- | --- | --- | --- | --- | --- |")
    true_seam = seam(target, mask)
    for method in ("renoise-fresh", "renoise-fixed", "composite-only"):
        for sampler, steps in (("dpmpp_2m", 20), ("euler", 50), ("euler_ancestral", 50)):
            out = run(method, finite, target, mask, sampler, steps, list(range(n)))
            err = (out - target).abs().flatten(1).max(1).values
            mae = ((out - target).abs() * mask).sum() / mask.sum()
            print(f"| {method} | {sampler} | {steps} | {(err < 0.05).float().mean().item():.1%} | {mae.item():.3f} | "
                  f"{seam(out, mask) / true_seam:.2f} |", flush=True)


if __name__ == "__main__":
    main()
