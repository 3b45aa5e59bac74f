"""Training recipes at equal CPU time: which preset, batch size and learning rate learn fastest.

    .venv/bin/python benchmarks/recipe_sweep.py --minutes 2.5            # train every candidate, then score
    .venv/bin/python benchmarks/recipe_sweep.py --score-only runs/swA ... # score existing runs

Each candidate trains on `shapes` for the same wall-clock budget (one at a time: the two cores
are shared). Score: the EDM loss of the EMA weights on 512 fresh shapes (seed 999, never
trained on) at 8 fixed noise levels from 0.05 to 20, with fixed noise, so runs compare exactly.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from diffuse import networks
from diffuse.checkpoint import load_checkpoint
from diffuse.data import load_shapes
from diffuse.denoiser import EDMLoss

sys.path.insert(0, str(Path(__file__).parent))
from recipes import BEFORE_PMEAN_CHANGE  # noqa: E402  (the recipe of the table: P_mean -1.2)

CANDIDATES = {  # name: (preset, batch, lr, extra preset definition or None)
    "small-b32-lr2e-3": ("small", 32, 2e-3, None),
    "small-b16-lr2e-3": ("small", 16, 2e-3, None),
    "small-b8-lr2e-3": ("small", 8, 2e-3, None),
    "tiny-b32-lr2e-3": ("tiny", 32, 2e-3, None),
    "patch2-c64-b16-lr1e-3": ("p2c64", 16, 1e-3, dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                                                       attn_resolutions=(8, 4), text_width=64, patch_size=2)),
    "patch2-c64-1block-b16-lr2e-3": ("p2c64b1", 16, 2e-3, dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1,
                                                                attn_resolutions=(8, 4), text_width=64, patch_size=2)),
}


@torch.no_grad()
def held_out_loss(run_dir: str) -> float:
    model, _ = load_checkpoint(run_dir)
    data = load_shapes(32, n=512, seed=999)
    g = torch.Generator().manual_seed(0)
    sigmas = torch.exp(torch.linspace(math.log(0.05), math.log(20), 8))
    loss_fn, total = EDMLoss(), 0.0
    for s in sigmas:
        for i in range(0, 512, 128):
            y = data.images[i:i + 128]
            noise = torch.randn(y.shape, generator=g)
            total += loss_fn(model, y, model.encode(data.captions[i:i + 128]), s.expand(len(y)), noise).sum().item()
    return total / (512 * len(sigmas))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.5)
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--score-only", nargs="*")
    a = ap.parse_args()
    if a.score_only:
        for run in a.score_only:
            steps = json.loads((Path(run) / "config.json").read_text())["training"]["steps"]
            print(f"| {run} | {steps} | {held_out_loss(run):.4f} |", flush=True)
        return
    from diffuse.training import TrainConfig, Trainer
    print("| candidate | steps | held-out loss |\n| --- | --- | --- |")
    for name, (preset, batch, lr, extra) in CANDIDATES.items():
        if extra:
            networks.PRESETS[preset] = extra
        out = Path(a.out) / name
        recipe = {**BEFORE_PMEAN_CHANGE, "preset": preset, "batch_size": batch, "lr": lr}
        Trainer(TrainConfig(data="shapes", out=str(out), minutes=a.minutes, preview_every=0, progress=False,
                            **recipe)).run()
        steps = json.loads((out / "config.json").read_text())["training"]["steps"]
        print(f"| {name} | {steps} | {held_out_loss(str(out)):.4f} |", flush=True)


if __name__ == "__main__":
    main()
