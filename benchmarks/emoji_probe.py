"""Does an emoji model's denoiser use the concept words, and at which noise level?

    .venv/bin/python benchmarks/emoji_probe.py [--model emoji] [--per-style 64] [--sigmas 0.5 1 2 5 10]

The emoji counterpart of prompt_probe.py. Real pictures of seen (concept, style) pairs (the first
--per-style of each style in `diffuse eval`'s order) are noised to a fixed sigma and denoised in
one pass, D(x + sigma n; sigma, c), with three prompts in the evaluator's template: the picture's
own ("NAME, STYLE style"), another seen concept's in the same style, and the empty prompt. The
emoji evaluator's reader reads each output's concept (top 5 among all concepts), and the squared
error to the clean picture is the training loss's own measure. A denoiser that knows a concept
from its words keeps it more often, and errs less, with its own prompt than with another's, and
at high noise draws the other prompt's concept; one that ignores the words scores alike with all
three prompts. Training is where such a gap comes from, so this separates "the network has not
learned the words" from "the sampler or guidance loses them".
"""

import argparse

import torch

from diffuse import Pipeline
from diffuse.emoji import cached_emoji_folder
from diffuse.emoji_eval import (STYLES, TOP_K, emoji_prompts, load_emoji_reader, load_emoji_set, load_pictures,
                                logits, topk_hits)
from diffuse.evaluation import features


def probe_prompts(eset, per_style: int):
    """The seen prompts, and for each the prompt of the next seen pair of its style (a wrong one)."""
    seen = [p for p in emoji_prompts(eset, STYLES, per_style) if p.group == "seen"]
    wrong = []
    for p in seen:
        mates = [q for q in seen if q.spec["style"] == p.spec["style"]]
        wrong.append(mates[(mates.index(p) + 1) % len(mates)])
    return seen, wrong


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji", help="an emoji model (default: the bundled one)")
    ap.add_argument("--per-style", type=int, default=64, help="seen pairs per style (default: 64)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0, 10.0])
    ap.add_argument("--seed", type=int, default=1, help="seed of the added noise (default: 1)")
    a = ap.parse_args()
    pipe = Pipeline.load(a.model, watermark=False)
    model = pipe.model
    eset = load_emoji_set(cached_emoji_folder(model.image_size, progress=True))
    reader, _ = load_emoji_reader(eset, model.image_size, print)
    seen, wrong = probe_prompts(eset, a.per_style)
    x0 = load_pictures(eset, [p.spec for p in seen])
    own = torch.tensor([p.target["concept"] for p in seen])
    other = torch.tensor([q.target["concept"] for q in wrong])
    conds = {"own": model.encode([p.prompt for p in seen]), "wrong": model.encode([q.prompt for q in wrong]),
             "empty": model.encode([""] * len(seen))}
    print(f"model {pipe.name} ({pipe.model_hash[:12]}), {len(seen)} real pictures of seen pairs, one denoiser pass, "
          f"concept read top {TOP_K}")
    print("| sigma | own concept, own prompt | own concept, wrong prompt | the wrong prompt's concept "
          "| own concept, empty prompt | squared error own / wrong / empty |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sigma in a.sigmas:
        noisy = x0 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(a.seed)) * sigma
        outs = {k: model(noisy, torch.full((len(x0),), sigma), c) for k, c in conds.items()}
        scores = {k: logits(reader, features(reader, o.clamp(-1, 1)))["concept"] for k, o in outs.items()}
        rate = lambda k, target: topk_hits(scores[k], target, TOP_K).float().mean().item()
        err = {k: (o - x0).square().mean().item() for k, o in outs.items()}
        print(f"| {sigma:g} | {rate('own', own):.0%} | {rate('wrong', own):.0%} | {rate('wrong', other):.0%} | "
              f"{rate('empty', own):.0%} | {err['own']:.4f} / {err['wrong']:.4f} / {err['empty']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
