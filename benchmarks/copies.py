"""Does it copy? Near-copy rates of the bundled models and of a model trained to memorise (issue 22, item 1).

    .venv/bin/python benchmarks/copies.py [--models shapes emoji] [--memorise-steps 1000 2000 4000]
                                          [--n 500] [--out runs/copies]

Each model generates --n images from the captions of --n of its training images (chosen by the
seed 0; image i from seed i), 20 steps of dpmpp_2m on the karras schedule at guidance 2 (pinned
here, whatever the defaults become), and `diffuse.copies.find_copies` finds each one's nearest
training images in pixels and reader features and calls it a near-copy below the threshold
calibrated on the training set itself (see diffuse/copies.py). Rows:

- each bundled model (--models);
- fresh draws: 500 real shapes drawn with seed 1 against the shapes model's 20,000 training
  images (seed 0): what a model that draws new images from the data's own distribution scores;
- memorise-64: a model trained by `diffuse train --data shapes --data-size 64` (all else the
  defaults, pinned below), measured after each of --memorise-steps (the run is extended with
  --resume --steps, so the rsqrt schedule runs on unbroken). It must be flagged.

Writes OUT/<row>.json (every image's nearest) and OUT/<row>.png (the 8 most copy-like beside
their three nearest), and prints a Markdown table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffuse.copies import TrainingSet, copies_picture, find_copies, generate_from_captions, reader_for, training_set
from diffuse.data import as_saved, load_shapes
from diffuse.export import save_png
from diffuse.pipeline import Pipeline

SETTINGS = dict(steps=20, sampler="dpmpp_2m", schedule="karras", guidance=2.0)
# The memorising run: the defaults of 2026-12-04 written out, on 64 shapes.
MEMORISE = ["--data", "shapes", "--data-size", "64", "--preset", "small", "--size", "32", "--batch-size", "16",
            "--lr", "2e-3", "--lr-schedule", "rsqrt", "--lr-ref-steps", "2000", "--seed", "0",
            "--precision", "fp32", "--preview-every", "0", "--checkpoint-every", "0", "--quiet"]
HEADER = ("| model | training images | generated | near-copies, pixels | features | either | fresh-draw rate | "
          "p | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def row(name: str, report: dict) -> str:
    per = report["share_per_space"]
    feats = f"{per['features']:.1%}" if "features" in per else "-"
    return (f"| {name} | {report['training_images']:,} | {report['generated']} | {per['pixels']:.1%} | {feats} | "
            f"{report['share']:.1%} | {report['calibration']['fresh_rate']:.1%} | {report['p_value']:.1g} | "
            f"{'copies' if report['copies'] else 'no sign of copying'} |")


def measure(name: str, pipe: Pipeline, n: int, out: Path, generated=None, names=None, train=None) -> dict:
    train = train or training_set(pipe.config)
    reader = reader_for(pipe.config, train, lambda m: print(m, file=sys.stderr))
    t0 = time.monotonic()
    if generated is None:
        generated, names, made_by = generate_from_captions(pipe, train, n, seed=0, **SETTINGS)
    else:  # drawn by the caller (real images): named, made by no model
        made_by = [{"file": name} for name in names]
    report = find_copies(generated, names, train, reader)
    report.update(row=name, model=pipe.name, settings=SETTINGS, seconds=round(time.monotonic() - t0, 1))
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    save_png(copies_picture(report, generated, train, made_by), out / f"{name}.png")
    print(row(name, report), flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["shapes", "emoji"])
    ap.add_argument("--memorise-steps", type=int, nargs="*", default=[1000, 2000, 4000])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", default="runs/copies")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}; {a.n} images per row, {SETTINGS}")
    print(HEADER)
    for m in a.models:
        pipe = Pipeline.load(m)
        measure(m, pipe, a.n, out)
        if m == "shapes":  # the control: new real draws from the shapes model's own data distribution
            fresh = load_shapes(32, n=a.n, seed=1)
            measure("fresh shapes draws (seed 1)", pipe, a.n, out, as_saved(fresh.images),
                    [f"real {i}: {c}" for i, c in enumerate(fresh.captions)])
    run = out / "memorise-64"
    for steps in a.memorise_steps:
        resume = ["--resume"] if (run / "config.json").exists() else []
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "diffuse", "train", *MEMORISE, "--out", str(run), "--steps", str(steps),
                        *resume], check=True, stdout=subprocess.DEVNULL)
        print(f"(memorise-64 trained to step {steps} in {time.monotonic() - t0:.0f} s more)", file=sys.stderr)
        measure(f"memorise-64, step {steps}", Pipeline.load(run), a.n, out)


if __name__ == "__main__":
    main()
