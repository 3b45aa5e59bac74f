"""Where a consistency student should stop between steps: the levels of multistep consistency
sampling, chosen by `diffuse eval` (issue 21, the 4-step target).

    .venv/bin/python benchmarks/consistency_grid.py MODEL [--steps 4] [--seeds 3]
        [--schedules karras0] [--last 0.005 0.05 0.3 1 2 5] [--rho 7] [--levels 80,10,3,1 ...]

Multistep consistency sampling (Song et al. 2023, alg. 1) denoises in one pass, adds fresh noise
at the next level, and denoises again; which levels it visits is free, and the paper picks them
by a greedy search on FID. This script scores candidate levels with `diffuse eval`'s scoring at
each --seeds (108 prompts x 2, guidance 2, unmarked unless --watermark, as `diffuse eval`
draws): the schedules named by --schedules (karras0, the grid progressive distillation needs,
whose last of 4 levels, 0.0049, changes almost nothing; karras1; cm), then the family "EDM's
ramp (rho 7, or each --rho) of `--steps` levels from 80 down to LAST, then 0", i.e. `karras` with
sigma_min = LAST, for each LAST in --last, then each explicit --levels set. Choose on some
seeds, confirm on others: two seeds share no image (evaluation.eval_seed).
"""

import argparse
import json
import platform
import time

import torch

from diffuse import schedules
from diffuse.evaluation import evaluate
from diffuse.pipeline import Pipeline

GUIDANCE = 2.0  # diffuse eval's default, pinned


def ramp_to(last: float, rho: float):
    """The schedule `karras` with sigma_min = last: `steps` levels from sigma_max to `last`, then 0."""
    return lambda n, sigma_min, sigma_max: schedules.karras_sigmas(n, last, sigma_max, rho)


def fixed(levels: list[float]):
    """The given levels (from sigma_max down), then 0; for that many steps only."""
    def make(n, sigma_min, sigma_max):
        if n != len(levels):
            raise SystemExit(f"--levels {levels} are {len(levels)} steps, asked for {n}")
        return schedules.append_zero(torch.tensor(levels, dtype=torch.float64)).float()
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, nargs="*", default=[4])
    ap.add_argument("--seeds", type=int, nargs="*", default=[3])
    ap.add_argument("--last", type=float, nargs="*", default=[0.005, 0.05, 0.3, 1.0, 2.0, 5.0])
    ap.add_argument("--rho", type=float, nargs="*", default=[7.0], help="the ramps' curvature (EDM's rho; 7)")
    ap.add_argument("--schedules", nargs="*", default=["karras0"], choices=list(schedules.SCHEDULES),
                    help="candidates by name (the ramps and --levels come after them)")
    ap.add_argument("--levels", nargs="*", default=[], metavar="S1,S2,...",
                    help="more candidates: explicit levels, comma-separated, from sigma_max down (then 0)")
    ap.add_argument("--watermark", action="store_true", help="mark the start noise, as generate does (diffuse eval's "
                    "default is unmarked, and so is this script's)")
    ap.add_argument("--json")
    a = ap.parse_args()
    pipe = Pipeline.load(a.model, watermark=a.watermark)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, torch {torch.__version__}, "
          f"{a.model} ({pipe.model_hash[:12]}), consistency sampler, guidance {GUIDANCE}, "
          f"{'marked' if a.watermark else 'unmarked'}")
    print("| steps | levels | seed | all, seen | shape, seen | all, held-out | Frechet (floor) | diversity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    # Each candidate is registered under one name in turn: a request names its schedule.
    candidates = [(name, schedules.SCHEDULES[name]) for name in a.schedules] + [
        (f"ramp to {last:g}" + (f", rho {rho:g}" if rho != 7 else ""), ramp_to(last, rho))
        for rho in a.rho for last in a.last] + [
        (f"levels {text}", fixed([float(v) for v in text.split(",")])) for text in a.levels]
    rows = []
    for steps in a.steps:
        for name, make_sigmas in candidates:
            schedules.SCHEDULES["_candidate"] = make_sigmas
            sigmas = schedules.get_sigmas("_candidate", steps)
            for seed in a.seeds:
                r = evaluate(pipe, seed=seed, steps=steps, sampler="consistency", schedule="_candidate",
                             guidance=GUIDANCE)
                seen, held = r["match"]["seen"], r["match"]["held-out"]
                rows.append(dict(steps=steps, levels=name, sigmas=[round(float(s), 4) for s in sigmas], seed=seed,
                                 seen=seen, held_out=held, frechet=r["frechet"], floor=r["frechet_floor"],
                                 diversity=r["diversity"]))
                print(f"| {steps} | {name}: {', '.join(f'{float(s):.3g}' for s in sigmas)} | {seed} | "
                      f"{seen['all']:.1%} | {seen['shape']:.1%} | {held['all']:.1%} | "
                      f"{r['frechet']:.2f} ({r['frechet_floor']:.2f}) | {r['diversity']:.2f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
