"""Which words of the prompt does the denoiser use, at which noise level?

    .venv/bin/python benchmarks/prompt_probe.py [--model DIR] [--images 120] [--sigmas 0.6 1 1.5 2 3]
        [--attributes shape color background]

Real `shapes` images are noised to a fixed sigma and denoised in one pass, D(x + sigma n; sigma, c),
with three prompts: the image's own caption, the same caption with one attribute (shape, colour
or background) swapped for another value, and the empty prompt. `diffuse eval`'s reader then reads that
attribute off each output. A denoiser that uses the word reads the truth more often with the right
prompt than with the wrong one, and at high noise follows the wrong prompt; one that ignores the
word gives the same figures for all three prompts. Sampling cannot draw what the denoiser ignores,
so this locates a failed attribute in training, not in the sampler or guidance. The last column
names the value the right prompt keeps least often: at the sigmas where sampling starts (5-80),
a background the denoiser gets wrong there is one the ODE carries to the end.
"""

import argparse
import random

import torch

from diffuse import Pipeline
from diffuse.data import BACKGROUNDS, COLORS, HELD_OUT, SHAPES, draw_shape, pil_to_tensor, render_shape, shape_specs
from diffuse.evaluation import load_reader, read

VALUES = {"shape": list(SHAPES), "color": list(COLORS), "background": list(BACKGROUNDS)}


def probe_set(attribute: str, n: int, seed: int = 0):
    """n real images cycling through the attribute's values, with their captions and a caption
    that names another value (each other value equally often)."""
    rng, specs, values = random.Random(seed), shape_specs(), VALUES[attribute]
    images, right, wrong, truth, named, fixed = [], [], [], [], [], []
    for i in range(n):
        v = values[i % len(values)]
        spec = rng.choice([s for s in specs if getattr(s, attribute) == v])
        other = values[(i + 1 + (i // len(values)) % (len(values) - 1)) % len(values)]
        caption = "a {size} {color} {shape} on a {background} background"
        images.append(pil_to_tensor(render_shape(spec, 32, rng)))
        right.append(spec.caption(caption))
        wrong.append(spec.caption(caption.replace("{%s}" % attribute, other)))
        truth.append(values.index(v))
        named.append(values.index(other))
        fixed.append((attributes(spec), attributes(spec, attribute, other)))
    return torch.stack(images), right, wrong, torch.tensor(truth), torch.tensor(named), fixed


class IdealDenoiser:
    """The exact denoiser of the training set (`--ideal`): for Gaussian noise around a finite set of
    images, E[x0 | x, sigma, caption] is the softmax(-|x - x_i|^2 / 2 sigma^2)-weighted mean of the
    training images x_i whose attributes the caption names (position is never named, so it stays
    free). What it gains from a word is the most any trained network could gain from it."""

    def __init__(self, n: int = 20000, seed: int = 0):
        drawn = [draw_shape(i, 32, seed, HELD_OUT) for i in range(n)]
        self.images = torch.stack([pil_to_tensor(img) for img, _, _ in drawn]).flatten(1).double()
        self.specs = [spec for _, _, spec in drawn]
        self.pools: dict[tuple, list[int]] = {}

    def pool(self, fixed: dict) -> list[int]:
        key = tuple(sorted(fixed.items()))
        if key not in self.pools:
            self.pools[key] = [i for i, s in enumerate(self.specs) if all(getattr(s, a) == v for a, v in fixed.items())]
        return self.pools[key]

    def __call__(self, x: torch.Tensor, sigma: float, captions: list) -> torch.Tensor:
        out = torch.empty_like(x)
        # Squared distances to every training image, once for the batch (one matrix product).
        logits = -torch.cdist(x.flatten(1).double(), self.images) ** 2 / (2 * sigma ** 2)
        for k, fixed in enumerate(captions):  # fixed: attribute -> value, {} for the empty prompt
            pool = self.pool(fixed)
            if not pool:  # a held-out pair: no training image has it
                out[k] = float("nan")
                continue
            out[k] = (torch.softmax(logits[k, pool], 0) @ self.images[pool]).view_as(x[k]).float()
        return out


def attributes(spec, attribute: str | None = None, value: str | None = None) -> dict:
    fixed = {a: getattr(spec, a) for a in ("shape", "color", "size", "background")}
    if attribute:
        fixed[attribute] = value
    return fixed


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint trained on shapes (default: the bundled model)")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.6, 1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--attributes", nargs="+", choices=list(VALUES), default=["shape", "color"])
    ap.add_argument("--ideal", action="store_true",
                    help="probe the exact denoiser of the bundled model's training set instead of a network "
                         "(images whose right or wrong caption names a held-out pair are left out)")
    a = ap.parse_args()
    reader, _ = load_reader("shapes", 32)
    if a.ideal:
        ideal = IdealDenoiser()
        print(f"the ideal denoiser of shapes (20,000 images, seed 0, held-out pairs left out), {a.images} real "
              "images per attribute")
    else:
        pipe = Pipeline.load(a.model, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
        model = pipe.model
        print(f"model {pipe.name} ({pipe.model_hash[:12]}), {a.images} real images per attribute, one denoiser pass")
    print("| attribute | sigma | read true, right prompt | read true, wrong prompt | read the wrong prompt's value "
          "| read true, empty prompt | weakest value, right prompt |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for attribute in a.attributes:
        x0, right, wrong, truth, named, fixed = probe_set(attribute, a.images)
        if a.ideal:
            conds = {"right": [f[0] for f in fixed], "wrong": [f[1] for f in fixed], "empty": [{}] * len(fixed)}
            denoise = ideal
        else:
            conds = {k: model.encode(c) for k, c in (("right", right), ("wrong", wrong), ("empty", [""] * len(right)))}
            denoise = lambda x, sigma, c: model(x, torch.full((len(x),), sigma), c)
        for sigma in a.sigmas:
            noisy = x0 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)) * sigma
            outs = {k: denoise(noisy, sigma, c) for k, c in conds.items()}
            keep = torch.stack([o.flatten(1).isfinite().all(1) for o in outs.values()]).all(0)
            got = {k: read(reader, o[keep].clamp(-1, 1))[attribute] for k, o in outs.items()}
            rate = lambda k, target: (got[k] == target[keep]).float().mean().item()
            hits = (got["right"] == truth[keep]).float()
            by_value = {v: hits[truth[keep] == i].mean().item() for i, v in enumerate(VALUES[attribute])
                        if (truth[keep] == i).any()}
            weakest = min(by_value, key=by_value.get)
            print(f"| {attribute} | {sigma:g} | {rate('right', truth):.0%} | {rate('wrong', truth):.0%} | "
                  f"{rate('wrong', named):.0%} | {rate('empty', truth):.0%} | {weakest} {by_value[weakest]:.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
