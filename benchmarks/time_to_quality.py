"""Time to quality: diffuse's training recipes and a Hugging Face diffusers baseline at equal wall clock.

    .venv/bin/pip install diffusers            # only this benchmark needs it
    .venv/bin/python benchmarks/time_to_quality.py [--budgets 5 10 20 60] [--systems before defaults diffusers]
                                                   [--per-prompt 2] [--guidance 2] [--out runs/time_to_quality]
                                                   [--continue]

Every system trains from scratch on `shapes` (20,000 draws, seed 0, the held-out pairs left out,
as `diffuse train` by default), one system at a time (the cores are shared), and is scored after
each cumulative budget (5, 10, 20 and 60 minutes of wall clock) like `diffuse eval` at its
defaults: the evaluator's 108 prompts x --per-prompt images, image k of prompt i drawn from the
noise seed eval_seed(0, i, k), 20 steps of DPM-Solver++(2M) at --guidance (default 2, `diffuse
eval`'s; the 2026-11-29 table in RESULTS.md ran at 3).

The clocks. Each system's clock starts just before its setup, the same work on both sides:
drawing the 20,000 training images and building the networks, the optimizer and the EMA (diffuse:
constructing its Trainer, which is what `diffuse train` does before the first step; diffusers:
load_dataset and DiffusersRecipe). The setup is charged against the first budget: training
stops when setup + training reach it, and each later budget adds its difference in training
time. Neither clock counts imports (done before), evaluation after a budget, or what only the
benchmark's pauses between budgets cost: diffuse writes its checkpoint (with its probe loss) at
the end of each invocation and continues for the next budget with --resume, which draws the
data again and reloads the weights (resume_config: the run keeps its own recipe); diffusers keeps
its model in memory. The step in flight at a deadline finishes (about 0.3 s with the machine quiet).

diffuse arms, each a fully pinned recipe (every field of RECIPE_FIELDS, printed before the table
and written to results.json), so a row reruns as it ran whatever the defaults become:
- before: recipes.BEFORE_ISSUE_23, the default of `diffuse train` before issue 23 (constant lr
  2e-3 after 50 warm-up steps, batch 16, no gradient clipping, EMA half-life 2 kimg, P_mean -0.4);
- defaults: whatever TrainConfig's defaults are when the script runs (the printout says which),
  at `--precision auto` as `diffuse train` runs them; the tables of 2026-12-04 called "defaults"
  what is now the pinned arm `rsqrt` (fp32, batch 16);
- the CANDIDATES below: recipes.BEFORE_ISSUE_23 with named changes; add one there to try it.
All run on the CPU without torch.compile, in fp32 unless the arm names bf16 (autocast, attention
and group norm in fp32: networks.attention, networks.GroupNorm) or is `defaults`.

diffusers, as its pixel-space training from scratch is written in diffusers' unconditional
example (examples/unconditional_image_generation/train_unconditional.py): DDPMScheduler with
1000 steps and its default linear betas (1e-4 to 0.02, which reach pure noise: alpha_bar 4e-5 at
the last step; Stable Diffusion's scaled-linear betas are made for latents and stop short of it
in pixel space), epsilon prediction and MSE loss; AdamW at lr 1e-4, betas (0.95, 0.999), weight
decay 1e-6, eps 1e-8, batch 16; 500 linear warm-up steps; the gradient norm clipped to 1.0;
EMAModel with warm-up (inv_gamma 1, power 3/4, max decay 0.9999), whose weights are sampled.
Learning-rate schedule: the example defaults to a cosine decay over the run's total steps
(epochs x batches), which a wall-clock budget does not know up front. This uses its
"constant_with_warmup" option instead: the budgets are snapshots of one run, so a cosine sized to
the last budget would still be near its peak at the earlier ones, and one sized from the rate of
the first minute would make the schedule, hence the table, depend on how busy the cores were.
Text conditioning is not in the example; added here as a diffusers user would: a
UNet2DConditionModel (32/64/64 channels, cross-attention at 16x16 and 8x8) of about the FLOPs
per image of diffuse's small preset (both printed), diffuse's own text encoder, trained with it,
for the cross-attention states, and 10% empty captions so guidance has an unconditional model.
Sampled with DPMSolverMultistepScheduler (DPM-Solver++ 2M), 20 steps, the same guidance and the
same noise seeds as the diffuse side, with dynamic thresholding (Imagen's), which the scheduler's
documentation says to turn on for pixel-space models; the same weights are also sampled without
it, in the rows "diffusers, no thresholding".

Run it with nothing else working: every clock is the wall clock. A run longer than a session
(before and defaults to 60 minutes take about 2 hours 10 minutes) goes on in the next with
--continue and the same arguments: each diffuse arm resumes from the checkpoint of its last
finished budget and the rows already made are kept. An arm stopped in the middle of a budget
left a checkpoint that no budget accounts for: it is refused, and must be run again.
"""

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from diffuse.checkpoint import CONFIG_FILE
from diffuse.data import load_dataset
from diffuse.errors import DiffuseError
from diffuse.evaluation import TASKS, eval_seed, load_reader, score
from diffuse.model import TextToImageModel
from diffuse.networks import preset
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.samplers import SeededNoise
from diffuse.training import RUN_RECIPE, TrainConfig, Trainer, batch_indices, resume_config

sys.path.insert(0, str(Path(__file__).parent))  # recipes.py sits beside this file
from recipes import BEFORE_ISSUE_23  # noqa: E402

DATA = dict(seed=0, data_size=20000, holdout=True)  # the data both sides train on
SAMPLER_STEPS = 20
GUIDANCE = 2.0       # `diffuse eval`'s default; the 2026-11-29 table ran at 3
DIFFUSE_MACHINE = dict(device="cpu", precision="fp32", compile=False, progress=False, preview_every=0,
                       checkpoint_every=0)

# What an arm pins: every recipe setting of a run, less the data (DATA) and the step target.
RECIPE_FIELDS = tuple(k for k in RUN_RECIPE if k not in ("data", "seed", "data_size", "holdout", "steps"))

# name: changes to recipes.BEFORE_ISSUE_23 (so a candidate stays what it was when defaults change);
# "precision" is the one machine setting an arm may change (bf16 autocast on the CPU, issue 23 lever 1).
RSQRT = dict(lr_schedule="rsqrt", lr_ref_steps=2000)  # the default since 2026-12-04
CANDIDATES = {
    "rsqrt": dict(**RSQRT),  # the defaults of 2026-12-04 (fp32, batch 16): the tables' "defaults" rows of that day
    "clip-rsqrt": dict(clip_grad=1.0, **RSQRT),
    "rsqrt-bf16": dict(precision="bf16", **RSQRT),
    # Twice the batch, as many images per lr phase (ref 1,000 steps of 32 = 2,000 of 16); same peak lr.
    "rsqrt-bf16-b32": dict(precision="bf16", batch_size=32, lr_schedule="rsqrt", lr_ref_steps=1000, warmup_steps=25),
    # The defaults since 2026-12-05 at twice their batch, in the same way: ref 500 steps of 64, same peak lr.
    "rsqrt-bf16-b64": dict(precision="bf16", batch_size=64, lr_schedule="rsqrt", lr_ref_steps=500, warmup_steps=13),
}

DIFFUSERS_SETUP = (
    "diffusers: its unconditional training example's recipe for pixel space from scratch "
    "(train_unconditional.py): DDPMScheduler, 1000 steps, linear betas 1e-4..0.02, epsilon prediction; "
    "AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8, batch 16; 500 warm-up steps, "
    "then constant (the example's cosine needs the run's length, which a time budget does not give); "
    "gradient norm clipped to 1.0; EMAModel (inv_gamma 1, power 3/4, max decay 0.9999), sampled with "
    "the EMA weights. Added for text: UNet2DConditionModel of about diffuse's FLOPs with diffuse's text "
    "encoder (trained with it) and 10% empty captions. Sampled with DPMSolverMultistepScheduler "
    "(DPM-Solver++, 2M), 20 steps, guidance {guidance:g}, the same seeds as diffuse, with the dynamic "
    "thresholding its documentation says to use for pixel-space models (thresholding=True, ratio 0.995, "
    "max 1); the rows 'no thresholding' sample the same weights without it.")

# The baseline's rows: one run, its weights sampled after each budget with and without dynamic
# thresholding (a run of 2026-12-05 without it drew noise-like images at every budget, Frechet
# 3,900-5,100: with linear betas the clean-image estimate from epsilon at the first steps is
# divided by alpha_T = 0.006, so its errors are multiplied 160-fold unless clipped).
DIFFUSERS_SAMPLERS = {"diffusers": True, "diffusers, no thresholding": False}

CLOCK = ("Clock: each system's starts before its setup (drawing the data, building networks, optimizer, "
         "EMA), which counts against the first budget; evaluation, imports, and diffuse's checkpoint "
         "and --resume between budgets do not count.")


def train_defaults() -> dict:
    """TrainConfig's recipe defaults as they are in this checkout."""
    return {f.name: f.default for f in fields(TrainConfig) if f.name in RECIPE_FIELDS}


def arm_machine(name: str) -> dict:
    """Where and how an arm runs: DIFFUSE_MACHINE, with the arm's precision if it sets one; the
    "defaults" arm runs as `diffuse train` does, with --precision auto (bf16 on a CPU with
    AVX-512 BF16 or AMX since 2026-12-05)."""
    if name == "defaults":
        return {**DIFFUSE_MACHINE, "precision": "auto"}
    return {**DIFFUSE_MACHINE, **{k: v for k, v in CANDIDATES.get(name, {}).items() if k == "precision"}}


def arm_recipe(name: str) -> dict:
    """The full recipe of a diffuse arm; every setting given, none left to a default."""
    recipe = {"before": BEFORE_ISSUE_23, "defaults": train_defaults()}.get(name)
    if recipe is None:
        recipe = {**BEFORE_ISSUE_23, **{k: v for k, v in CANDIDATES[name].items() if k != "precision"}}
    missing = [k for k in RECIPE_FIELDS if k not in recipe]
    if missing:
        raise DiffuseError(f"arm {name!r} does not pin {', '.join(missing)}")
    return {k: recipe[k] for k in RECIPE_FIELDS}


def flops_per_image(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- diffuse

TRAINED = "trained_to.json"  # an arm's marker: the last budget whose training finished


def run_diffuse(name: str, recipe: dict, out: Path, budgets: list[float], per_prompt: int, guidance: float,
                record, done: set = frozenset()) -> None:
    """Train the arm budget by budget and score it after each; budgets in `done` (rows of an
    earlier invocation, --continue) are skipped, and a budget whose training finished but whose
    row is missing is only scored."""
    charged = 0.0  # seconds on this arm's clock
    machine = arm_machine(name)
    marker = out / TRAINED
    mark = json.loads(marker.read_text()) if marker.exists() else {"minutes": 0.0, "steps": 0}
    trained_to = mark["minutes"]
    for b in budgets:
        if b in done:
            charged = b * 60
            continue
        t0 = time.monotonic()
        setup = None
        if b > trained_to:
            if not (out / CONFIG_FILE).exists():
                trainer = Trainer(TrainConfig(data="shapes", out=str(out), minutes=b, **DATA, **machine, **recipe))
                charged = setup = time.monotonic() - t0  # data drawing, networks, optimizer, EMA
            else:  # as `diffuse train --resume --minutes M`; not charged: only the benchmark's pause makes it
                steps = json.loads((out / CONFIG_FILE).read_text())["training"]["steps"]
                if steps != mark["steps"]:  # a stop mid-budget saved a checkpoint the clock cannot account for
                    raise DiffuseError(f"{out} holds a checkpoint at step {steps}, not at the end of a budget "
                                       f"(step {mark['steps']}): remove it to run {name} again")
                cfg = resume_config(out, "shapes", minutes=b, **machine)
                if {k: getattr(cfg, k) for k in RECIPE_FIELDS} != recipe:
                    raise DiffuseError(f"--resume did not keep {name}'s recipe")
                trainer = Trainer(cfg)
            left = b * 60 - charged
            if left <= 0:
                print(f"warning: {name}'s setup took {charged:.0f} s, more than the {b:g}-minute budget", flush=True)
            trainer.cfg = replace(trainer.cfg, minutes=max(left, 0.01) / 60)  # run() sets its deadline from this
            trainer.run()
            images, steps = trainer.images_seen, trainer.step
            mark = {"minutes": b, "steps": steps}
            marker.write_text(json.dumps(mark) + "\n")
        else:  # trained by an earlier invocation that stopped before scoring it
            training = json.loads((out / CONFIG_FILE).read_text())["training"]
            images, steps = training["images_seen"], training["steps"]
        charged = b * 60
        pipe = Pipeline.load(out, watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
        r = evaluate_images(lambda prompts, n, seed: sample_diffuse(pipe, prompts, n, seed, guidance), per_prompt)
        record(name, b, r, images, steps, setup)


def sample_diffuse(pipe: Pipeline, prompts: list[str], n: int, seed: int, guidance: float = GUIDANCE,
                   batch_prompts: int = 32) -> torch.Tensor:
    """`diffuse eval`'s images: 20 steps of dpmpp_2m on the karras schedule; image k of prompt i
    from the noise seed eval_seed(seed, i, k) (a request's image k takes its seed + k)."""
    requests = [GenerateRequest(prompt=p, n=n, seed=eval_seed(seed, i), steps=SAMPLER_STEPS, sampler="dpmpp_2m",
                                schedule="karras", guidance=guidance) for i, p in enumerate(prompts)]
    return torch.cat([pipe.sample_batch(requests[s:s + batch_prompts])
                      for s in range(0, len(requests), batch_prompts)]).cpu()


# ----------------------------------------------------------------------------- diffusers

class DiffusersRecipe:
    """What a diffusers user writes for pixel-space training from scratch (see the module docstring)."""

    def __init__(self, data, seed: int = 0):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel
        torch.manual_seed(seed)
        # The text encoder diffuse trains (same tokenizer, same width), kept from a fresh model.
        self.text = TextToImageModel.create(preset("small"), data.captions)
        width = self.text.text_encoder.cfg.width
        self.unet = UNet2DConditionModel(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=width, attention_head_dim=2, norm_num_groups=8)
        # train_unconditional.py: DDPMScheduler(num_train_timesteps=1000), i.e. linear betas 1e-4..0.02.
        self.train_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        self.params = list(self.unet.parameters()) + list(self.text.text_encoder.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
        self.lr_sched = get_scheduler("constant_with_warmup", optimizer=self.opt, num_warmup_steps=500)
        self.ema = EMAModel(self.params, decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        self.data, self.gen, self.images_seen, self.steps = data, torch.Generator().manual_seed(seed), 0, 0

    def states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.text.encode(prompts)
        return cond.tokens, cond.mask.float()

    def train(self, mode: bool = True) -> None:
        self.unet.train(mode)
        self.text.text_encoder.train(mode)

    def train_for(self, seconds: float, batch: int = 16) -> None:
        self.train()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            idx = batch_indices(len(self.data), self.images_seen, batch, DATA["seed"])  # diffuse's data order
            x0 = self.data.images[idx]
            drop = torch.rand(batch, generator=self.gen) < 0.1
            caps = ["" if d else self.data.captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
            noise = torch.randn(x0.shape, generator=self.gen)
            t = torch.randint(0, 1000, (batch,), generator=self.gen)
            states, mask = self.states(caps)
            pred = self.unet(self.train_sched.add_noise(x0, noise, t), t, states, encoder_attention_mask=mask).sample
            loss = F.mse_loss(pred, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.lr_sched.step()
            self.ema.step(self.params)
            self.opt.zero_grad(set_to_none=True)
            self.images_seen += batch
            self.steps += 1

    @torch.no_grad()
    def sample(self, prompts: list[str], n: int, seed: int, guidance: float = GUIDANCE, thresholding: bool = True,
               batch_prompts: int = 32) -> torch.Tensor:
        """The EMA weights' images, image k of prompt i from the noise seed eval_seed(seed, i, k).
        thresholding: DPM-Solver++ with Imagen's dynamic thresholding of its clean-image estimate,
        which diffusers' documentation of the scheduler says to turn on for pixel-space models."""
        from diffusers import DPMSolverMultistepScheduler
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        self.train(False)
        out = []
        try:
            for s in range(0, len(prompts), batch_prompts):
                chunk = prompts[s:s + batch_prompts]
                seeds = [eval_seed(seed, s + i, k) for i in range(len(chunk)) for k in range(n)]
                sched = DPMSolverMultistepScheduler.from_config(  # fresh: it keeps step state
                    self.train_sched.config, algorithm_type="dpmsolver++", thresholding=thresholding)
                sched.set_timesteps(SAMPLER_STEPS)
                x = SeededNoise(seeds, (3, 32, 32), torch.device("cpu"))() * sched.init_noise_sigma
                caps = [p for p in chunk for _ in range(n)]
                states, mask = self.states(caps + [""] * len(caps))
                for t in sched.timesteps:
                    eps = self.unet(sched.scale_model_input(torch.cat([x, x]), t), t, states,
                                    encoder_attention_mask=mask).sample
                    cond, uncond = eps.chunk(2)
                    x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
                out.append(x.clamp(-1, 1))
        finally:
            self.ema.restore(self.params)
            self.train()
        return torch.cat(out)


def run_diffusers(budgets: list[float], per_prompt: int, guidance: float, record) -> None:
    t0 = time.monotonic()
    recipe = DiffusersRecipe(load_dataset("shapes", 32, seed=DATA["seed"], shapes=DATA["data_size"],
                                          holdout=DATA["holdout"]), seed=DATA["seed"])
    charged = setup = time.monotonic() - t0  # data drawing, networks, optimizer, EMA
    for b in budgets:
        if b * 60 <= charged:
            print(f"warning: diffusers' setup took {charged:.0f} s, more than the {b:g}-minute budget", flush=True)
        recipe.train_for(b * 60 - charged)
        charged = b * 60
        for system, thresholding in DIFFUSERS_SAMPLERS.items():  # the same weights, sampled both ways
            r = evaluate_images(lambda prompts, n, seed: recipe.sample(prompts, n, seed, guidance, thresholding),
                                per_prompt)
            record(system, b, r, recipe.images_seen, recipe.steps, setup)
        setup = None


def print_flops() -> dict:
    recipe = DiffusersRecipe(load_dataset("shapes", 32, shapes=64))
    ours = TextToImageModel.create(preset("small"), recipe.data.captions)
    x, c = torch.zeros(1, 3, 32, 32), ours.encode(["a red circle"])
    s, m = recipe.states(["a red circle"])
    g = {"diffuse": flops_per_image(lambda: ours(x, torch.ones(1), c)) / 1e9,
         "diffusers": flops_per_image(lambda: recipe.unet(x, torch.ones(1), s, encoder_attention_mask=m)) / 1e9}
    print(f"GFLOPs per image, forward: diffuse {g['diffuse']:.3f}, diffusers {g['diffusers']:.3f}")
    return g


# ----------------------------------------------------------------------------- shared

def evaluate_images(sample, per_prompt: int, seed: int = 0) -> dict:
    """`diffuse eval`'s figures for the images sample(prompts, per_prompt, seed) makes."""
    task = TASKS["shapes"]
    reader, _ = load_reader("shapes", 32)
    prompts = task.prompts()
    images = sample([p.prompt for p in prompts], per_prompt, seed)
    return score(reader, task, images, prompts, per_prompt, 32, seed)


HEADER = ("| system | minutes | images trained on | steps | all attributes, seen | shape, seen | held-out | "
          "Frechet (floor) | diversity |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def summarise(system: str, minutes: float, r: dict, images: int, steps: int, setup_s: float | None) -> dict:
    seen = r["match"]["seen"]
    row = {"system": system, "minutes": minutes, "images": images, "steps": steps, "setup_s": setup_s,
           "seen": seen["all"], "shape": seen["shape"], "held_out": r["match"]["held-out"]["all"],
           "frechet": r["frechet"], "floor": r["frechet_floor"], "diversity": r.get("diversity")}
    div = "-" if row["diversity"] is None else f"{row['diversity']:.2f}"
    print(f"| {system} | {minutes:g} | {images:,} | {steps:,} | {row['seen']:.1%} | {row['shape']:.1%} | "
          f"{row['held_out']:.1%} | {row['frechet']:.2f} ({row['floor']:.2f}) | {div} |", flush=True)
    return row


def main():
    arms = ["before", "defaults", *CANDIDATES]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[5, 10, 20, 60], help="cumulative minutes")
    ap.add_argument("--systems", nargs="+", default=["before", "defaults", "diffusers"],
                    choices=arms + ["diffusers"], help="diffuse arms by name, and diffusers")
    ap.add_argument("--out", default="runs/time_to_quality")
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=GUIDANCE, help="both sides (default: %(default)s)")
    ap.add_argument("--continue", dest="resume", action="store_true",
                    help="go on with the diffuse arms of an earlier invocation with the same --out (a session that "
                         "ended mid-run): the rows in its results.json are kept, each arm resumes from its checkpoint")
    a = ap.parse_args()
    if any(b <= 0 for b in a.budgets) or a.budgets != sorted(set(a.budgets)):
        raise SystemExit("--budgets must be positive and increasing (cumulative minutes)")
    out = Path(a.out)
    diffuse_arms = [s for s in a.systems if s != "diffusers"]
    taken = [str(out / s) for s in diffuse_arms if (out / s / CONFIG_FILE).exists()]
    if a.resume and "diffusers" in a.systems:
        raise SystemExit("--continue goes on with diffuse arms only: diffusers keeps its model in memory")
    if taken and not a.resume:
        raise SystemExit(f"{', '.join(taken)} already hold a checkpoint: choose another --out or remove them")
    out.mkdir(parents=True, exist_ok=True)

    recipes = {name: arm_recipe(name) for name in diffuse_arms}
    for name, recipe in recipes.items():
        print(f"{name} ({arm_machine(name)['precision']}): " + ", ".join(f"{k} {v}" for k, v in recipe.items()))
    if "before" in recipes and "defaults" in recipes and recipes["before"] == recipes["defaults"]:
        print("note: the defaults of `diffuse train` are still the pre-issue-23 recipe")
    earlier = json.loads((out / "results.json").read_text()) if a.resume and (out / "results.json").exists() else None
    if earlier and (earlier["per_prompt"], earlier["guidance"]) != (a.per_prompt, a.guidance):
        raise SystemExit("--continue needs the earlier invocation's --per-prompt and --guidance")
    results = {"budgets": a.budgets, "per_prompt": a.per_prompt, "guidance": a.guidance,
               "sampler": f"dpmpp_2m / DPMSolverMultistepScheduler, {SAMPLER_STEPS} steps", "data": DATA,
               "arms": {**(earlier or {}).get("arms", {}), **recipes},
               "precision": {**(earlier or {}).get("precision", {}), **{n: arm_machine(n)["precision"] for n in recipes}},
               "clock": CLOCK, "rows": (earlier or {}).get("rows", [])}
    if "diffusers" in a.systems:
        results["gflops"] = print_flops()  # imports diffusers before any clock starts
        results["diffusers_setup"] = DIFFUSERS_SETUP.format(guidance=a.guidance)
        print(results["diffusers_setup"])
    print(CLOCK)
    print(f"Scored like `diffuse eval`: 108 prompts x {a.per_prompt}, seeds eval_seed(0, prompt, image), "
          f"{SAMPLER_STEPS} sampler steps, guidance {a.guidance:g}.")
    print(HEADER)

    def record(system, minutes, r, images, steps, setup_s):
        results["rows"].append(summarise(system, minutes, r, images, steps, setup_s))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    for row in results["rows"]:  # an earlier invocation's, as they were
        div = "-" if row["diversity"] is None else f"{row['diversity']:.2f}"
        print(f"| {row['system']} | {row['minutes']:g} | {row['images']:,} | {row['steps']:,} | {row['seen']:.1%} | "
              f"{row['shape']:.1%} | {row['held_out']:.1%} | {row['frechet']:.2f} ({row['floor']:.2f}) | {div} | "
              f"(earlier)", flush=True)
    for name in diffuse_arms:
        done = {r["minutes"] for r in results["rows"] if r["system"] == name}
        run_diffuse(name, recipes[name], out / name, a.budgets, a.per_prompt, a.guidance, record, done)
    if "diffusers" in a.systems:
        run_diffusers(a.budgets, a.per_prompt, a.guidance, record)


if __name__ == "__main__":
    main()
