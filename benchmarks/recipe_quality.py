"""Training recipes at equal CPU time, scored by what `diffuse eval` reads off their images.

    .venv/bin/python benchmarks/recipe_quality.py --minutes 8 --candidates base pmean-0.4 pmean+0.4

Each candidate trains from scratch on `shapes` (held-out pairs left out, as by default) for the
same wall clock, one at a time (the two cores are shared), then draws 2 images for each of the
evaluator's 108 prompts with 20 steps of DPM-Solver++(2M) at --guidance (default 3, the scale of
the recipe rows in RESULTS.md; the preset rows ran at 2, `diffuse generate`'s default since).
Finished candidates are kept in OUT/results.json, so a stopped sweep continues where it was.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from time_to_quality import evaluate_images, sample_diffuse  # noqa: E402

from diffuse.networks import PRESETS  # noqa: E402
from diffuse.pipeline import Pipeline  # noqa: E402
from diffuse.training import TrainConfig, Trainer  # noqa: E402
from recipes import BEFORE_ISSUE_23  # noqa: E402

# Architectures tried here before any becomes a preset of its own.
PRESETS.setdefault("small-coords", {**PRESETS["small"], "coords": True})

# name: TrainConfig fields that differ from the recipe the tables were made with (BEFORE_ISSUE_23)
CANDIDATES = {
    "base": dict(p_mean=-1.2),  # EDM's value, the default before this comparison
    "pmean-0.4": dict(p_mean=-0.4),
    "pmean+0.4": dict(p_mean=0.4),
    "pmean-0.4-std1.6": dict(p_mean=-0.4, p_std=1.6),
    "pmean-0.4-coords": dict(p_mean=-0.4, preset="small-coords"),
    # A cosine decay needs its length up front: steps the size of what 8 minutes gave the others.
    "pmean-0.4-coords-cosine": dict(p_mean=-0.4, preset="small-coords", lr_schedule="cosine", steps=1100),
    "lr4e-3": dict(lr=4e-3),
    "b32-lr4e-3": dict(batch_size=32, lr=4e-3),
    "small": dict(),  # the defaults of `diffuse train`, for a preset comparison at equal time
    "tiny": dict(preset="tiny"),
    "medium": dict(preset="medium"),
    # Caption dropout (the share of "" captions that trains the unconditional model guidance
    # needs) around the default 0.1, on `tiny`, the preset that learns colour within minutes.
    "tiny-dropout0.05": dict(preset="tiny", caption_dropout=0.05),
    "tiny-dropout0.2": dict(preset="tiny", caption_dropout=0.2),
}

ATTRS = ("shape", "color", "background", "size")


def run(name: str, minutes: float, out: Path, per_prompt: int, guidance: float) -> dict:
    overrides = CANDIDATES[name]
    budget = {} if "steps" in overrides else {"minutes": minutes}  # a candidate with steps runs to them
    cfg = TrainConfig(data="shapes", out=str(out / name), progress=False, preview_every=0, checkpoint_every=0,
                      **budget, **{**BEFORE_ISSUE_23, **overrides})
    Trainer(cfg).run()
    pipe = Pipeline.load(out / name, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
    r = evaluate_images(lambda prompts, n, seed: sample_diffuse(pipe, prompts, n, seed, guidance), per_prompt)
    seen, held = r["match"]["seen"], r["match"]["held-out"]
    return {"candidate": name, "overrides": CANDIDATES[name], "minutes": minutes,
            "steps": pipe.config["training"]["steps"], **{a: seen[a] for a in ATTRS}, "all": seen["all"],
            "held_out_all": held["all"], "frechet": r["frechet"], "floor": r["frechet_floor"],
            "diversity": r.get("diversity")}


def row(r: dict) -> str:
    attrs = " | ".join(f"{r[a]:.0%}" for a in ATTRS)
    return (f"| {r['candidate']} | {r['steps']} | {attrs} | {r['all']:.1%} | {r['held_out_all']:.1%} | "
            f"{r['frechet']:.1f} ({r['floor']:.1f}) | {r['diversity']:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--out", default="runs/recipe_quality")
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    print(f"| candidate | steps in {a.minutes:g} min | shape | colour | background | size | all, seen | "
          "all, held-out | Frechet (floor) | diversity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(row(r), flush=True)
    done = {(r["candidate"], r["minutes"]) for r in results}
    for name in a.candidates:
        if (name, a.minutes) in done:
            continue
        results.append(run(name, a.minutes, out, a.per_prompt, a.guidance))
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        print(row(results[-1]), flush=True)


if __name__ == "__main__":
    main()
