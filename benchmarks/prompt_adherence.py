"""A quick prompt-adherence figure for shapes models, read off the pixels.

    .venv/bin/python benchmarks/prompt_adherence.py MODEL [MODEL ...] [--n 64] [--steps 20]

For n prompts "a large {color} {shape} on a {background} background" (attributes drawn with a
fixed seed), one image each: the background colour (median of the border) and the shape colour
(median of the pixels far from it) are matched to the nearest named colour (the reader of
benchmarks/edit_quality.py). Reports the share with the right background, the right shape
colour, and both. Shape form is not read: that needs the quality issue's trained evaluator.
"""

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from edit_quality import SAMPLING, read_colors  # noqa: E402  (dpmpp_2m at guidance 3, as the tables)

from diffuse import Pipeline  # noqa: E402
from diffuse.data import BACKGROUNDS, COLORS, SHAPES  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    rng = random.Random(0)
    prompts = [(rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))) for _ in range(a.n)]
    print("| model | background | shape colour | both |\n| --- | --- | --- | --- |")
    for model in a.models:
        pipe = Pipeline.load(model, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
        bg_ok = col_ok = both = 0
        for i, (color, shape, bg) in enumerate(prompts):
            img = pipe(f"a large {color} {shape} on a {bg} background", seed=i, steps=a.steps, **SAMPLING)[0]
            got_color, got_bg = read_colors(img)
            bg_ok += got_bg == bg
            col_ok += got_color == color
            both += got_bg == bg and got_color == color
        print(f"| {model} | {bg_ok / a.n:.0%} | {col_ok / a.n:.0%} | {both / a.n:.0%} |", flush=True)


if __name__ == "__main__":
    main()
