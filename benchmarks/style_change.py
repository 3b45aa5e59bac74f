"""Changing one style into another with image-to-image (issue 20, item 6).

    .venv/bin/python benchmarks/style_change.py [--model emoji] [--per-pair 16] [--out outputs/style_change]

For every ordered pair of styles (A -> B), `--per-pair` real pictures of style A whose concept also
exists in style B (chosen by SHA-256 of "concept|A|B", a fixed function of the build) go through
image-to-image (SDEdit, Meng et al. 2022) with the prompt "NAME, B style" at strengths 0.3, 0.5,
0.7 and 0.9. The emoji evaluator's reader (diffuse/emoji_eval.py) then says, for each result,
whether its style reads as B and whether its concept is still among the reader's top 5 of 1,646.
Strength 0 (the real picture itself) is the reference row: how often the reader takes the
untouched picture for style B (about never) and finds its concept. The reader's own limits apply
(RESULTS, "The emoji evaluator": 15.8% top-1 / 37.4% top-5 on real pictures of pairs it did not
train on), so "concept kept" is a lower bound.

Pinned: 20 steps of dpmpp_2m on the karras schedule (img2img runs the last round(strength x 20)),
guidance 2, seeds 0.. per picture, the 32 px build. Prints a Markdown table and writes one grid
(a picture per pair, strengths across) to OUT/restyle.png.
"""

import argparse
import hashlib
import itertools
import os
import platform
import time
from pathlib import Path

import torch

from diffuse.data import tensor_to_pil
from diffuse.emoji import STYLES, cached_emoji_folder
from diffuse.emoji_eval import TEMPLATE, features, load_emoji_reader, load_emoji_set, load_pictures, logits, pair_pictures, topk_hits
from diffuse.explain import labelled_strip
from diffuse.pipeline import GenerateRequest, Pipeline

STRENGTHS = (0.3, 0.5, 0.7, 0.9)
SETTINGS = dict(steps=20, sampler="dpmpp_2m", schedule="karras", guidance=2.0)


def sources(eset, a: str, b: str, n: int) -> list[tuple[dict, dict]]:
    """n (picture in style a, picture of the same concept in style b) pairs, a fixed choice."""
    pics = pair_pictures(eset.rows)
    both = [(pics[(c, a)], pics[(c, b)]) for (c, s) in pics if s == a and (c, b) in pics]
    both.sort(key=lambda p: hashlib.sha256(f"{p[0]['concept']}|{a}|{b}".encode()).hexdigest())
    return both[:n]


def read(reader, eset, images: torch.Tensor, concepts: list[str], style: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(style reads as `style`, concept among the top 5) per image."""
    scores = logits(reader, features(reader, images))
    asked = torch.tensor([eset.concepts.index(c) for c in concepts])
    return (scores["style"].argmax(1) == STYLES.index(style)), topk_hits(scores["concept"], asked, 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--per-pair", type=int, default=16)
    ap.add_argument("--out", default="outputs/style_change")
    a = ap.parse_args()
    pipe = Pipeline.load(a.model, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
    eset = load_emoji_set(cached_emoji_folder(pipe.model.image_size))
    reader, _ = load_emoji_reader(eset, pipe.model.image_size)
    start = time.perf_counter()
    rows, grid, grid_labels = {s: [0, 0, 0, 0] for s in (0.0, *STRENGTHS)}, [], []
    for a_style, b_style in itertools.permutations(STYLES, 2):
        pairs = sources(eset, a_style, b_style, a.per_pair)
        src = load_pictures(eset, [p for p, _ in pairs])
        concepts = [p["concept"] for p, _ in pairs]
        results = {0.0: src}
        for strength in STRENGTHS:
            results[strength] = torch.cat([pipe.sample(GenerateRequest(
                TEMPLATE.format(name=p["name"], style=b_style), init_image=tensor_to_pil(x), strength=strength,
                seed=k, **SETTINGS)) for k, (x, (p, _)) in enumerate(zip(src, pairs))]).cpu()
        for strength, images in results.items():
            style_ok, kept = read(reader, eset, images, concepts, b_style)
            row = rows[strength]
            row[0] += len(images)
            row[1] += style_ok.sum().item()
            row[2] += kept.sum().item()
            row[3] += (style_ok & kept).sum().item()
        grid.append([src[0]] + [results[s][0] for s in STRENGTHS])
        grid_labels.append([f"{a_style}\n{pairs[0][0]['name'][:14]}"] + [f"-> {b_style}\n{s:g}" for s in STRENGTHS])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    labelled_strip(grid, grid_labels).save(out / "restyle.png")
    print(f"# style_change: model {a.model}, {a.per_pair} pictures x 6 style pairs, {SETTINGS}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - start:.0f} s\n")
    print("| strength | images | style reads as the target | concept kept (top 5) | both |")
    print("| --- | --- | --- | --- | --- |")
    for strength, (n, style_ok, kept, both) in rows.items():
        label = "0 (the real picture)" if strength == 0 else f"{strength:g}"
        print(f"| {label} | {n} | {style_ok / n:.1%} | {kept / n:.1%} | {both / n:.1%} |")
    print(f"\ngrid: {out / 'restyle.png'} (each row: the real picture, then strengths {', '.join(map(str, STRENGTHS))})")


if __name__ == "__main__":
    main()
