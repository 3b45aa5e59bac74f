"""Prompt adherence and Frechet distance against the number of network evaluations (NFE).

    .venv/bin/python benchmarks/steps_vs_quality.py [--model DIR] [--samplers ...] [--nfe 4 6 10 20 50 100]
        [--guidance 1.5 3 5] [--per-prompt 2]

Every setting is scored by `diffuse eval`'s reader on the same prompts and seeds. One evaluation
is one pass of the network (with guidance the conditional and unconditional halves run as one
batched pass); Heun spends two per step except the last, so it gets (NFE + 1) // 2 steps. Prints a
markdown table for benchmarks/RESULTS.md.
"""

import argparse
import time

from diffuse import Pipeline
from diffuse.evaluation import evaluate
from diffuse.samplers import SAMPLERS


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint (default: the bundled model)")
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 10, 20, 50, 100])
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    ap.add_argument("--per-prompt", type=int, default=2)
    a = ap.parse_args()
    pipe = Pipeline.load(a.model, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
    print(f"model {pipe.name} ({pipe.model_hash[:12]}), {a.per_prompt} images per prompt")
    print("| sampler | guidance | NFE | steps | all seen | all held-out | shape | colour | background | size "
          "| Frechet (floor) | diversity | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for g in a.guidance:
        for sampler in a.samplers:
            for nfe in a.nfe:
                steps = steps_for(sampler, nfe)
                t0 = time.monotonic()
                r = evaluate(pipe, per_prompt=a.per_prompt, steps=steps, sampler=sampler, guidance=g)
                seen, held = r["match"]["seen"], r["match"]["held-out"]
                print(f"| {sampler} | {g:g} | {nfe} | {steps} | {seen['all']:.1%} | {held['all']:.1%} | "
                      f"{seen['shape']:.1%} | {seen['color']:.1%} | {seen['background']:.1%} | {seen['size']:.1%} | "
                      f"{r['frechet']:.2f} ({r['frechet_floor']:.2f}) | {r.get('diversity', float('nan')):.2f} | "
                      f"{time.monotonic() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
