"""Prompt adherence for emoji models: does the picture show the concept and the style asked for?

An emoji model is one whose checkpoint records an emoji build (config["data"]["emoji"], written by
data._emoji_build). Everything is read off the emoji image folder at the model's size
(emoji.cached_emoji_folder, built once into the cache), whose metadata names each picture's
concept, style, category and whether its (concept, style) pair was held out of training.

The reader is evaluation.Reader with two heads, concept (every concept of the build: 1,646 in the
full one) and style (twemoji, noto, openmoji). It is the judge, not the model under test, so it
learns from every real picture of every style, held-out pairs included. Each (concept, style) is
one picture (a few more with skin tones), so it learns from changed copies (`reader_augment`):
shifts of up to 2 px and scales within 10% on a white surround (the builder composites onto
white), mild brightness, contrast and saturation changes, then evaluation.augment's blur and
noise, since a sampler's pictures are softer. Nothing that changes what an emoji means: no flips
("right-facing fist", arrows), no hue shifts (a red heart is not an orange heart), no crops.

Its accuracy: every real picture is one it trains on, and a reader's figure on its own training
pictures is no accuracy. So it trains in two parts. The first leaves out the build's held-out
pairs (the pairs the model never saw), and at its end the reader reads those pairs' plain
pictures: concepts it knows, drawn in a style it has never seen them in. That figure is the
stated accuracy. The second part then trains on every picture, half of each batch from the
held-out pairs, so that it reads them too. The stated figure is a lower bound in two ways: the
reader trains on after it, and in an evaluation it reads a new picture of a pair whose real
picture it has seen, an easier task than a pair it never saw. (A separate check copy trained
from scratch would have cost a second training for the same question.)

diffuse ships the reader of the 32-px build (diffuse/readers/emoji-32, SHIPPED_READERS), so that
every machine judges that build's models with the same reader; a build it was not trained on (another
list of concepts or files, as other package versions may give; another size) trains its own on
first use and caches it.

The prompts (`emoji_prompts`): PER_STYLE seen and PER_STYLE held-out (concept, style) pairs of
each style, ranked by a hash of the pair, each as the builder's first name template, "{name},
{style} style" ("taxi, openmoji style"): words the model was trained on, the same template for
both groups. A pair's picture is its concept's plain one (no skin tone) where there is one.

The figures:
- concept top-1 and top-5 among all concepts and style accuracy, seen and held-out pairs apart,
  and each group by style;
- a Frechet distance in the reader's feature space (Heusel et al. 2017, eq. 6; evaluation.
  frechet_distance) against the real picture of each prompt's pair, shifted by up to 1 px and
  scaled within 5% once per generated image (`reference_jitter`). There is one real picture per
  pair, so there is no second real set of the same prompts to give the floor. The floor is a
  second real set of the same size and the same mix of styles and categories, of concepts that
  are in no prompt: how far real emoji of the same kinds, but other concepts, sit. Beside it,
  `frechet_copies`: another jitter of the very pictures, what copying them would score. A model
  that draws the asked pictures sits between the two;
- diversity: the mean within-prompt feature spread of the generated images over that of the
  jittered copies of the real picture (the variation that leaves an emoji the same picture);
- confusions: for images whose concept is read wrong, the (asked, read) category pairs and
  concept pairs met most often, and the style confusion table.
"""

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from .data import pil_to_tensor, tensor_to_pil
from .emoji import STYLES, WITH_NAME, on_background
from .errors import DiffuseError
from .evaluation import (EvalPrompt, Reader, augment, eval_seed, features, fit_reader, frechet_distance, generate_images,
                         open_cached_reader, sampler_settings, save_reader, within_prompt_spread)

READER_VERSION = 2
# The readers shipped with diffuse, trained by benchmarks/emoji_reader.py on the build of the
# package versions their reader.json names; another build (another concept list) trains its own.
SHIPPED_READERS = Path(__file__).parent / "readers"
PER_STYLE = 32               # eval prompts per style and group: 3 x 2 x 32 = 192 prompts, 384 images at 2 each
TEMPLATE = WITH_NAME[0]      # "{name}, {style} style"
TOP_K = 5
# The reader's training: `steps` batches without the held-out pairs, then `all_steps` on every
# picture; 17 minutes on the 2-core CPU without AVX-512. Width and length were chosen by the
# accuracy they give (benchmarks/RESULTS.md, "The emoji evaluator" and "A shipped emoji reader").
READER = dict(width=32, features=256, steps=6000, batch=64, lr=3e-3, all_steps=800, all_lr=1e-3, seed=0)


# ----------------------------------------------------------------------------- the pictures

@dataclass(frozen=True)
class EmojiSet:
    """An emoji image folder as the evaluator reads it."""
    folder: Path
    rows: tuple[dict, ...]           # metadata.jsonl, one row per picture
    concepts: tuple[str, ...]        # the concept head's classes, sorted
    category: dict[str, str]         # concept -> category word

    @property
    def fingerprint(self) -> str:
        """What the reader's classes and training pictures depend on, for its cache key."""
        text = json.dumps([self.concepts, [(r["file_name"], r["concept"]) for r in self.rows]])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def load_emoji_set(folder: str | Path) -> EmojiSet:
    folder = Path(folder)
    try:
        rows = tuple(json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
                     if line.strip())
    except (OSError, ValueError) as err:
        raise DiffuseError(f"cannot read the emoji folder's metadata.jsonl in {folder}: {err}") from None
    if not rows or any("concept" not in r or "style" not in r for r in rows):
        raise DiffuseError(f"{folder} is not an emoji folder built by diffuse data emoji (no concept and style)")
    return EmojiSet(folder, rows, tuple(sorted({r["concept"] for r in rows})),
                    {r["concept"]: r["category"] for r in rows})


def pair_pictures(rows) -> dict[tuple[str, str], dict]:
    """The one picture of each (concept, style) pair the evaluator uses: the concept's plain one
    (name == concept, no skin tone) where the style has it, else the pair's first."""
    out = {}
    for r in rows:
        key = (r["concept"], r["style"])
        if key not in out or (r["name"] == r["concept"] and out[key]["name"] != r["concept"]):
            out[key] = r
    return out


def load_pictures(eset: EmojiSet, rows) -> torch.Tensor:
    out = []
    for r in rows:
        with Image.open(eset.folder / r["file_name"]) as img:
            out.append(pil_to_tensor(img))
    return torch.stack(out)


def _rank(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def emoji_prompts(eset: EmojiSet, styles=STYLES, per_style: int = PER_STYLE) -> list[EvalPrompt]:
    """The fixed prompt set: for each style, the first `per_style` seen and held-out pairs by
    SHA-256 of "concept|style" (a fixed function of the build, independent of its order).
    `spec` is the pair's picture row; the target is its concept and style."""
    by_group = {}
    for (concept, style), row in pair_pictures(eset.rows).items():
        if style in styles:
            by_group.setdefault((style, bool(row.get("held_out"))), []).append(row)
    out = []
    for style in styles:
        for held in (False, True):
            rows = sorted(by_group.get((style, held), []), key=lambda r: _rank(r["concept"], r["style"]))
            for r in rows[:per_style]:
                out.append(EvalPrompt(TEMPLATE.format(name=r["name"], style=style),
                                      {"concept": eset.concepts.index(r["concept"]), "style": STYLES.index(style)},
                                      "held-out" if held else "seen", r))
    return out


# ----------------------------------------------------------------------------- changed copies

def jitter(x: torch.Tensor, g: torch.Generator, shift_px: float, scale: float) -> torch.Tensor:
    """Each picture shifted by up to `shift_px` pixels and scaled by 1 +- `scale`, on white: the
    builder composites onto white, so white is what lies beyond the picture's edge."""
    b, _, h, w = x.shape
    s = 1 + (torch.rand(b, generator=g) * 2 - 1) * scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = (torch.rand(b, 2, generator=g) * 2 - 1) * (2 * shift_px / w)  # 1 px is 2 / w grid units
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sampled as x - 1 with zero padding: the padding comes out white (+1).
    return F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


def colour_jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness within 0.08, contrast within 12%, up to 25% towards grey: mild enough that an
    orange heart stays orange (no hue is turned)."""
    b = x.shape[0]
    bright = (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.08
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.12
    grey_share = torch.rand(b, 1, 1, 1, generator=g) * 0.25
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    grey = x.mean(1, keepdim=True)
    return ((1 - grey_share) * x + grey_share * grey).clamp(-1, 1)


def reader_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return augment(colour_jitter(jitter(x, g, 2.0, 0.10), g), g)


def reference_jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The real picture as it might be drawn again and still be the same picture."""
    return jitter(x, g, 1.0, 0.05)


# ----------------------------------------------------------------------------- the reader

def pair_weights(pair: torch.Tensor, favour: torch.Tensor | None = None, share: float = 0.5) -> torch.Tensor:
    """How often each picture is drawn: every (concept, style) pair (numbered by `pair`) equally,
    so a person in six skin tones is not six times as present as a taxi; with `favour`, the
    favoured pictures' pairs take `share` of the draws between them."""
    weight = 1.0 / torch.bincount(pair)[pair].double()
    if favour is not None and favour.any() and not favour.all():
        weight[favour] *= share / weight[favour].sum()
        weight[~favour] *= (1 - share) / weight[~favour].sum()
    return weight


def train_emoji_reader(reader: Reader, images: torch.Tensor, labels: dict[str, torch.Tensor], weight: torch.Tensor,
                       steps: int, batch: int, lr: float, g: torch.Generator,
                       progress: Callable[[str], None] | None = None) -> Reader:
    """`steps` batches of `images` (drawn by `weight`, changed by reader_augment) for the
    reader's concept and style heads, on one learning-rate cycle (evaluation.fit_reader)."""
    def draw():
        idx = torch.multinomial(weight, batch, replacement=True, generator=g)
        return reader_augment(images[idx], g), {k: v[idx] for k, v in labels.items()}

    def loss(out, y):
        # Label smoothing: one picture per pair invites overconfident memorising.
        return (F.cross_entropy(out["concept"], y["concept"], label_smoothing=0.1)
                + F.cross_entropy(out["style"], y["style"]))

    return fit_reader(reader, draw, steps, lr, loss, progress, every=200, name="emoji reader")


@torch.no_grad()
def logits(reader: Reader, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head's scores from features already computed (evaluation.features)."""
    return {k: h(feats.float()) for k, h in reader.heads.items()}


def topk_hits(scores: torch.Tensor, asked: torch.Tensor, k: int) -> torch.Tensor:
    """Whether the asked class is among the k highest-scoring ones, per image."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == asked[:, None]).any(1)


def adherence(scores: dict[str, torch.Tensor], asked: dict[str, torch.Tensor]) -> dict[str, float]:
    """Concept top-1 and top-TOP_K among all concepts, and style accuracy (shares of images)."""
    return {"concept_top1": topk_hits(scores["concept"], asked["concept"], 1).float().mean().item(),
            f"concept_top{TOP_K}": topk_hits(scores["concept"], asked["concept"], TOP_K).float().mean().item(),
            "style": topk_hits(scores["style"], asked["style"], 1).float().mean().item()}


def _labels(eset: EmojiSet, rows) -> dict[str, torch.Tensor]:
    index = {c: i for i, c in enumerate(eset.concepts)}
    return {"concept": torch.tensor([index[r["concept"]] for r in rows]),
            "style": torch.tensor([STYLES.index(r["style"]) for r in rows])}


def build_emoji_reader(eset: EmojiSet, size: int, progress: Callable[[str], None] | None = None,
                       **settings) -> tuple[Reader, dict]:
    """The reader, trained in two parts (module docstring): first without the held-out pairs,
    when it reads their plain pictures for its stated accuracy, then on every picture, half of
    each batch from the held-out pairs so that they catch up."""
    cfg = {**READER, **settings}
    t0 = time.monotonic()
    torch.manual_seed(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    images, labels = load_pictures(eset, eset.rows), _labels(eset, eset.rows)
    ids = {}
    pair = torch.tensor([ids.setdefault((r["concept"], r["style"]), len(ids)) for r in eset.rows])
    held = torch.tensor([bool(r.get("held_out")) for r in eset.rows])
    if not held.any():
        raise DiffuseError("the emoji folder holds no held-out pairs (it needs two styles or more), so the reader's "
                           "accuracy cannot be measured")
    reader = Reader({"concept": len(eset.concepts), "style": len(STYLES)}, width=cfg["width"], features=cfg["features"])
    if progress:
        progress("training the emoji reader without the held-out pairs")
    kept = ~held
    train_emoji_reader(reader, images[kept], {k: v[kept] for k, v in labels.items()}, pair_weights(pair[kept]),
                       cfg["steps"], cfg["batch"], cfg["lr"], g, progress)
    check = [r for r in pair_pictures(eset.rows).values() if r.get("held_out")]
    accuracy = adherence(logits(reader, features(reader, load_pictures(eset, check))), _labels(eset, check))
    if progress:
        progress("training the emoji reader on every picture")
    train_emoji_reader(reader, images, labels, pair_weights(pair, favour=held), cfg["all_steps"], cfg["batch"],
                       cfg["all_lr"], g, progress)
    info = {"task": "emoji", "size": size, "version": READER_VERSION, "fingerprint": eset.fingerprint,
            "concepts": len(eset.concepts),
            "pictures": len(eset.rows), **cfg, "accuracy": accuracy,
            "accuracy_on": (f"{len(check)} real pictures of the held-out (concept, style) pairs, read before the "
                            f"reader trained on them"),
            "train_s": round(time.monotonic() - t0, 1)}
    return reader, info


def load_emoji_reader(eset: EmojiSet, size: int, progress: Callable[[str], None] | None = None) -> tuple[Reader, dict]:
    """The reader of this emoji build: the one shipped with diffuse where it was trained on this
    very build (the same concepts and files: its fingerprint), so that every machine judges with
    the same reader (one trained on first use differs with the CPU's rounding, by up to 5 points of
    a model's scores: benchmarks/RESULTS.md); else the cached one, trained and cached on first
    use (minutes)."""
    from .cache import cache_dir

    def make(info):
        return Reader({"concept": len(eset.concepts), "style": len(STYLES)}, width=info["width"],
                      features=info["features"])
    # Its reader.json is checked before its weights are read: another build's have another shape.
    shipped = open_cached_reader(SHIPPED_READERS / f"emoji-{size}", make, lambda info: (
        info.get("fingerprint") == eset.fingerprint and info.get("version") == READER_VERSION))
    if shipped:
        return shipped
    folder = cache_dir() / "readers" / f"emoji-{size}-v{READER_VERSION}-{eset.fingerprint}"
    cached = open_cached_reader(folder, make)
    if cached:
        return cached
    if progress:
        progress(f"training the emoji reader once (cached in {folder})")
    reader, info = build_emoji_reader(eset, size, progress)
    save_reader(folder, reader, info)
    return reader, info


# ----------------------------------------------------------------------------- real sets

def floor_pictures(eset: EmojiSet, prompts: list[EvalPrompt], per_prompt: int, seed: int) -> list[dict]:
    """per_prompt real pictures for each prompt, of its style and category but of a concept in no
    prompt, handed out without repeats while the (style, category) has any left (then the style's
    other pictures): a second real set of the same kinds as the prompts' pictures."""
    asked = {p.spec["concept"] for p in prompts}
    pool = [r for r in pair_pictures(eset.rows).values() if r["concept"] not in asked]
    need = Counter((p.spec["style"], p.spec["category"]) for p in prompts)
    queues = {}
    for style, category in need:
        rng = random.Random(f"emoji-floor-{seed}-{style}-{category}")
        same = sorted((r for r in pool if r["style"] == style and r["category"] == category), key=lambda r: r["file_name"])
        other = sorted((r for r in pool if r["style"] == style and r["category"] != category), key=lambda r: r["file_name"])
        rng.shuffle(same)
        rng.shuffle(other)
        queue = same + other
        if not queue:
            raise DiffuseError(f"the emoji folder has no {style} pictures outside the prompts for the real floor")
        queues[style, category] = iter(queue * (1 + need[style, category] * per_prompt // len(queue)))
    return [next(queues[p.spec["style"], p.spec["category"]]) for p in prompts for _ in range(per_prompt)]


# ----------------------------------------------------------------------------- the figures

def most_common_pairs(asked: list[str], read_as: list[str], top: int = 10) -> list[list]:
    """The (asked, read) pairs met most often, with their counts, ties in name order."""
    counts = Counter(zip(asked, read_as))
    return [[a, r, n] for (a, r), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def confusions(eset: EmojiSet, scores: dict[str, torch.Tensor], asked: dict[str, torch.Tensor]) -> dict:
    """What wrongly read images were read as: concept pairs, their category pairs (the same
    category on both sides counts: one face read as another), and the style table
    (counts[asked][read], all images)."""
    read = scores["concept"].argmax(1)
    wrong = (read != asked["concept"]).nonzero().flatten().tolist()
    asked_c = [eset.concepts[asked["concept"][i]] for i in wrong]
    read_c = [eset.concepts[read[i]] for i in wrong]
    styles = torch.bincount(asked["style"] * len(STYLES) + scores["style"].argmax(1), minlength=len(STYLES) ** 2)
    return {"categories": most_common_pairs([eset.category[c] for c in asked_c], [eset.category[c] for c in read_c]),
            "concepts": most_common_pairs(asked_c, read_c),
            "style": styles.reshape(len(STYLES), len(STYLES)).tolist()}


def score_emoji(reader: Reader, eset: EmojiSet, generated: torch.Tensor, prompts: list[EvalPrompt],
                per_prompt: int, seed: int = 0) -> dict:
    """All figures for `generated`: [len(prompts) * per_prompt, 3, H, W] in prompt order."""
    rows = [p.spec for p in prompts for _ in range(per_prompt)]
    asked = _labels(eset, rows)
    group_of = [p.group for p in prompts for _ in range(per_prompt)]
    prompt_id = torch.arange(len(prompts)).repeat_interleave(per_prompt)
    f_gen = features(reader, generated)
    scores = logits(reader, f_gen)
    result = {"task": "emoji", "images": len(generated), "prompts": len(prompts), "per_prompt": per_prompt,
              "adherence": {}, "by_style": {}}
    for group in ("seen", "held-out"):
        sel = torch.tensor([g == group for g in group_of])
        if sel.any():
            result["adherence"][group] = adherence({k: v[sel] for k, v in scores.items()},
                                                   {k: v[sel] for k, v in asked.items()})
            result["by_style"][group] = {
                s: adherence({k: v[sel & (asked["style"] == i)] for k, v in scores.items()},
                             {k: v[sel & (asked["style"] == i)] for k, v in asked.items()})
                for i, s in enumerate(STYLES) if (sel & (asked["style"] == i)).any()}
    g = torch.Generator().manual_seed(eval_seed(seed, 0))
    real = load_pictures(eset, rows)
    f_ref, f_copies = features(reader, reference_jitter(real, g)), features(reader, reference_jitter(real, g))
    f_floor = features(reader, reference_jitter(load_pictures(eset, floor_pictures(eset, prompts, per_prompt, seed)), g))
    result["frechet"] = frechet_distance(f_gen, f_ref)
    result["frechet_floor"] = frechet_distance(f_floor, f_ref)
    result["frechet_copies"] = frechet_distance(f_copies, f_ref)
    if per_prompt > 1:
        result["diversity"] = within_prompt_spread(f_gen, prompt_id) / within_prompt_spread(f_ref, prompt_id)
    # The reader trained on these very pictures: a ceiling, not an accuracy.
    result["real_read"] = adherence(logits(reader, f_ref), asked)
    result["confusion"] = confusions(eset, scores, asked)
    return result


def evaluate_emoji(pipe, per_prompt: int = 2, seed: int = 0, progress: Callable[[str], None] | None = None,
                   batch_prompts: int = 32, read_size: int | None = None, **request_kw) -> dict:
    """evaluation.evaluate for an emoji model: its prompts, generated and scored against the
    cached emoji folder of its size, in the styles it was trained on. With `read_size`, against
    the folder of that size instead, the images resized to it (`resize_as_built`): so that models
    of two sizes have one judge, the shipped 32-px reader."""
    from .emoji import cached_emoji_folder
    built = pipe.config["data"]["emoji"]
    size = read_size or pipe.model.image_size
    styles = tuple(s for s in STYLES if s in built.get("styles", STYLES))
    eset = load_emoji_set(cached_emoji_folder(size, progress=progress is not None))
    prompts = emoji_prompts(eset, styles, PER_STYLE)
    if not prompts:
        raise DiffuseError(f"the emoji folder has no pictures in the model's styles ({', '.join(styles)})")
    # What can fail is checked before the reader (it may train for minutes) and the sampling.
    eval_seed(seed, len(prompts) - 1, per_prompt - 1)
    floor_pictures(eset, prompts, per_prompt, seed)
    reader, info = load_emoji_reader(eset, size, progress)
    generated, sample_s = generate_images(pipe, [p.prompt for p in prompts], per_prompt, seed, progress,
                                          batch_prompts, request_kw)
    result = score_emoji(reader, eset, resize_as_built(generated, size), prompts, per_prompt, seed)
    result.update(model=pipe.name, model_hash=pipe.model_hash[:12], seed=seed, sample_s=sample_s,
                  model_size=pipe.model.image_size, read_size=size,
                  reader_accuracy=info["accuracy"], reader_accuracy_on=info["accuracy_on"],
                  settings=sampler_settings(request_kw))
    return result


def resize_as_built(images: torch.Tensor, size: int) -> torch.Tensor:
    """Saved images (in [-1, 1], 8-bit levels) at `size` px, resized by the builder's own step
    (emoji.on_background: Lanczos; compositing leaves an opaque picture as it is) and saved as
    8-bit PNGs."""
    if images.shape[-1] == size:
        return images
    return torch.stack([pil_to_tensor(on_background(tensor_to_pil(x), size)) for x in images])


def format_emoji_table(result: dict) -> str:
    """The result as a plain-text table (the JSON carries the same figures)."""
    cols = ("concept_top1", f"concept_top{TOP_K}", "style")
    heads = ("concept top-1", f"concept top-{TOP_K}", "style")
    lines = [f"{result.get('model', '')} (emoji): {result['images']} images, {result['prompts']} prompts x "
             f"{result['per_prompt']}, settings {result.get('settings', {})}"
             + (f", read at {result['read_size']} px (its {result['model_size']}-px images resized)"
                if result.get("read_size") != result.get("model_size") else ""),
             " " * 18 + "".join(f"{h:>15}" for h in heads)]
    for group, rates in result["adherence"].items():
        lines.append(f"{group:<18}" + "".join(f"{100 * rates[c]:>14.1f}%" for c in cols))
        for style, r in result["by_style"].get(group, {}).items():
            lines.append(f"  {style:<16}" + "".join(f"{100 * r[c]:>14.1f}%" for c in cols))
    lines.append(f"frechet distance {result['frechet']:.2f} (real floor {result['frechet_floor']:.2f}, "
                 f"ratio {result['frechet'] / max(result['frechet_floor'], 1e-9):.2f}; copies of the real pictures "
                 f"{result['frechet_copies']:.2f})")
    if "diversity" in result:
        lines.append(f"diversity {result['diversity']:.2f} of real (1.00 = as varied as the real picture shifted "
                     f"and scaled)")
    if "reader_accuracy" in result:
        acc = result["reader_accuracy"]
        lines.append(f"reader accuracy: concept top-1 {100 * acc['concept_top1']:.1f}%, top-{TOP_K} "
                     f"{100 * acc[f'concept_top{TOP_K}']:.1f}%, style {100 * acc['style']:.1f}% "
                     f"(on {result.get('reader_accuracy_on', 'unseen real pictures')})")
    real = result["real_read"]
    lines.append(f"real pictures read right: concept {100 * real['concept_top1']:.1f}%, style "
                 f"{100 * real['style']:.1f}% (pictures the reader trained on: its ceiling, not an accuracy)")
    conf = result["confusion"]
    if conf["categories"]:
        lines.append("categories confused most (asked -> read, images): "
                     + "; ".join(f"{a} -> {r} {n}" for a, r, n in conf["categories"][:6]))
        lines.append("concepts confused most: " + "; ".join(f"{a} -> {r} {n}" for a, r, n in conf["concepts"][:6]))
    lines.append("style: asked for (rows) against read as (columns), all images")
    lines.append(" " * 10 + "".join(f"{s:>10}" for s in STYLES))
    for s, row in zip(STYLES, conf["style"]):
        lines.append(f"{s:<10}" + "".join(f"{c:>10}" for c in row))
    return "\n".join(lines)
