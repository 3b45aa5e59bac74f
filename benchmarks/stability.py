"""Stability of the default recipe at any length (issue 23): `diffuse train` with its defaults for
hours, on `shapes` and on a captioned folder of shapes phrased as a user would, with the loss,
gradient norm and probe loss of each run drawn and summarised.

    .venv/bin/python benchmarks/stability.py [--data shapes folder] [--minutes 180] [--out runs/stability]

Each run is the CLI a user types, nothing pinned but the length: `diffuse train --data D --out
OUT/NAME --minutes M` (so it measures whatever the defaults are in this checkout; the printout and
each run's config.json say which). The folder (OUT/folder-data, written once) holds --images
images drawn like `shapes` (the same stream, seed 1, so not the bundled model's draws), captioned
in words of its own ("a big crimson star against a dark blue backdrop, upper left corner"):
synonyms, other word orders, no "background" in half of them. It marks nothing held out.

A run longer than a session goes on in the next: run the same command again. Each run resumes
(`diffuse train --resume`) for the minutes its checkpoint still lacks (its training.elapsed_s;
what a killed session lost since the last checkpoint is not counted, and is trained again).

At the end: log_summary's row of each run (steps, images/s, the last tenth's loss, the largest
gradient norm, whether the loss ever rose to 2x its best 500-step window, the gradient spikes the
trainer logged) and OUT/curves.png (training loss, gradient norm, probe loss against images).
"""

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

from diffuse.data import draw_shape

sys.path.insert(0, str(Path(__file__).parent))  # log_summary.py sits beside this file
from log_summary import HEADER, plot, summary  # noqa: E402

DIFFUSE = str(Path(sys.executable).parent / "diffuse")
FOLDER_SEED = 1  # the shapes stream's seed for the folder: not the seed-0 draws `--data shapes` trains on

# How people caption such pictures: other words for the same attributes, other orders.
COLOUR_WORDS = {"red": ["red", "crimson", "scarlet"], "green": ["green", "emerald"], "blue": ["blue", "royal blue"],
                "yellow": ["yellow", "golden"], "purple": ["purple", "violet"], "orange": ["orange", "tangerine"],
                "cyan": ["cyan", "turquoise", "aqua"], "pink": ["pink", "rose"]}
SHAPE_WORDS = {"circle": ["circle", "disc", "round dot"], "square": ["square", "box"], "triangle": ["triangle"],
               "diamond": ["diamond", "rhombus"], "star": ["star", "five-pointed star"], "cross": ["cross", "plus sign"]}
BACKGROUND_WORDS = {"black": ["black", "pitch black"], "white": ["white", "plain white"], "gray": ["grey", "gray"],
                    "navy": ["navy", "dark blue"]}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
POSITION_WORDS = {"center": ["in the middle", "centred", "in the centre"],
                  "top left": ["upper left corner", "at the top left"], "top right": ["upper right corner", "at the top right"],
                  "bottom left": ["lower left corner", "at the bottom left"],
                  "bottom right": ["lower right corner", "at the bottom right"]}
USER_TEMPLATES = (
    "a {size} {color} {shape} against a {background} backdrop, {position}",
    "{color} {shape} on {background}",
    "picture of a {shape}, {color}, {position}, {background} background",
    "{background} background with a {size} {color} {shape} {position}",
    "{size} {shape} coloured {color}",
)


def user_caption(spec, rng: random.Random) -> str:
    words = dict(color=rng.choice(COLOUR_WORDS[spec.color]), shape=rng.choice(SHAPE_WORDS[spec.shape]),
                 background=rng.choice(BACKGROUND_WORDS[spec.background]), size=rng.choice(SIZE_WORDS[spec.size]),
                 position=rng.choice(POSITION_WORDS[spec.position]))
    return rng.choice(USER_TEMPLATES).format(**words)


def write_folder(folder: Path, n: int) -> None:
    """n PNGs of the shapes stream (seed FOLDER_SEED) with user-phrased captions in metadata.jsonl;
    written once (a metadata.jsonl is written last, so a folder that has one is complete)."""
    if (folder / "metadata.jsonl").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, _, spec = draw_shape(i, 32, FOLDER_SEED)
        name = f"{i:05d}.png"
        img.save(folder / name)
        rows.append(json.dumps({"file_name": name, "text": user_caption(spec, random.Random(f"caption-{i}"))}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "README.md").write_text("Procedural shapes drawn by diffuse (seed 1), captioned in a user's own words "
                                      "by benchmarks/stability.py; made by the project, no third-party licence.\n")


def trained_minutes(run: Path) -> float:
    config = run / "config.json"
    return json.loads(config.read_text())["training"]["elapsed_s"] / 60 if config.exists() else 0.0


def train(data: str, run: Path, minutes: float) -> None:
    """`diffuse train` with the defaults until the run has trained `minutes` in all."""
    done = trained_minutes(run)
    left = minutes - done
    if left < 0.5:
        print(f"{run.name}: {done:.1f} of {minutes:g} minutes trained, done", flush=True)
        return
    cmd = [DIFFUSE, "train", "--data", data, "--out", str(run), "--minutes", f"{left:.2f}"]
    if (run / "config.json").exists():
        cmd.append("--resume")
    print(" ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code:  # 130: Ctrl-C, and `diffuse train` saved at a step boundary; its own line said why otherwise
        sys.exit(f"{run.name}: `diffuse train` stopped (exit {code}) at {trained_minutes(run):.1f} of {minutes:g} "
                 f"minutes; run the same command again to go on")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=["shapes", "folder"], choices=["shapes", "folder"])
    ap.add_argument("--minutes", type=float, default=180, help="wall-clock minutes of training per run")
    ap.add_argument("--images", type=int, default=20000, help="images in the captioned folder")
    ap.add_argument("--out", default="runs/stability")
    a = ap.parse_args()
    out = Path(a.out)
    for name in a.data:
        if name == "folder":
            write_folder(out / "folder-data", a.images)
        train("shapes" if name == "shapes" else str(out / "folder-data"), out / name, a.minutes)
    runs = [out / name for name in a.data]
    print(HEADER)
    for run in runs:
        print(summary(run))
    plot(runs, out / "curves.png")
    print(f"wrote {out / 'curves.png'}")


if __name__ == "__main__":
    main()
