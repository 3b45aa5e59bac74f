"""Which inpainting method, and which sampler for it? Measured with the exact denoiser of a finite
dataset (no training).

    .venv/bin/python benchmarks/inpaint_methods.py [--trials 1024]

Data: 32 random training images (3x8x8). Each trial masks a random half (left/right/top/bottom)
of one training image and inpaints it; the ideal answer is that image (the known half
identifies it). Reported: the share of fills that land on the right image (within 0.05 max
error), the mean absolute error of the fill, and the seam: the mean jump across the mask
border against the same jump in the true image. NFE: denoiser evaluations per image.

Methods:
  renoise-fresh     known region re-noised to the current sigma with fresh noise (from the image's
                    own generator) at every evaluation: diffuse's InpaintDenoiser
  renoise-per-step  the same with one noise per step (per sigma): Heun's two evaluations of a
                    step's end share it. Samplers with one evaluation per step draw exactly as
                    renoise-fresh does, so only Heun is shown
  renoise-fixed     the same, re-using the image's starting noise every time
  composite-only    the unconditioned sample pasted into the hole at the end (the naive baseline)
"""

import argparse

import torch

from diffuse.editing import InpaintDenoiser, composite
from diffuse.samplers import SAMPLERS, SeededNoise
from diffuse.schedules import karras_sigmas

ROWS = ([("renoise-fresh", s, n) for s in SAMPLERS for n in (10, 20, 50)]
        + [("renoise-per-step", "heun", n) for n in (10, 20)]
        + [(m, s, 20) for m in ("renoise-fixed", "composite-only") for s in ("euler", "dpmpp_2m", "euler_ancestral")])


class Finite:
    def __init__(self, points):
        self.points = points

    def __call__(self, x, sigma, cond=None):
        d2 = ((x[:, None].double() - self.points[None].double()) ** 2).flatten(2).sum(-1)
        w = torch.softmax(-d2 / (2 * sigma.double()[:, None] ** 2), dim=1)
        return torch.einsum("bk,k...->b...", w, self.points.double()).float()


class Counted:
    """The denoiser, counting evaluations of one image."""

    def __init__(self, denoiser):
        self.denoiser, self.nfe = denoiser, 0

    def __call__(self, x, sigma, cond=None):
        self.nfe += 1
        return self.denoiser(x, sigma, cond)


class PerStepNoise:
    """One noise per sigma: a step's evaluations at the same noise level see the same noise."""

    def __init__(self, noise):
        self.noise, self.drawn = noise, {}

    def __call__(self, sigma):
        key = round(float(sigma.reshape(-1)[0]), 6)
        if key not in self.drawn:
            self.drawn[key] = self.noise()
        return self.drawn[key]


class PerStepInpaint(InpaintDenoiser):
    def __call__(self, x, sigma, cond=None):
        step_noise = self.noise
        self.noise = lambda: step_noise(sigma)
        try:
            return super().__call__(x, sigma, cond)
        finally:
            self.noise = step_noise


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
    """The fills and the evaluations each image took."""
    noise = SeededNoise(seeds, target.shape[1:])
    start = noise()
    init = torch.where(mask > 0, torch.zeros_like(target), target)
    counted = Counted(finite)
    den = {"renoise-fixed": lambda: InpaintDenoiser(counted, init, mask, lambda: start),
           "renoise-fresh": lambda: InpaintDenoiser(counted, init, mask, noise),
           "renoise-per-step": lambda: PerStepInpaint(counted, init, mask, PerStepNoise(noise)),
           "composite-only": lambda: counted}[method]()
    x = SAMPLERS[sampler](den, start * 80.0, karras_sigmas(steps), noise=noise)
    return composite(x, init, mask), counted.nfe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1024)
    a = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    points = torch.rand(32, 3, 8, 8, generator=g) * 2 - 1
    finite = Finite(points)
    which = torch.randint(0, 32, (a.trials,), generator=g)
    target, mask = points[which], half_masks(a.trials, g)
    print("| method | sampler | steps | NFE | right image | fill MAE | seam / true seam |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    true_seam = seam(target, mask)
    for method, sampler, steps in ROWS:
        out, nfe = run(method, finite, target, mask, sampler, steps, list(range(a.trials)))
        err = (out - target).abs().flatten(1).max(1).values
        mae = ((out - target).abs() * mask).sum() / mask.sum()
        print(f"| {method} | {sampler} | {steps} | {nfe} | {(err < 0.05).float().mean().item():.1%} | {mae.item():.3f} | "
              f"{seam(out, mask) / true_seam:.2f} |", flush=True)


if __name__ == "__main__":
    main()
