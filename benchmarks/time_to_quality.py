"""Quality reached after fixed CPU budgets: diffuse's recipe against a Hugging Face diffusers one.

    .venv/bin/pip install diffusers            # only this benchmark needs it
    .venv/bin/python benchmarks/time_to_quality.py [--budgets 5 10 20] [--systems diffuse diffusers]

Each system trains from scratch on `shapes` (held-out pairs left out, as by default) and is
scored by `diffuse eval`'s reader after each cumulative budget (5, then 5 more, then 10 more
minutes of wall clock, data drawing included; evaluation time not counted).

- diffuse: the defaults of `diffuse train` (small preset, EDM preconditioning and loss, EMA),
  sampled with 20 steps of DPM-Solver++(2M) at guidance 3, as the diffusers side.
- diffusers: `UNet2DConditionModel` of about the same FLOPs per image (printed), DDPMScheduler
  with epsilon prediction (Stable Diffusion's scaled-linear betas, as `train_text_to_image.py`
  loads them), diffuse's own text encoder (its tokens are the cross-attention states), the
  script's defaults (AdamW lr 1e-4, constant schedule, batch 16, no EMA) except 10% caption
  dropout, which the script lacks and guidance needs; sampled with DPMSolverMultistepScheduler,
  20 steps, guidance 3.

Run it with nothing else working: both systems are timed by the wall clock.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffuse.data import load_dataset
from diffuse.evaluation import TASKS, load_reader, score
from diffuse.model import TextToImageModel
from diffuse.networks import preset
from diffuse.pipeline import Pipeline
from diffuse.samplers import SeededNoise
from diffuse.training import TrainConfig, Trainer, batch_indices


def flops_per_image(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- diffuse

def run_diffuse(out: Path, budgets: list[float], per_prompt: int) -> list[dict]:
    rows, spent = [], 0.0
    for b in budgets:
        cfg = TrainConfig(data="shapes", out=str(out), minutes=b - spent, resume=spent > 0, progress=False,
                          preview_every=0, checkpoint_every=0)
        Trainer(cfg).run()
        spent = b
        pipe = Pipeline.load(out)
        rows.append(summarise("diffuse", b, evaluate_images(lambda prompts, n, seed: sample_diffuse(pipe, prompts, n, seed),
                                                            per_prompt)))
    return rows


def sample_diffuse(pipe: Pipeline, prompts: list[str], n: int, seed: int, guidance: float = 3.0) -> torch.Tensor:
    """20 steps of dpmpp_2m; guidance 3 as the diffusers side (and the tables in RESULTS.md), pinned
    here because `diffuse generate`'s default has since become 2."""
    from diffuse.pipeline import GenerateRequest
    return torch.cat([pipe.sample(GenerateRequest(prompt=p, n=n, seed=seed + 1000 * i, guidance=guidance))
                      for i, p in enumerate(prompts)])


# ----------------------------------------------------------------------------- diffusers

class DiffusersRecipe:
    def __init__(self, data, seed: int = 0):
        from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
        torch.manual_seed(seed)
        # The text encoder diffuse trains (same tokenizer, same width), kept from a fresh model.
        self.text = TextToImageModel.create(preset("small"), data.captions)
        width = self.text.text_encoder.cfg.width
        self.unet = UNet2DConditionModel(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=width, attention_head_dim=2, norm_num_groups=8)
        self.train_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                         beta_schedule="scaled_linear", prediction_type="epsilon")
        self.sample_sched = DPMSolverMultistepScheduler.from_config(self.train_sched.config)
        params = list(self.unet.parameters()) + list(self.text.text_encoder.parameters())
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
        self.data, self.gen, self.images_seen = data, torch.Generator().manual_seed(seed), 0

    def states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.text.encode(prompts)
        return cond.tokens, cond.mask.float()

    def train_for(self, seconds: float, batch: int = 16) -> None:
        self.unet.train()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            idx = batch_indices(len(self.data), self.images_seen, batch, 0)
            x0 = self.data.images[idx]
            drop = torch.rand(batch, generator=self.gen) < 0.1
            caps = ["" if d else self.data.captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
            noise = torch.randn(x0.shape, generator=self.gen)
            t = torch.randint(0, 1000, (batch,), generator=self.gen)
            states, mask = self.states(caps)
            pred = self.unet(self.train_sched.add_noise(x0, noise, t), t, states, encoder_attention_mask=mask).sample
            loss = F.mse_loss(pred, noise)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.images_seen += batch

    @torch.no_grad()
    def sample(self, prompts: list[str], n: int, seed: int, steps: int = 20, guidance: float = 3.0) -> torch.Tensor:
        self.unet.eval()
        out = []
        for i, p in enumerate(prompts):
            seeds = [seed + 1000 * i + k for k in range(n)]
            x = SeededNoise(seeds, (3, 32, 32), torch.device("cpu"))()
            self.sample_sched.set_timesteps(steps)
            x = x * self.sample_sched.init_noise_sigma
            states, mask = self.states([p] * n + [""] * n)
            for t in self.sample_sched.timesteps:
                eps = self.unet(self.sample_sched.scale_model_input(torch.cat([x, x]), t), t, states,
                                encoder_attention_mask=mask).sample
                cond, uncond = eps.chunk(2)
                x = self.sample_sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
            out.append(x.clamp(-1, 1))
        return torch.cat(out)


def run_diffusers(budgets: list[float], per_prompt: int) -> list[dict]:
    t0 = time.monotonic()
    recipe = DiffusersRecipe(load_dataset("shapes", 32))
    setup = time.monotonic() - t0  # data drawing counts against the first budget, as for diffuse
    rows, spent = [], setup / 60
    for b in budgets:
        recipe.train_for((b - spent) * 60)
        spent = b
        rows.append(summarise("diffusers", b, evaluate_images(recipe.sample, per_prompt)))
        rows[-1]["images_seen"] = recipe.images_seen
    return rows


# ----------------------------------------------------------------------------- shared

def evaluate_images(sample, per_prompt: int) -> dict:
    task = TASKS["shapes"]
    reader, _ = load_reader("shapes", 32)
    prompts = task.prompts()
    images = sample([p.prompt for p in prompts], per_prompt, 0)
    return score(reader, task, images, prompts, per_prompt, 32)


def summarise(system: str, minutes: float, r: dict) -> dict:
    row = {"system": system, "minutes": minutes, "seen": r["match"]["seen"]["all"],
           "held_out": r["match"]["held-out"]["all"], "frechet": r["frechet"], "floor": r["frechet_floor"],
           "diversity": r.get("diversity")}
    print(f"| {system} | {minutes:g} | {row['seen']:.1%} | {row['held_out']:.1%} | {row['frechet']:.2f} "
          f"({row['floor']:.2f}) | {row['diversity']:.2f} |", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=float, nargs="+", default=[5, 10, 20], help="cumulative minutes")
    ap.add_argument("--systems", nargs="+", default=["diffuse", "diffusers"])
    ap.add_argument("--out", default="runs/time_to_quality")
    ap.add_argument("--per-prompt", type=int, default=2)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if "diffusers" in a.systems:
        recipe = DiffusersRecipe(load_dataset("shapes", 32, shapes=64))
        ours = TextToImageModel.create(preset("small"), recipe.data.captions)
        x, c = torch.zeros(1, 3, 32, 32), ours.encode(["a red circle"])
        s, m = recipe.states(["a red circle"])
        print(f"GFLOPs per image, forward: diffuse {flops_per_image(lambda: ours(x, torch.ones(1), c)) / 1e9:.3f}, "
              f"diffusers {flops_per_image(lambda: recipe.unet(x, torch.ones(1), s, encoder_attention_mask=m)) / 1e9:.3f}")
    print("| system | minutes | all attributes, seen | held-out | Frechet (floor) | diversity |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    if "diffuse" in a.systems:
        rows += run_diffuse(out / "diffuse", a.budgets, a.per_prompt)
    if "diffusers" in a.systems:
        rows += run_diffusers(a.budgets, a.per_prompt)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
