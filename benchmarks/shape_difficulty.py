"""What makes the shape word hard to learn? The same network on reduced `shapes` data.

    .venv/bin/python benchmarks/shape_difficulty.py [--steps 740] [--variants centre placed placed-short]

The bundled model follows colour, background and size but draws random blobs for shape. This
trains the default recipe (small preset, batch 16) from scratch for the same number of steps on
data where fewer things vary, then generates 16 images per shape and lets `diffuse eval`'s reader
say which shape each is:

  centre        large red shapes on black, always centred; caption "a {shape}"
  placed        as `shapes` draws them: two sizes, five positions; caption "a {size} {shape} in the {position}"
  placed-short  the same images, caption "a {shape}" (only the shape named)

If only `centre` learns the word, the hard part is drawing a shape wherever and however large it
lies, not finding the word in the caption (`placed-short` tells the two apart). Steps, not
minutes, so the figures do not depend on what else the machine runs. Finished variants are kept
in OUT/results.json.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from diffuse.data import POSITIONS, SHAPES, SIZES, ShapeSpec, pil_to_tensor, render_shape
from diffuse.evaluation import Reader, load_reader, read
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.training import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from recipes import BEFORE_ISSUE_23  # noqa: E402

# variant: (images placed?, caption template, prompts to read the model with)
VARIANTS = {
    "centre": (False, "a {shape}", ["a {shape}"]),
    "placed": (True, "a {size} {shape} in the {position}", ["a large {shape} in the center",
                                                           "a small {shape} in the top left"]),
    "placed-short": (True, "a {shape}", ["a {shape}"]),
}


def write_folder(folder: Path, placed: bool, template: str, n: int, seed: int = 0) -> None:
    """n captioned images in the image-folder format `diffuse train` reads; shape cycles."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = random.Random(seed), []
    for i in range(n):
        size, position = (rng.choice(list(SIZES)), rng.choice(list(POSITIONS))) if placed else ("large", "center")
        spec = ShapeSpec(SHAPES[i % len(SHAPES)], "red", "black", size, position)
        render_shape(spec, 32, rng).save(folder / f"{i:05d}.png")
        rows.append({"file_name": f"{i:05d}.png", "text": template.format(**spec.__dict__)})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def shape_match(pipe: Pipeline, reader: Reader, prompt: str, per_shape: int = 16) -> float:
    """Share of images the reader reads as the shape the prompt names."""
    hits = 0
    for k, shape in enumerate(SHAPES):
        images = pipe.generate(GenerateRequest(prompt=prompt.format(shape=shape), n=per_shape, seed=1))
        hits += (read(reader, torch.stack([pil_to_tensor(im) for im in images]))["shape"] == k).sum().item()
    return hits / (per_shape * len(SHAPES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=740, help="training steps per variant (740: 4 minutes quiet)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--images", type=int, default=6000, help="training images per variant")
    ap.add_argument("--out", default="runs/shape_difficulty")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    reader, _ = load_reader("shapes", 32)
    for name in args.variants:
        key = f"{name}@{args.steps}"
        if key not in results:
            placed, template, prompts = VARIANTS[name]
            data = out / f"data-{name}"
            if not (data / "metadata.jsonl").exists():
                write_folder(data, placed, template, args.images)
            run = out / key
            Trainer(TrainConfig(data=str(data), out=str(run), steps=args.steps, preview_every=0,
                                checkpoint_every=0, progress=False, resume=(run / "config.json").exists(),
                                **BEFORE_ISSUE_23)).run()
            pipe = Pipeline.load(run, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
            results[key] = {p: shape_match(pipe, reader, p) for p in prompts}
            results_path.write_text(json.dumps(results, indent=1))
        for prompt, rate in results[key].items():
            print(f"| {name} | {args.steps} | {prompt} | {rate:.0%} |", flush=True)
    print(f"chance: {1 / len(SHAPES):.0%}")


if __name__ == "__main__":
    main()
