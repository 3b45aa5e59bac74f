"""The `diffuse` command: train, data, generate, img2img, inpaint, outpaint, vary, explain, plot, eval, copies,
info, inspect, serve.

Errors in the user's input print one line, `diffuse: error: ...`, and exit with code 2.
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .devices import DEVICES
from .editing import VARY_STRENGTH, open_image
from .errors import DiffuseError
from .networks import PRESETS
from .prompts import SEED_STRIDE
from .samplers import SAMPLERS
from .schedules import SCHEDULES


MODEL_HELP = ("a bundled model, shapes, emoji or shapes-fast (shapes distilled to few steps), or a checkpoint "
              "directory from diffuse train (./NAME for a folder named like a bundled model) (default: shapes)")
SEED_RANGE = "an integer from 0 to 2^32 - 1"  # pipeline.MAX_SEED; larger seeds are an error, not reduced


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_train(sub):
    p = sub.add_parser("train", help="train a model on captioned images",
                       description="Train a text-to-image model. DATA is 'shapes' (procedural captioned shapes), "
                                   "'digits' (scikit-learn's digits), 'emoji' (emoji art in three styles, built into "
                                   "the cache on first use: see diffuse data emoji) or an image folder with captions "
                                   "(metadata.jsonl lines {\"file_name\", \"text\"} or a .txt file beside each image). "
                                   "With --resume, every setting of what is trained (network, data, batch, learning "
                                   "rate and schedule, EMA, noise levels, dropout, clipping, --steps) is the run's "
                                   "own unless given again, and a changed one is named.")
    d = _train_default
    p.add_argument("--data", help="shapes, digits, emoji or a path to an image folder (with --resume: the run's own; another is refused)")
    p.add_argument("--out", required=True, help="run directory for the checkpoint, log.jsonl and previews/")
    p.add_argument("--preset", choices=list(PRESETS), help=f"network size (default: {d('preset')})")
    p.add_argument("--size", type=int, choices=[32, 64], help=f"image size (default: {d('image_size')})")
    budget = p.add_argument_group("budget (at least one; a resumed run keeps its --steps)")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes for this invocation")
    budget.add_argument("--steps", type=int, help="total optimizer steps of the run (resumed steps count)")
    p.add_argument("--batch-size", type=int,
                   help="images per micro-batch in each process; the global batch of one optimizer step is "
                        f"batch size x processes x grad-accum (default: {d('batch_size')})")
    p.add_argument("--grad-accum", type=int,
                   help="micro-batches per optimizer step in each process: a larger global batch in the same "
                        f"memory (default: {d('grad_accum')})")
    p.add_argument("--lr", type=float, help=f"AdamW peak learning rate (default: {d('lr'):g})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default: {d('weight_decay'):g})")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "rsqrt"],
                   help="after the warm-up: constant; cosine decay to lr/10 at the last of --steps; or rsqrt, "
                        "EDM2's lr / sqrt(step / ref) after --lr-ref-steps, which a longer --steps continues "
                        f"unchanged (default: {d('lr_schedule')})")
    p.add_argument("--lr-ref-steps", type=int,
                   help=f"rsqrt: steps at the peak rate before the decay (default: {d('lr_ref_steps')})")
    p.add_argument("--seed", type=int, help=f"run seed: data order, noise (default: {d('seed')})")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto = bf16 autocast on a CPU with AVX-512 BF16 or AMX (1.4x the images/s of fp32 at batch 32, "
                        "and better after 60 minutes), else fp32 (TF32 on CUDA, where bf16 was no faster below the "
                        "large preset) (default: auto)")
    _add_device(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (minutes of compiling on first use, cached after; see docs/scaling.md)")
    p.add_argument("--preview-every", type=int, default=500, help="steps between preview grids, 0 for none (default: 500)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default: 1000)")
    p.add_argument("--data-size", type=int, help=f"images drawn for 'shapes' (default: {d('data_size')})")
    p.add_argument("--all-pairs", action="store_true", default=None,
                   help="train on the pairs held out for evaluation too: shapes' six (shape, colour) pairs, an image "
                        "folder's rows marked \"held_out\" (emoji: about 10%% of (concept, style) pairs)")
    p.add_argument("--ema-halflife-kimg", type=float,
                   help=f"EMA half-life in thousands of images (default: {d('ema_halflife_kimg'):g}; "
                        "longer runs gain from longer)")
    p.add_argument("--p-mean", type=float,
                   help=f"mean of ln(sigma) of the training noise levels, EDM's log-normal (default: {d('p_mean')})")
    p.add_argument("--p-std", type=float, help=f"standard deviation of ln(sigma) (default: {d('p_std')})")
    lo, hi = _high_sigma_range()
    p.add_argument("--high-sigma-share", type=float,
                   help=f"share of training noise levels drawn log-uniformly from [{lo:g}, {hi:g}], where sampling "
                        "starts and the log-normal rarely reaches; the bundled model used 0.1 from step 54,000 on "
                        f"(default: {d('high_sigma_share')})")
    p.add_argument("--clip-grad", type=float,
                   help=f"clip the global gradient norm to this value, 0 for no clipping (default: {d('clip_grad'):g})")
    p.add_argument("--caption-dropout", type=float,
                   help=f"share of captions replaced by the empty one, which guidance needs (default: {d('caption_dropout')})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped, with its own settings unless given")
    p.add_argument("--init", metavar="MODEL",
                   help="start a new run from a model's weights, network and vocabulary (emoji, shapes or a "
                        "checkpoint directory): fine-tune it, or train it on after its run's state is gone; its "
                        "--preset and --size unless given; EMA, optimizer, steps and learning-rate schedule start "
                        "afresh, so give a --lr fit for where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_credentials(p)  # the preview grids
    p.epilog = ("Ctrl-C stops at the end of the current step and saves (a second Ctrl-C stops at once). "
                "Under torchrun (e.g. torchrun --nproc_per_node=2 -m diffuse train ...) every process trains on its "
                "own share of each global batch and only rank 0 writes; see docs/scaling.md.")


def _train_default(name: str):
    from .training import TrainConfig
    return TrainConfig.__dataclass_fields__[name].default


def _high_sigma_range() -> tuple[float, float]:
    from .denoiser import EDMLoss
    return EDMLoss.__dataclass_fields__["high_range"].default


def _request_default(name: str):
    from .pipeline import GenerateRequest
    return GenerateRequest.__dataclass_fields__[name].default


def _sampler_defaults() -> tuple[str, str]:
    from .pipeline import DEFAULT_SAMPLER, INPAINT_SAMPLER
    return DEFAULT_SAMPLER, INPAINT_SAMPLER


def _add_device(p):
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="auto = cuda when a GPU is visible, else cpu; under torchrun each process takes the GPU "
                        "of its LOCAL_RANK (default: auto)")


def _add_watermark(p):
    p.add_argument("--no-watermark", action="store_true",
                   help="leave the start-noise watermark out (by default each image's start noise carries a mark "
                        "that diffuse inspect reads back; see diffuse/watermark.py)")


def _add_credentials(p):
    """Content credentials (C2PA) of the PNGs a command writes; see diffuse/credentials.py."""
    p.add_argument("--no-credentials", action="store_true",
                   help="write PNGs without content credentials (by default each carries a signed C2PA manifest "
                        "saying a generative AI model made it, with the model and parameters)")
    p.add_argument("--c2pa-cert", metavar="PEM",
                   help="certificate chain to sign with, signing certificate first (default: $DIFFUSE_C2PA_CERT, else "
                        "a local key made once in c2pa/ of the config folder: $DIFFUSE_CONFIG, else ~/.config/diffuse)")
    p.add_argument("--c2pa-key", metavar="PEM", help="its private key (default: $DIFFUSE_C2PA_KEY)")


def _add_sampling(p, prompt_help: str | None = None, writes_images: bool = True, steps: int | None = None):
    """Options every generating command shares (they fill one GenerateRequest). Commands that
    draw one picture of the process (explain) take one image and their own --out. With
    `prompt_help` the prompt is optional."""
    if prompt_help:
        p.add_argument("prompt", nargs="?", help=prompt_help)
    else:
        p.add_argument("prompt", help="what to draw")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--negative-prompt", default="", help="what guidance steers away from")
    if writes_images:
        p.add_argument("-n", "--num", type=int, default=1, help="number of images (default: 1)")
    else:
        p.set_defaults(num=1)
    p.add_argument("--seed", type=int, help=f"seed of the first image, {SEED_RANGE}; image k uses seed+k (default: random)")
    p.add_argument("--steps", type=int,
                   help=f"sampler steps (default: {steps or _request_default('steps')}, or a distilled model's own)")
    p.add_argument("--sampler", choices=list(SAMPLERS),
                   help="default: {}; {} for inpaint and outpaint, where it measured best; a distilled model's "
                        "own".format(*_sampler_defaults()))
    p.add_argument("--schedule", choices=list(SCHEDULES),
                   help=f"sigma schedule (default: {_request_default('schedule')}, or a distilled model's own)")
    p.add_argument("--guidance", type=float, default=_request_default("guidance"),
                   help="classifier-free guidance scale; 1 = off (default: %(default)s)")
    p.add_argument("--eta", type=float, help="noise for ddim (default 0) and euler_ancestral (default 1); "
                                             "an error with the other samplers, which add none")
    p.add_argument("--width", type=int, help="default: the input image's or the model's size")
    p.add_argument("--height", type=int, help="default: the input image's or the model's size")
    p.add_argument("--variation-seed", type=int, help=f"seed variations: blend this seed's noise in ({SEED_RANGE})")
    p.add_argument("--variation-strength", type=float, default=0.0, help="0 = the seed's image, 1 = the variation seed's")
    if writes_images:
        p.add_argument("--out", default="outputs", help="a folder, or a .png file name (default: outputs/)")
        p.add_argument("--grid", action="store_true", help="also write all images as one grid")
    _add_device(p)
    _add_credentials(p)
    _add_watermark(p)


def _add_generate(sub):
    p = sub.add_parser("generate", help="generate images from a prompt or a file of prompts",
                       description="Generate images from a text prompt. Each image k gets seed+k and the PNG "
                                   "records every parameter that made it.")
    _add_sampling(p, prompt_help="what to draw (or give --prompts FILE)")
    p.add_argument("--prompts", metavar="FILE",
                   help="one prompt per line, or JSON objects {\"prompt\": ..., \"n\": ..., \"seed\": ...} with any "
                        "of negative_prompt, n, seed, steps, sampler, schedule, guidance, eta, width, height, "
                        "variation_seed, variation_strength (the options above are the defaults). Prompt i (from 0, blank lines skipped) "
                        f"starts at seed + {SEED_STRIDE} i unless its line gives a seed (--seed defaults to 0 here). "
                        "Under torchrun each process draws every W-th prompt; the images are the same.")


def _add_edit(sub):
    p = sub.add_parser("img2img", help="turn an image into another, guided by a prompt",
                       description="Image-to-image: noise the input to the level --strength selects and denoise it "
                                   "toward the prompt. round(strength x steps) steps run; strength 0 returns the "
                                   "input, 1 ignores it.")
    p.add_argument("image", help="input image (any size the model can make, or give --width/--height)")
    _add_sampling(p)
    p.add_argument("--strength", type=float, default=0.8, help="0..1, how much to change (default: 0.8)")

    p = sub.add_parser("inpaint", help="repaint the masked part of an image",
                       description="Inpainting: repaint where MASK is white (any mode; grey = blend; an alpha "
                                   "channel marks transparent pixels for repainting), keep the rest exactly.")
    p.add_argument("image", help="input image")
    p.add_argument("mask", help="mask image of the same size: white = repaint, black = keep")
    _add_sampling(p)
    p.add_argument("--strength", type=float, default=1.0, help="0..1; below 1 the masked part starts from the input (default: 1)")

    p = sub.add_parser("outpaint", help="extend an image beyond its borders",
                       description="Outpainting: pad the canvas by the given pixels (edges stretched) and inpaint the "
                                   "new border. The result's sides must be sizes the model can make.")
    p.add_argument("image", help="input image")
    _add_sampling(p)
    for side in ("left", "top", "right", "bottom"):
        p.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add on the {side}")
    p.add_argument("--all", type=int, default=0, help="pixels to add on every side")

    p = sub.add_parser("vary", help="variations of an image (low-strength img2img, new seeds)",
                       description="Variations of an image: image-to-image at low strength with new seeds. For "
                                   "variations of a seed use generate --variation-seed/--variation-strength.")
    p.add_argument("image", help="input image")
    _add_sampling(p, prompt_help="what to draw (default: the prompt recorded in the image, if any)")
    p.add_argument("--strength", type=float, default=VARY_STRENGTH,
                   help=f"0..1, how far from the image (default: {VARY_STRENGTH})")


DENOISE_STEPS = 10  # explain denoise: ten frames show the process and draw quickly


def _add_explain(sub):
    p = sub.add_parser("explain", help="pictures of how diffusion works",
                       description="Pictures of the process: the forward noising, the reverse denoising step by "
                                   "step, the effect of guidance, and of a specific prompt.")
    esub = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    q = esub.add_parser("noise", help="an image under growing noise, labelled with sigma and SNR",
                        description="The forward process x = y + sigma * n as a strip, one fixed noise n.")
    q.add_argument("image", help="any image")
    q.add_argument("--sigmas", type=float, nargs="+", help="noise levels (default: 0 0.05 0.1 0.2 0.5 1 2 5 20 80)")
    q.add_argument("--size", type=int, default=64, help="tile size in pixels (default: 64)")
    q.add_argument("--seed", type=int, default=0, help=f"seed of the noise, {SEED_RANGE} (default: 0)")
    q.add_argument("--out", default="outputs/explain-noise.png", help="PNG to write")
    _add_credentials(q)
    q = esub.add_parser("denoise", help="each step's noisy image and guess of the clean image",
                        description="The reverse process: for each step, x_t (top) and the model's guess of the "
                                    "clean image (bottom), as a strip PNG and an animated GIF (one frame per step).")
    _add_sampling(q, writes_images=False, steps=DENOISE_STEPS)
    q.add_argument("--out", default="outputs/explain-denoise.png", help="PNG to write; the GIF goes beside it")
    q.set_defaults(seed=0)
    q = esub.add_parser("guidance", help="the same seed at several guidance scales",
                        description="One prompt, one seed, a row of classifier-free guidance scales.")
    _add_sampling(q, writes_images=False)
    q.add_argument("--scales", type=float, nargs="+",
                   help="default: 0 1 2 3 5 8, or for a distilled model five from the range it learned (1 1.75 2.5 "
                        "3.25 4)")
    q.add_argument("--out", default="outputs/explain-guidance.png", help="PNG to write")
    q.set_defaults(seed=0)
    q = esub.add_parser("prompt", help="a vague and a specific prompt at the same seeds",
                        description="Rows of images for each prompt at the same seeds: specific prompts give "
                                    "focused, consistent results; vague ones vary.")
    q.add_argument("prompts", nargs="+", help="two or more prompts, e.g. \"a shape\" \"a large red circle on white\"")
    q.add_argument("--model", help=MODEL_HELP)
    q.add_argument("-n", "--num", type=int, default=4, help="seeds per prompt (default: 4)")
    q.add_argument("--seed", type=int, default=0, help=f"first seed, {SEED_RANGE} (default: 0)")
    q.add_argument("--steps", type=int, help="sampler steps (default: 20, or a distilled model's own)")
    q.add_argument("--out", default="outputs/explain-prompt.png", help="PNG to write")
    _add_device(q)
    _add_credentials(q)
    _add_watermark(q)
    q = esub.add_parser("styles", help="subjects in each style, one row per style",
                        description="A grid with one row per style and one column per subject, each cell the "
                                    "prompt '<subject>, <style> style' at the same seed. The styles are the ones "
                                    "the model was trained with (the emoji model: twemoji, noto, openmoji).")
    q.add_argument("subjects", nargs="+", help="what to draw, e.g. \"a red apple\" \"a taxi\"")
    q.add_argument("--model", default="emoji", help="as elsewhere (default: emoji)")
    q.add_argument("--styles", help="comma-separated style words (default: the model's own)")
    q.add_argument("--seed", type=int, default=0, help=f"the seed of every cell, {SEED_RANGE} (default: 0)")
    q.add_argument("--steps", type=int, help="sampler steps (default: 20, or a distilled model's own)")
    q.add_argument("--out", default="outputs/explain-styles.png", help="PNG to write")
    _add_device(q)
    _add_credentials(q)
    _add_watermark(q)
    q = esub.add_parser("copies", help="generated images beside their nearest training images",
                        description="The most copy-like of N generated images (or of --images), each beside its "
                                    "three nearest training images in pixels with their distances; the report of "
                                    "diffuse copies is printed too.")
    _add_copies_options(q)
    q.add_argument("--rows", type=int, default=8, help="generated images shown (default: 8)")
    q.add_argument("--out", default="outputs/explain-copies.png", help="PNG to write")
    _add_credentials(q)

    p = sub.add_parser("plot", help="training curves of a run as a PNG",
                       description="Plot loss (raw and smoothed), images/s and any evaluation figures from a run's log.jsonl.")
    p.add_argument("run", help="run directory (the --out of diffuse train)")
    p.add_argument("--out", help="PNG to write (default: RUN/curves.png)")


def _add_info(sub):
    p = sub.add_parser("info", help="show what a checkpoint holds",
                       description="Show a checkpoint's network, text encoder, training data and steps.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print config.json's summary as JSON")


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="what an image says about how it was made",
                       description="For each image: the parameters diffuse recorded in it and the one command that "
                                   "makes it again, its content credentials (C2PA manifest: generator, model, digital "
                                   "source type, signer) and whether their signature is valid, and its start-noise "
                                   "watermark, read by inverting the sampler with each candidate model (the chance "
                                   "that an unmarked image agrees as well, and the 32-bit payload). A valid signature "
                                   "proves only that the file is unchanged since it was signed by whoever holds the "
                                   "key; a found mark, that it was made with the model and diffuse's public key. A "
                                   "file that cannot be read is a one-line error (exit code 2); the others are still "
                                   "inspected.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG; others for their C2PA manifest)")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="a model to read the watermark with, repeatable (default: the bundled models and the "
                        "checkpoint folder an image names, if it is here)")
    p.add_argument("--no-watermark", action="store_true", help="do not read the watermark (loads no model)")
    p.add_argument("--json", action="store_true", help="print one JSON object per line, one line per image")
    _add_device(p)


def _add_eval(sub):
    p = sub.add_parser("eval", help="measure prompt adherence of a shapes, digits or emoji model",
                       description="Generate images for a fixed prompt set of the model's data and read them with a "
                                   "small classifier trained on real images (the emoji one of the 32-px build ships with "
                                   "diffuse; the others are trained on first use and cached). Shapes or "
                                   "digits: match rates per attribute and for all at once, seen and held-out (shape, "
                                   "colour) pairs apart, a Frechet distance in the classifier's features against real "
                                   "draws with its floor, diversity, and what the attribute matched least was read as "
                                   "(a confusion table). Emoji: concept top-1 and top-5 among all concepts and style "
                                   "accuracy, seen and held-out (concept, style) pairs apart, the Frechet distance "
                                   "with its floor, diversity, the categories and concepts confused most, and the "
                                   "reader's own accuracy on real pictures it never saw.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--model", dest="model_option", metavar="MODEL", help="the same as the positional MODEL")
    p.add_argument("--per-prompt", type=int, default=2, help="images per prompt (default: 2; at least 2 for diversity)")
    p.add_argument("--seed", type=int, default=0,
                   help="which set of images: every (seed, prompt, image) has its own noise, so two seeds share "
                        "no image; 0 to 4095 (default: 0)")
    p.add_argument("--steps", type=int,
                   help=f"sampler steps (default: {_request_default('steps')}, or a distilled model's own)")
    p.add_argument("--sampler", choices=list(SAMPLERS),
                   help=f"(default: {_sampler_defaults()[0]}, or a distilled model's own)")
    p.add_argument("--guidance", type=float, default=_request_default("guidance"),
                   help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--read-size", type=int, choices=[32, 64],
                   help="emoji models: read the images at this size, resized (antialiased) as the emoji folder's "
                        "are, so that models of both sizes have one judge, the shipped 32-px reader (default: "
                        "the model's size)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH ('-' for stdout only)")
    p.add_argument("--watermark", action="store_true",
                   help="draw with the start-noise watermark, as generate does (by default eval draws unmarked "
                        "images, as every table made before the mark was; the mark leaves the noise N(0, I))")
    _add_device(p)


def _add_copies_options(p):
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--data", help="its training images, a data name or folder (default: what the checkpoint records)")
    p.add_argument("-n", "--num", type=int, default=200, help="images to generate (default: 200)")
    p.add_argument("--images", metavar="DIR", help="check the images in DIR instead of generating")
    p.add_argument("--seed", type=int, default=0,
                   help="picks the training captions prompted with, and image i's seed is seed + i (default: 0)")
    p.add_argument("--steps", type=int,
                   help=f"sampler steps (default: {_request_default('steps')}, or a distilled model's own)")
    p.add_argument("--guidance", type=float, default=_request_default("guidance"),
                   help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the report (every image's nearest) as JSON")
    _add_device(p)
    _add_watermark(p)


def _add_copies(sub):
    p = sub.add_parser("copies", help="does the model copy its training images? near-copies of generated images",
                       description="Generate N images from the captions of N training images (or take --images DIR) "
                                   "and find each one's nearest training images in pixels (the tiled L2 of Carlini et "
                                   "al. 2023) and in the evaluator's features (shapes, digits, emoji). A near-copy is "
                                   "closer to one training image, relative to its 50 nearest, than 99% of training "
                                   "images are to their nearest other one. Prints the share of near-copies against "
                                   "the share draws like the training images get, and a verdict.")
    _add_copies_options(p)
    p.add_argument("--picture", metavar="PNG", help="also draw the most copy-like images beside their nearest "
                                                     "(as diffuse explain copies)")
    _add_credentials(p)


def _add_distill(sub):
    from .distill import METHODS, DistillConfig
    d = lambda name: DistillConfig.__dataclass_fields__[name].default  # noqa: E731
    p = sub.add_parser("distill", help="distil a model into a few-step student with guidance built in",
                       description="Progressive distillation (Salimans & Ho 2022) with the guidance scale an input of "
                                   "the student (Meng et al. 2023): the first student learns to take, in one Euler "
                                   "step, the guided teacher's Heun solution over each interval of its karras0 grid; "
                                   "each next student does two steps of the previous one in one, down to --steps. "
                                   "Each student is saved in OUT/rounds/<N>-steps when its round ends, and a round in "
                                   "progress every --save-every iterations (run the same command again to go on "
                                   "after a stop), the last one in OUT. A student samples "
                                   "only as it was trained: its steps, the euler sampler and the karras0 schedule, "
                                   "which every command picks by default for it. --method consistency instead "
                                   "trains one consistency model (Song et al. 2023, consistency distillation) that "
                                   "samples in any number of steps with the consistency sampler (--steps is its "
                                   "default) on any schedule (cm is its default), saved in "
                                   "OUT/rounds/consistency and OUT. With --segments it trains a multistep "
                                   "consistency model (Heek et al. 2024) instead, which samples only in --steps "
                                   "Euler steps on the cm levels.")
    p.add_argument("--teacher", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="the student's checkpoint folder")
    p.add_argument("--steps", type=int, choices=[1, 2, 4, 8], default=d("steps"), help="the student's steps (default: %(default)s)")
    p.add_argument("--start-steps", type=int, default=d("start_steps"),
                   help="the first student's steps, --steps times a power of two (default: %(default)s)")
    p.add_argument("--teacher-substeps", type=int, default=d("teacher_substeps"),
                   help="Heun steps of the teacher per interval of the first student (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=d("iterations"), help="training steps per student (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d("batch_size"), help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=d("lr"), help="Adam's rate, decayed to 0 in each round (default: %(default)s)")
    p.add_argument("--guidance-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   default=[d("guidance_min"), d("guidance_max")],
                   help="the guidance scales the student learns (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d("seed"), help="(default: %(default)s)")
    p.add_argument("--method", choices=list(METHODS), default=d("method"), help="(default: %(default)s)")
    p.add_argument("--levels", type=int, default=d("levels"),
                   help="consistency: levels of the teacher's grid (default: %(default)s)")
    p.add_argument("--ema", type=float, default=d("ema"),
                   help="consistency: the target network's EMA rate (default: %(default)s)")
    p.add_argument("--segments", action="store_true",
                   help="consistency: a multistep consistency model (Heek et al. 2024) of --steps segments on the cm "
                        "levels, consistent within each and sampled by Euler steps between them")
    p.add_argument("--save-every", type=int, default=d("save_every"),
                   help="iterations between saves of a round in progress, from which the same command goes on "
                        "after a stop; 0: only at a round's end (default: %(default)s)")
    _add_device(p)


def cmd_distill(a) -> None:
    from .devices import resolve_device
    from .distill import DistillConfig, distill, halvings
    try:
        if a.method == "progressive":
            halvings(a.start_steps, a.steps)
    except ValueError as e:
        raise DiffuseError(str(e)) from None
    lo, hi = a.guidance_range
    if not 0 <= lo <= hi <= 100:
        raise DiffuseError("--guidance-range needs 0 <= MIN <= MAX <= 100")
    for name in ("iterations", "batch_size", "teacher_substeps"):
        if getattr(a, name) < 1:
            raise DiffuseError(f"--{name.replace('_', '-')} must be at least 1")
    if a.lr <= 0:
        raise DiffuseError("--lr must be above 0")
    if a.levels < 2:
        raise DiffuseError("--levels must be at least 2")
    if not 0 <= a.ema < 1:
        raise DiffuseError("--ema must be at least 0 and below 1")
    if a.save_every < 0:
        raise DiffuseError("--save-every must be 0 or more")
    cfg = DistillConfig(teacher=a.teacher, out=a.out, steps=a.steps, start_steps=a.start_steps,
                        teacher_substeps=a.teacher_substeps, iterations=a.iterations, batch_size=a.batch_size,
                        lr=a.lr, guidance_min=lo, guidance_max=hi, seed=a.seed, method=a.method, levels=a.levels,
                        ema=a.ema, save_every=a.save_every, segments=a.segments,
                        device=resolve_device(a.device))
    print(distill(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True)))


def _styles(text: str) -> list[str]:
    from .emoji import STYLES
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in STYLES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown style {bad[0]!r}: choose from {','.join(STYLES)}" if bad else
                                         f"give at least one style of {','.join(STYLES)}")
    return names


def _add_data(sub):
    p = sub.add_parser("data", help="build a captioned image folder to train on",
                       description="Build a captioned image folder that diffuse train --data takes.")
    dsub = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    q = dsub.add_parser("emoji", help="emoji art of everyday concepts in three styles",
                        description="Write emoji art (Twemoji, Noto Color Emoji, OpenMoji) of ~1,650 concepts with "
                                    "their skin-tone and gender variants as an image folder: STYLE/*.png, "
                                    "metadata.jsonl (three captions per image: CLDR name, keywords, category, style) "
                                    "and LICENSES.md. About 10% of (concept, style) pairs are marked held_out and "
                                    "left out of training. Needs pip install 'diffuse[emoji]' and, for noto, "
                                    "apt-get install fonts-noto-color-emoji.")
    q.add_argument("out", help="folder to write (must not exist, or be empty)")
    q.add_argument("--styles", type=_styles, default="twemoji,noto,openmoji",
                   help="comma-separated styles (default: twemoji,noto,openmoji)")
    q.add_argument("--size", type=int, default=32, choices=[32, 64], help="image size (default: 32)")
    q.add_argument("--flags", action="store_true", help="include the ~270 flags (left out by default)")
    q.add_argument("--limit", type=int, help="only the first N emoji of Unicode's list, for a quick look")
    q.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_serve(sub):
    p = sub.add_parser("serve", help="serve models over HTTP: OpenAI-style Images API and a web page",
                       description="Serve models over HTTP: OpenAI-compatible /v1/images/generations, edits and "
                                   "variations, a live-progress stream (/v1/diffuse/stream), a web page at /, and "
                                   "the API's OpenAPI schema (/openapi.json, /docs). A request's model field picks "
                                   "a served model (GET /v1/models; default: the first). One worker runs every job, "
                                   "waiting text-to-image jobs with the same settings together (--max-batch); "
                                   "requests beyond --queue-size waiting get 429.")
    p.add_argument("--model", action="append",
                   help="a model to serve, given once per model: a bundled model (shapes, emoji, shapes-fast) or a "
                        "checkpoint directory from diffuse train (./NAME for a folder named like a bundled model); "
                        "the first is the default (default: the three bundled models, shapes first)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every network)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument("--output-dir", default="outputs/served", help="where images answered by url are kept "
                                                                    "(default: outputs/served)")
    p.add_argument("--keep", type=int, default=1000,
                   help="images kept in --output-dir, the oldest removed first; 0 for no limit (default: 1000)")
    p.add_argument("--keep-mb", type=float, default=0,
                   help="MiB kept in --output-dir, the oldest images removed first; 0 for no limit (default: 0)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every endpoint but the page's files "
                                     "(default: $DIFFUSE_API_KEY; unset: no key)")
    p.add_argument("--queue-size", type=int, default=64,
                   help="jobs that may wait behind the running one; as many as --limit-concurrency admits, so that "
                        "a batch of --max-batch can fill (default: 64)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="images that waiting text-to-image jobs with the same settings may share network passes "
                        "with (each image is what it would be alone); 1 = one job at a time (default: 16)")
    p.add_argument("--max-n", type=int, default=10, help="images per request (default: 10)")
    p.add_argument("--max-steps", type=int, default=100, help="sampler steps per request (default: 100)")
    p.add_argument("--max-upload-mb", type=float, default=4, help="bytes of an uploaded image, in MiB (default: 4)")
    p.add_argument("--body-timeout", type=float, default=60,
                   help="seconds a request's body may take to arrive, then 408 (default: 60)")
    p.add_argument("--limit-concurrency", type=int, default=64,
                   help="open connections and requests at once; more are answered 503 at once (default: 64)")
    p.add_argument("--timeout-keep-alive", type=float, default=5,
                   help="seconds an idle connection is kept open, and a request's line and headers may take "
                        "(default: 5)")
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="auto (CUDA when a GPU is visible), cpu or cuda (default: auto)")
    _add_credentials(p)
    _add_watermark(p)


def build_parser() -> Parser:
    parser = Parser(prog="diffuse", description="Train text-to-image diffusion models and generate images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(sub)
    _add_data(sub)
    _add_generate(sub)
    _add_edit(sub)
    _add_explain(sub)
    _add_eval(sub)
    _add_copies(sub)
    _add_distill(sub)
    _add_info(sub)
    _add_inspect(sub)
    _add_serve(sub)
    return parser


# diffuse train's flags that name a TrainConfig field (None when not given)
TRAIN_FLAGS = {"preset": "preset", "size": "image_size", "steps": "steps", "minutes": "minutes",
               "batch_size": "batch_size", "grad_accum": "grad_accum", "lr": "lr", "weight_decay": "weight_decay",
               "lr_schedule": "lr_schedule", "lr_ref_steps": "lr_ref_steps", "seed": "seed", "data_size": "data_size",
               "ema_halflife_kimg": "ema_halflife_kimg", "p_mean": "p_mean", "p_std": "p_std",
               "high_sigma_share": "high_sigma_share", "clip_grad": "clip_grad", "caption_dropout": "caption_dropout",
               "init": "init"}


def cmd_train(a) -> None:
    from .training import TrainConfig, init_settings, resume_config, train
    given = {field: getattr(a, flag) for flag, field in TRAIN_FLAGS.items()}
    if a.init and not a.resume:
        given.update({k: v for k, v in init_settings(a.init).items() if given.get(k) is None})
    given["holdout"] = None if a.all_pairs is None else not a.all_pairs
    machine = dict(precision=a.precision, device=a.device, compile=a.compile, preview_every=a.preview_every,
                   checkpoint_every=a.checkpoint_every, progress=not a.quiet)
    if a.resume:
        cfg = resume_config(a.out, a.data, **given, **machine)
    elif a.data is None:
        raise DiffuseError("--data is required (shapes, digits, emoji or an image folder), unless --resume continues a run")
    else:
        cfg = TrainConfig(data=a.data, out=a.out, **{k: v for k, v in given.items() if v is not None}, **machine)
    out = train(cfg, exporter(a).credentials if cfg.preview_every else None)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"saved {out}")


def cmd_data(a) -> None:
    from .emoji import build_emoji_folder
    if a.limit is not None and a.limit < 1:
        raise DiffuseError("--limit must be at least 1")
    s = build_emoji_folder(a.out, styles=a.styles, size=a.size, flags=a.flags, limit=a.limit, progress=not a.quiet)
    per_style = ", ".join(f"{n:,} {name}" for name, n in s["images_per_style"].items())
    print(f"wrote {s['images']:,} images of {s['emoji']:,} emoji ({s['concepts']:,} concepts; {per_style}; "
          f"{s['held_out']:,} held out) to {a.out} in {s['seconds']:.0f} s")


def output_paths(out: str, seeds: list[int], prompt: str) -> tuple[list[Path], Path]:
    """Image paths and the grid path: a .png name (numbered if several), or files in a folder."""
    from .pipeline import slug
    o = Path(out)
    if o.suffix.lower() == ".png":
        if len(seeds) == 1:
            return [o], o.with_name(f"{o.stem}-grid.png")
        return [o.with_name(f"{o.stem}-{k}.png") for k in range(len(seeds))], o.with_name(f"{o.stem}-grid.png")
    if o.exists() and not o.is_dir():
        raise DiffuseError(f"--out {out!r} is a file: give a folder or a .png name")
    return [o / f"{s}-{slug(prompt)}.png" for s in seeds], o / f"grid-{seeds[0]}-{slug(prompt)}.png"


def request_from_args(a, **edit):
    """The request the options describe; steps, sampler and schedule not given are the model's
    (a distilled student's own) or GenerateRequest's."""
    from .pipeline import GenerateRequest
    return GenerateRequest(prompt=a.prompt, negative_prompt=a.negative_prompt, n=a.num, seed=a.seed,
                           **sampling_settings(a, model_defaults(a)), guidance=a.guidance, eta=a.eta, width=a.width,
                           height=a.height, variation_seed=a.variation_seed,
                           variation_strength=a.variation_strength, **edit).with_seed()


def sampling_settings(a, defaults: dict) -> dict:
    """Steps, sampler and schedule: each option given, else `defaults` (a model's own, from
    pipeline.sampling_defaults), else left to GenerateRequest."""
    given = {k: getattr(a, k, None) for k in ("steps", "sampler", "schedule")}
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def model_defaults(a) -> dict:
    """pipeline.sampling_defaults of the model the options name, read from its config alone; {}
    when it cannot be read (loading it says why, after the checks that come first)."""
    from .checkpoint import model_dir, read_config
    from .pipeline import sampling_defaults
    try:
        return sampling_defaults(read_config(model_dir(a.model)))
    except DiffuseError:
        return {}


def load_pipeline(a, local_rank: int = 0, model: str | None = None):
    """The model `a.model` names (or `model`: serve loads several) on the device `a.device` names."""
    from .devices import resolve_device, use_device
    from .pipeline import Pipeline
    device = resolve_device(getattr(a, "device", "auto"), local_rank)
    use_device(device)
    pipe = Pipeline.load(a.model if model is None else model, device)
    pipe.watermark = not getattr(a, "no_watermark", False)
    return pipe


def exporter(a):
    """The one way the command's pictures leave (export.py): signed with the content credentials
    the options name, checked now (a bad key is an error before any image is made), or unsigned
    with --no-credentials."""
    from .export import Exporter
    if a.no_credentials:
        return Exporter(None)
    from .credentials import load_credentials
    return Exporter(load_credentials(a.c2pa_cert, a.c2pa_key))


def run_request(a, req, extra: dict | None = None) -> None:
    """Generate and write: everything is checked before the first file is written."""
    export = exporter(a)
    pipe = load_pipeline(a)
    paths, grid_path = output_paths(a.out, req.seeds, req.prompt)
    write_images(pipe, req, paths, grid_path if a.grid else None, export, extra)


def emit(path) -> None:
    """Name a written file on stdout in one write and flush it: processes under torchrun share
    stdout, and print's two writes (text, then newline) could interleave with another's."""
    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


def write_images(pipe, req, paths: list[Path], grid_path: Path | None, export, extra: dict | None = None) -> None:
    """The request's images (and grid) written by `export`, each recording `extra` beside its
    parameters (what only the command knows, e.g. an outpainting's margins)."""
    from .pipeline import image_grid
    images = pipe.generate(req)
    if req.init_image is not None:
        print(f"{req.mode}: strength {req.effective_strength} runs {pipe.steps_run(req)} of {req.steps} steps",
              file=sys.stderr)
    for img, path in zip(images, paths):
        export.save(img, path, extra)
        emit(path)
    if grid_path is not None:
        grid = image_grid(images)
        grid.info.update(pipe.composite_metadata([(req, seed) for seed in req.seeds], picture="grid"))
        export.save(grid, grid_path, extra)
        emit(grid_path)
    note_prompt(pipe, req)


def note_prompt(pipe, req) -> None:
    """What the model will not read of the prompts: words it never saw, and words past its length."""
    tok = pipe.model.tokenizer
    unknown = tok.unknown_words(req.prompt + " " + req.negative_prompt)
    if unknown:
        print(f"note: the model never saw these words in training: {', '.join(sorted(set(unknown)))}", file=sys.stderr)
    for what, text in (("a prompt", req.prompt), ("a negative prompt", req.negative_prompt)):
        if cut := tok.cut_words(text):
            print(f"note: the model reads the first {tok.max_length - 1} words of {what}; cut from it: {' '.join(cut)}",
                  file=sys.stderr)


def cmd_generate(a) -> None:
    if a.prompts is None:
        if a.prompt is None:
            raise DiffuseError("give a prompt, or --prompts FILE")
        run_request(a, request_from_args(a))
    elif a.prompt is not None:
        raise DiffuseError("give a prompt or --prompts FILE, not both")
    else:
        generate_prompt_file(a)


def generate_prompt_file(a) -> None:
    """Every prompt of a file; under torchrun this process draws prompts i with i % W == rank.
    Each process checks the whole file first, so all of them fail alike or none does."""
    from .distributed import World, shard
    from .pipeline import check_size
    from .prompts import check_distinct_outputs, read_prompt_file, requests_from_entries
    if Path(a.out).suffix.lower() == ".png":
        raise DiffuseError("with --prompts, --out must be a folder (each prompt writes its own files)")
    world = World.from_env()
    defaults = dict(negative_prompt=a.negative_prompt, n=a.num, **sampling_settings(a, model_defaults(a)), guidance=a.guidance,
                    eta=a.eta, width=a.width, height=a.height, variation_seed=a.variation_seed,
                    variation_strength=a.variation_strength)
    entries = read_prompt_file(a.prompts)
    requests = requests_from_entries(entries, defaults, a.seed if a.seed is not None else 0)
    plans = [output_paths(a.out, req.seeds, req.prompt) for req in requests]
    check_distinct_outputs(entries, plans, a.grid)
    export = exporter(a)
    pipe = load_pipeline(a, world.local_rank)
    for entry, req in zip(entries, requests):
        try:
            check_size(pipe.model, *req.size(pipe.model.image_size))
        except DiffuseError as e:
            raise DiffuseError(f"{entry.where}: {e}") from None
    for i in shard(len(requests), world):
        paths, grid_path = plans[i]
        write_images(pipe, requests[i], paths, grid_path if a.grid else None, export)


def cmd_img2img(a) -> None:
    run_request(a, request_from_args(a, init_image=open_image(a.image), strength=a.strength))


def cmd_inpaint(a) -> None:
    run_request(a, request_from_args(a, init_image=open_image(a.image), mask=open_image(a.mask, "mask"),
                                     strength=a.strength))


def cmd_outpaint(a) -> None:
    from .editing import outpaint_canvas
    pads = [a.all + getattr(a, side) for side in ("left", "top", "right", "bottom")]
    canvas, mask = outpaint_canvas(open_image(a.image), *pads)
    run_request(a, request_from_args(a, init_image=canvas, mask=mask), {"outpaint": dict(zip(("left", "top", "right", "bottom"), pads))})


def cmd_vary(a) -> None:
    img = open_image(a.image)
    if a.prompt is None:
        from .pipeline import recorded_prompt
        a.prompt = recorded_prompt(img)
        if a.prompt is None:
            raise DiffuseError(f"{a.image!r} records no prompt: give one")
    run_request(a, request_from_args(a, init_image=img, strength=a.strength))


def _png_path(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise DiffuseError(f"--out must name a .png file, got {out!r}")
    return path


def cmd_explain(a) -> None:
    from . import explain
    out = _png_path(a.out)
    export = exporter(a)
    if a.what == "noise":
        img = explain.noise_strip(open_image(a.image), a.sigmas or explain.DEFAULT_NOISE_SIGMAS, a.size, a.seed)
        export.save(img, out)
        print(out)
        return
    pipe = load_pipeline(a)
    if a.what == "denoise":
        if a.steps is None and not pipe.defaults:
            a.steps = DENOISE_STEPS
        req = request_from_args(a)
        note_prompt(pipe, req)
        strip, frames = explain.denoise_strip(pipe, req)
        export.save(strip, out)
        export.gif(frames, out.with_suffix(".gif"), json.loads(strip.info["diffuse"]))  # the strip's parameters
        print(out)
        print(out.with_suffix(".gif"))
    elif a.what == "guidance":
        if a.scales is None:  # a student knows only the scales it was distilled at
            lo, hi = pipe.student["guidance_range"] if pipe.student else (None, None)
            a.scales = [lo + (hi - lo) * k / 4 for k in range(5)] if pipe.student else [0, 1, 2, 3, 5, 8]
        if any(g < 0 for g in a.scales):
            raise DiffuseError("guidance scales must be >= 0")
        req = request_from_args(a)
        note_prompt(pipe, req)
        export.save(explain.guidance_row(pipe, req, a.scales), out)
        print(out)
    elif a.what == "copies":
        if a.rows < 1:
            raise DiffuseError("--rows must be at least 1")
        export.save(run_copies(a, pipe, picture_rows=a.rows), out)
        print(out)
    elif a.what == "styles":
        styles = [w.strip() for w in a.styles.split(",") if w.strip()] if a.styles else explain.model_styles(pipe)
        if not styles:
            raise DiffuseError(f"the model {pipe.name!r} records no styles: name them with --styles, e.g. --styles noto,openmoji")
        from .pipeline import GenerateRequest
        settings = sampling_settings(a, pipe.defaults)
        pipe.request(a.subjects[0], seed=a.seed, **settings)  # validates the numbers
        for subject in a.subjects:
            for style in styles:
                note_prompt(pipe, GenerateRequest(f"{subject}, {style} style"))
        export.save(explain.style_grid(pipe, a.subjects, styles, a.seed, **settings), out)
        print(out)
    else:
        if len(a.prompts) < 2:
            raise DiffuseError("give at least two prompts to compare")
        from .pipeline import GenerateRequest
        settings = sampling_settings(a, pipe.defaults)
        pipe.request(a.prompts[0], n=a.num, seed=a.seed, **settings)  # validates the numbers
        for prompt in a.prompts:
            note_prompt(pipe, GenerateRequest(prompt))
        export.save(explain.prompt_grid(pipe, a.prompts, a.num, a.seed, **settings), out)
        print(out)


def cmd_plot(a) -> None:
    from .explain import plot_run
    out = _png_path(a.out) if a.out else Path(a.run) / "curves.png"
    print(plot_run(a.run, out))


def batch_description(training: dict) -> str:
    """'32 (8 per micro-batch x 2 processes x 2 accumulated)', or the batch of an older checkpoint."""
    if "global_batch" not in training:
        return str(training.get("batch_size"))
    w = training["world_size"]
    return (f"{training['global_batch']} ({training['batch_size']} per micro-batch x {w} process{'es' * (w != 1)} "
            f"x {training['grad_accum']} accumulated)")


def cmd_info(a) -> None:
    from .checkpoint import model_dir, read_config
    a.model = str(model_dir(a.model))
    cfg = read_config(a.model)
    summary = {k: cfg[k] for k in ("unet", "text_encoder", "denoiser", "data", "training", "distilled") if k in cfg}
    summary["tokenizer"] = {"kind": cfg["tokenizer"]["kind"], "words": len(cfg["tokenizer"]["vocab"]),
                            "max_length": cfg["tokenizer"]["max_length"]}
    summary["weights_sha256"] = cfg.get("weights_sha256")
    resumable = (Path(a.model) / "training_state.safetensors").is_file()
    if a.json:
        print(json.dumps({**summary, "resumable": resumable}, indent=2))
        return
    u, t, tr = cfg["unet"], cfg["text_encoder"], cfg.get("training", {})
    print(f"model      {a.model}  (sha256 {summary['weights_sha256'][:12]})")
    print(f"network    UNet {u['image_size']}x{u['image_size']}, channels {u['channels']} x {tuple(u['channel_mult'])}, "
          f"{u['num_res_blocks']} res blocks/level, attention at {tuple(u['attn_resolutions'])}")
    print(f"text       {t['layers']}-layer transformer, width {t['width']}, {summary['tokenizer']['words']} words, "
          f"{t['max_length']} tokens")
    print(f"denoiser   {cfg['denoiser']['parameterization']} preconditioning, sigma_data {cfg['denoiser']['sigma_data']}")
    print(f"data       {json.dumps(cfg.get('data', {}))}")
    if d := cfg.get("distilled"):
        steps = "any steps" if d.get("any_steps") else f"{d['steps']} steps"
        print(f"distilled  {d['method']} from {d['teacher']} (sha256 {d['teacher_sha256'][:12]}) in {d['seconds']} s: "
              f"{steps} {d['sampler']} on {d['schedule']}, guidance {d['guidance_range'][0]:g} to "
              f"{d['guidance_range'][1]:g} as its input")
    else:
        print(f"training   {tr.get('steps')} steps, {tr.get('images_seen')} images, {tr.get('elapsed_s')} s, "
              f"batch {batch_description(tr)}, lr {tr.get('lr')}, preset {tr.get('preset')}")
        if i := tr.get("init"):
            print(f"init       from {i['model']} (sha256 {i['weights_sha256'][:12]}, {i['steps']} steps)")
    print(f"resumable  {'yes' if resumable else 'no (no training state)'}")


def cmd_inspect(a) -> int:
    """Report on every image; one that cannot be read is a one-line error and exit code 2, after
    the others are reported."""
    from .checkpoint import BUNDLED_MODELS, model_dir
    from .provenance import format_report, inspect_image, recorded_model_dirs
    loaded = {}  # model folder -> Pipeline, each loaded once

    def pipes_for(path: str) -> list | None:
        if a.no_watermark:
            return None
        folders = [str(model_dir(m)) for m in a.model] if a.model else \
            [str(p) for p in BUNDLED_MODELS.values()] + recorded_model_dirs(path)
        for folder in dict.fromkeys(folders):
            if folder not in loaded:
                loaded[folder] = load_pipeline(a, model=folder)
        return [loaded[f] for f in dict.fromkeys(folders)]

    code = 0
    for path in a.images:
        try:
            report = inspect_image(path, pipes_for(path))
        except DiffuseError as e:
            print(f"diffuse: error: {e}", file=sys.stderr)
            code = 2
            continue
        print(json.dumps(report) if a.json else format_report(report), flush=True)
    return code


def cmd_eval(a) -> None:
    from .evaluation import evaluate, format_table
    if not 1 <= a.per_prompt <= 1024:
        raise DiffuseError("--per-prompt must be between 1 and 1024")
    if not 0 <= a.seed < 4096:
        raise DiffuseError("eval's --seed must be between 0 and 4095 (each seed is its own set of images)")
    if a.model_option is not None:
        if a.model is not None and a.model != a.model_option:
            raise DiffuseError(f"eval got two models, {a.model!r} and --model {a.model_option!r}: give one")
        a.model = a.model_option
    pipe = load_pipeline(a)
    pipe.watermark = a.watermark
    result = evaluate(pipe, per_prompt=a.per_prompt, seed=a.seed, progress=lambda m: print(m, file=sys.stderr),
                      read_size=a.read_size, **sampling_settings(a, pipe.defaults), guidance=a.guidance)
    if a.json == "-":
        print(json.dumps(result, indent=2))
        return
    print(format_table(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


def run_copies(a, pipe, picture_rows: int = 0):
    """diffuse copies: the report printed (and written with --json), and the picture of the
    `picture_rows` most copy-like images returned when asked for."""
    from .copies import copies_picture, find_copies, format_report, generate_from_captions, load_image_files, \
        reader_for, training_set
    if not 1 <= a.num <= 10000:
        raise DiffuseError("-n must be between 1 and 10000")
    settings = sampling_settings(a, pipe.defaults)
    pipe.request("x", seed=a.seed, guidance=a.guidance, **settings)  # validates the numbers
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    train = training_set(pipe.config, a.data)
    reader = reader_for(pipe.config, train, progress)
    if a.images:
        generated, names = load_image_files(a.images, train.images.shape[-1])
        made_by = [{"file": name} for name in names]
    else:
        progress(f"generating {a.num} images from training captions")
        generated, names, made_by = generate_from_captions(pipe, train, a.num, a.seed, guidance=a.guidance,
                                                           **settings)
    report = find_copies(generated, names, train, reader, progress)
    report.update(model=pipe.name, model_hash=pipe.model_hash[:12], seed=a.seed, images=a.images,
                  steps=pipe.request("x", **settings).steps, guidance=a.guidance)
    print(format_report(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    return copies_picture(report, generated, train, made_by, picture_rows) if picture_rows else None


def cmd_copies(a) -> None:
    out = _png_path(a.picture) if a.picture else None
    export = exporter(a) if out else None
    picture = run_copies(a, load_pipeline(a), picture_rows=8 if out else 0)
    if out:
        export.save(picture, out)
        print(out)


def serve_models(models: list[str] | None) -> list[str]:
    """The checkpoints `serve` loads: those named, else every bundled model (shapes first)."""
    from .checkpoint import BUNDLED_MODELS, model_dir
    return [str(model_dir(m)) for m in models] if models else [str(p) for p in BUNDLED_MODELS.values()]


def listen(host: str, port: int):
    """A socket bound before the server starts, so a taken port is a one-line error, not a log."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
    except (OSError, OverflowError) as e:
        raise DiffuseError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})") from None
    return sock


def cmd_serve(a) -> None:
    import uvicorn
    from .server import HeadDeadlineProtocol, Limits, create_app
    for name in ("queue_size", "max_batch", "max_n", "max_steps", "max_upload_mb", "body_timeout", "limit_concurrency",
                 "timeout_keep_alive"):
        if getattr(a, name) <= 0:
            raise DiffuseError(f"--{name.replace('_', '-')} must be above 0")
    api_key = a.api_key or os.environ.get("DIFFUSE_API_KEY") or None
    if a.keep < 0 or a.keep_mb < 0:
        raise DiffuseError("--keep and --keep-mb must be 0 (no limit) or more")
    limits = Limits(n=a.max_n, steps=a.max_steps, upload_bytes=int(a.max_upload_mb * 2 ** 20), keep=a.keep,
                    keep_bytes=int(a.keep_mb * 2 ** 20), body_seconds=a.body_timeout)
    credentials = exporter(a).credentials  # checked before any model loads
    pipes = [load_pipeline(a, model=m) for m in serve_models(a.model)]
    app = create_app(pipes, output_dir=a.output_dir, api_key=api_key, queue_size=a.queue_size, limits=limits,
                     credentials=credentials, max_batch=a.max_batch)
    sock = listen(a.host, a.port)
    if api_key is None and a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {a.host} without an API key: anyone who can reach it can use it", file=sys.stderr)
    print(f"serving {', '.join(p.name for p in pipes)} on http://{a.host}:{a.port}/", file=sys.stderr)
    # Against hostile clients: beyond --limit-concurrency connections or requests a new request is
    # answered 503 at once (uvicorn), and a connection that sends no complete request head within
    # --timeout-keep-alive seconds is closed (HeadDeadlineProtocol; tests/test_hostile.py).
    uvicorn.Server(uvicorn.Config(app, log_level="info", http=HeadDeadlineProtocol, limit_concurrency=a.limit_concurrency,
                                  timeout_keep_alive=a.timeout_keep_alive)).run(sockets=[sock])


COMMANDS = {"train": cmd_train, "data": cmd_data, "generate": cmd_generate, "img2img": cmd_img2img, "inpaint": cmd_inpaint,
            "outpaint": cmd_outpaint, "vary": cmd_vary, "explain": cmd_explain, "plot": cmd_plot, "eval": cmd_eval,
            "copies": cmd_copies, "distill": cmd_distill, "info": cmd_info, "inspect": cmd_inspect, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = lambda msg, cat, *rest: f"warning: {msg}\n"
            code = COMMANDS[args.command](args)
    except DiffuseError as e:
        print(f"diffuse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffuse: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
