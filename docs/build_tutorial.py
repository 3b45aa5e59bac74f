"""Regenerate every picture of docs/tutorial.md with the commands the tutorial shows.

    make docs                      # with the bundled model (its training curves are not shipped)
    make docs MODEL=runs/shapes40  # with another checkpoint

Writes docs/images/tutorial/*.png (and the denoising GIF).
"""

import sys
from pathlib import Path

from diffuse.cli import main
from diffuse.data import draw_shape

OUT = Path("docs/images/tutorial")


def run(*args: str) -> None:
    print("diffuse", " ".join(f'"{a}"' if " " in a else a for a in args), flush=True)
    if main(list(args)) != 0:
        sys.exit(f"failed: diffuse {' '.join(args)}")


def build(model: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    img, caption, _ = draw_shape(7, 64, seed=0)  # a real training image, at 64 px to see the noise
    img.save(OUT / "example.png")
    (OUT / "example.txt").write_text(caption + "\n")
    run("explain", "noise", str(OUT / "example.png"), "--out", str(OUT / "noise.png"))
    if (Path(model) / "log.jsonl").exists():
        run("plot", model, "--out", str(OUT / "curves.png"))
    else:  # the bundled model ships without its training log
        print(f"{model} has no log.jsonl: keeping {OUT / 'curves.png'}", flush=True)
    run("explain", "denoise", "a red circle on a white background", "--model", model, "--steps", "10",
        "--seed", "0", "--out", str(OUT / "denoise.png"))
    run("explain", "guidance", "a yellow star on a navy background", "--model", model, "--seed", "1",
        "--scales", "0", "1", "2", "3", "5", "8", "--out", str(OUT / "guidance.png"))
    run("explain", "prompt", "a shape", "a large blue square on a black background", "--model", model,
        "-n", "4", "--seed", "0", "--out", str(OUT / "prompt.png"))
    run("generate", "a yellow star on a navy background", "--model", model, "-n", "4", "--seed", "0",
        "--steps", "10", "--grid", "--out", str(OUT / "generate.png"))
    for single in OUT.glob("generate-[0-9]*.png"):  # the tutorial shows the grid only
        single.unlink()


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "diffuse/models/shapes")
