"""Prompt adherence for the procedural datasets: does the image show what the prompt asked for?

A small CNN (the *reader*) is trained on freshly drawn images of the dataset to read every
attribute (shapes: shape, colour, background, size, position; digits: the digit), then cached.
`evaluate` generates images for a fixed prompt set, quantised as they would be saved (8-bit, as
the real draws are), and reports:

- match rates: per attribute and all attributes at once, for the (shape, colour) pairs the model
  was trained on and apart for the pairs held out of training (data.HELD_OUT): can it compose
  attributes it never saw together?
- a Frechet distance between generated and real draws of the same prompts, in the reader's
  feature space (FID's formula, Heusel et al. 2017, eq. 6, with the reader in place of
  Inception), next to its floor: the distance between two independent real sets of equal size;
- diversity: mean pairwise feature distance among the images of one prompt, generated over real,
  so a model that draws one image per prompt scores near 0 however well it matches.

Emoji models (trained on a folder `diffuse data emoji` built) are read by their own reader, of
concept and style, in diffuse/emoji_eval.py; `evaluate` and `format_table` hand them over.
"""

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cache import cache_dir
from .data import (BACKGROUNDS, COLORS, DIGIT_WORDS, HELD_OUT, POSITIONS, SHAPES, SIZES, ShapeSpec, as_saved,
                   pil_to_tensor, render_shape, shape_specs)
from .errors import DiffuseError

READER_VERSION = 1


# ----------------------------------------------------------------------------- what can be read

@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    target: dict[str, int]      # attribute -> class index the image must show
    group: str                  # "seen" or "held-out"
    spec: object                # what `Task.draw_real` needs to draw real images of this prompt


@dataclass
class Task:
    """Everything the evaluator knows about one procedural dataset."""
    name: str
    heads: dict[str, tuple[str, ...]]                       # attribute -> class names
    draw: Callable[[int, int, int], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (n, size, seed) -> training data
    prompts: Callable[[], list[EvalPrompt]]
    draw_real: Callable[[object, int, int], torch.Tensor]   # (spec, size, seed) -> one real image [3, H, W]
    scored: tuple[str, ...] = field(default=())               # attributes a prompt fixes (the rest are free)


def _shape_labels(spec: ShapeSpec) -> dict[str, int]:
    return {"shape": SHAPES.index(spec.shape), "color": list(COLORS).index(spec.color),
            "background": list(BACKGROUNDS).index(spec.background), "size": list(SIZES).index(spec.size),
            "position": list(POSITIONS).index(spec.position)}


def _draw_shapes(n: int, size: int, seed: int):
    """Reader training data: every attribute combination, held-out pairs included (the reader
    must read them), uniformly."""
    rng, specs = random.Random(f"reader-{seed}"), shape_specs()
    images, labels = [], {k: [] for k in ("shape", "color", "background", "size", "position")}
    for _ in range(n):
        spec = specs[rng.randrange(len(specs))]
        images.append(pil_to_tensor(render_shape(spec, size, rng)))
        for k, v in _shape_labels(spec).items():
            labels[k].append(v)
    return torch.stack(images), {k: torch.tensor(v) for k, v in labels.items()}


def shape_prompts() -> list[EvalPrompt]:
    """A fixed prompt set: every (shape, colour) pair; seen pairs twice, held-out pairs four
    times, with background and size cycling so each is asked for equally. Position is left
    free (it is not in the prompt), so the model must vary it."""
    out, bgs, sizes = [], list(BACKGROUNDS), list(SIZES)
    k = 0
    for shape in SHAPES:
        for color in COLORS:
            held = (shape, color) in HELD_OUT
            for _ in range(4 if held else 2):
                spec = ShapeSpec(shape, color, bgs[k % len(bgs)], sizes[(k // len(bgs)) % len(sizes)], "center")
                k += 1
                target = {a: v for a, v in _shape_labels(spec).items() if a != "position"}
                out.append(EvalPrompt(f"a {spec.size} {color} {shape} on a {spec.background} background", target,
                                      "held-out" if held else "seen", spec))
    return out


def _draw_real_shape(spec: ShapeSpec, size: int, seed: int) -> torch.Tensor:
    """A real image of the prompt: its position drawn at random, as the prompt leaves it free."""
    rng = random.Random(f"real-{seed}")
    full = ShapeSpec(spec.shape, spec.color, spec.background, spec.size, rng.choice(list(POSITIONS)))
    return pil_to_tensor(render_shape(full, size, rng))


def _digit_images(size: int):
    from sklearn.datasets import load_digits as sk_digits

    from .data import load_digits
    return load_digits(size).images, torch.from_numpy(sk_digits().target).long()


def _draw_digits(n: int, size: int, seed: int):
    """Reader training data for digits: scikit-learn's digits, shifted by up to 2 pixels."""
    images, labels = _digit_images(size)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(images), (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    out = torch.stack([torch.roll(images[i], tuple(s.tolist()), dims=(1, 2)) for i, s in zip(idx, shifts)])
    return out, {"digit": labels[idx]}


def digit_prompts() -> list[EvalPrompt]:
    return [EvalPrompt(t.format(d=d, w=DIGIT_WORDS[d]), {"digit": d}, "seen", d)
            for d in range(10) for t in ("the digit {d}", "a handwritten {w}")]


def _draw_real_digit(digit: int, size: int, seed: int) -> torch.Tensor:
    images, labels = _digit_images(size)
    pool = (labels == digit).nonzero().flatten()
    return images[pool[random.Random(f"real-{seed}").randrange(len(pool))]]


TASKS = {
    "shapes": Task("shapes", {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS),
                              "size": tuple(SIZES), "position": tuple(POSITIONS)},
                   _draw_shapes, shape_prompts, _draw_real_shape, scored=("shape", "color", "background", "size")),
    "digits": Task("digits", {"digit": tuple(str(d) for d in range(10))}, _draw_digits, digit_prompts,
                   _draw_real_digit, scored=("digit",)),
}


# ----------------------------------------------------------------------------- the reader

class Reader(nn.Module):
    """A small CNN with one linear head per attribute; `features` is its 64-d penultimate layer."""

    def __init__(self, heads: dict[str, int], width: int = 32, features: int = 64):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.body = nn.Sequential(block(3, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                                  block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(16 * 4 * width, features), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(features, n) for k, n in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(x)
        return {k: h(f) for k, h in self.heads.items()}


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild blur and noise so the reader also reads the softer images a sampler makes."""
    b = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = torch.rand(b, 1, 1, 1, generator=g) * 0.5
    return (1 - w) * x + w * blur + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.08


def fit_reader(reader: Reader, draw: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]], steps: int,
               lr: float, loss: Callable[[dict, dict], torch.Tensor] | None = None,
               progress: Callable[[str], None] | None = None, every: int = 100, name: str = "reader") -> Reader:
    """`steps` AdamW steps, each on the batch `draw()` returns (images, labels per head), on one
    learning-rate cycle peaking at `lr` (Smith and Topin 2019). The loss is the sum of every
    head's cross-entropy unless `loss(out, labels)` is given. Returns the reader in eval mode."""
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    reader.train()
    for step in range(steps):
        images, labels = draw()
        out = reader(images)
        value = loss(out, labels) if loss else sum(F.cross_entropy(out[k], labels[k]) for k in out)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        if progress and step % every == 0:
            progress(f"{name} step {step}/{steps} loss {value.item():.3f}")
    return reader.eval()


def train_reader(task: Task, size: int, n: int = 12000, epochs: int = 3, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> tuple[Reader, dict]:
    torch.manual_seed(seed)
    t0 = time.monotonic()
    images, labels = task.draw(n, size, seed)
    g = torch.Generator().manual_seed(seed)

    def draw():
        idx = torch.randint(n, (128,), generator=g)
        return augment(images[idx], g), {k: v[idx] for k, v in labels.items()}

    reader = fit_reader(Reader({k: len(v) for k, v in task.heads.items()}), draw, epochs * (n // 128), 3e-3,
                        progress=progress)
    test_images, test_labels = task.draw(2000, size, seed + 1)  # fresh draws it never saw
    pred = read(reader, test_images)
    accuracy = {k: (pred[k] == test_labels[k]).float().mean().item() for k in task.heads}
    info = {"task": task.name, "size": size, "version": READER_VERSION, "train_images": n, "epochs": epochs,
            "seed": seed, "accuracy": accuracy, "train_s": round(time.monotonic() - t0, 1)}
    return reader, info


def read(reader: Reader, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """The class the reader sees for every attribute of every image."""
    return read_features(reader, features(reader, images, batch))


@torch.no_grad()
def features(reader: Reader, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([reader.features(images[i:i + batch].float().cpu()) for i in range(0, len(images), batch)]).double()


@torch.no_grad()
def read_features(reader: Reader, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """`read` from features already computed: the heads only, so one pass of the CNN serves both."""
    return {k: h(feats.float()).argmax(1) for k, h in reader.heads.items()}


def load_reader(task_name: str, size: int, progress: Callable[[str], None] | None = None) -> tuple[Reader, dict]:
    """The cached reader for (task, size), trained and cached on first use (~1 minute on 2 cores)."""
    task = TASKS[task_name]
    folder = cache_dir() / "readers" / f"{task_name}-{size}-v{READER_VERSION}"
    cached = open_cached_reader(folder, lambda info: Reader({k: len(v) for k, v in task.heads.items()}))
    if cached:
        return cached
    if progress:
        progress(f"training the {task_name} reader once (cached in {folder})")
    reader, info = train_reader(task, size, progress=progress)
    save_reader(folder, reader, info)
    return reader, info


def open_cached_reader(folder: Path, make: Callable[[dict], Reader],
                       accept: Callable[[dict], bool] | None = None) -> tuple[Reader, dict] | None:
    """The reader cached in `folder` (`make` builds its empty network from its info), or None;
    None too where `accept(info)` is false, checked before the weights are read."""
    from safetensors.torch import load_file
    weights, meta = folder / "reader.safetensors", folder / "reader.json"
    if not (weights.exists() and meta.exists()):
        return None
    info = json.loads(meta.read_text())
    if accept is not None and not accept(info):
        return None
    reader = make(info)
    reader.load_state_dict(load_file(str(weights)))
    return reader.eval(), info


def save_reader(folder: Path, reader: Reader, info: dict) -> None:
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    # Written under temporary names and renamed, so an interrupted run never leaves half a reader.
    tmp_w, tmp_m = folder / f".reader.{os.getpid()}.tmp", folder / f".meta.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in reader.state_dict().items()}, str(tmp_w))
    tmp_m.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_w, folder / "reader.safetensors")
    os.replace(tmp_m, folder / "reader.json")


# ----------------------------------------------------------------------------- the figures

def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017, eq. 6). The trace
    of the square root is taken as sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))), which is symmetric."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    ev, vec = torch.linalg.eigh(s_a)
    root_a = vec @ torch.diag(ev.clamp(min=0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def within_prompt_spread(feats: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean pairwise feature distance between images of the same prompt."""
    dists = []
    for g in groups.unique():
        f = feats[groups == g]
        if len(f) > 1:
            d = torch.cdist(f, f)
            dists.append(d.sum() / (len(f) * (len(f) - 1)))
    return float(torch.stack(dists).mean())


def target_tensors(targets: list[dict[str, int]], scored: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The asked-for class of every image, one tensor per scored attribute."""
    return {k: torch.tensor([t[k] for t in targets]) for k in scored}


def match_rates(pred: dict[str, torch.Tensor], asked: dict[str, torch.Tensor], scored: tuple[str, ...]) -> dict[str, float]:
    out, all_ok = {}, torch.ones(len(asked[scored[0]]), dtype=torch.bool)
    for k in scored:
        ok = pred[k] == asked[k]
        out[k] = ok.float().mean().item()
        all_ok &= ok
    out["all"] = all_ok.float().mean().item()
    return out


def confusion_matrix(read_as: torch.Tensor, asked: torch.Tensor, classes: int) -> list[list[int]]:
    """counts[a][r]: images whose prompt asked for class a that the reader read as class r. The
    match rate says how often a model fails; this says into what (one wrong class or all of them)."""
    counts = torch.bincount(asked.long() * classes + read_as.long(), minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


def score(reader: Reader, task: Task, generated: torch.Tensor, prompts: list[EvalPrompt], per_prompt: int,
          size: int, seed: int = 0) -> dict:
    """All figures for `generated`: [len(prompts) * per_prompt, 3, H, W] in prompt order."""
    asked = target_tensors([p.target for p in prompts for _ in range(per_prompt)], task.scored)
    group_of = [p.group for p in prompts for _ in range(per_prompt)]
    prompt_id = torch.arange(len(prompts)).repeat_interleave(per_prompt)
    f_gen = features(reader, generated)
    pred = read_features(reader, f_gen)
    result = {"task": task.name, "images": len(generated), "prompts": len(prompts), "per_prompt": per_prompt,
              "match": {}}
    for group in ("seen", "held-out"):
        sel = [i for i, g in enumerate(group_of) if g == group]
        if sel:
            result["match"][group] = match_rates({k: v[sel] for k, v in pred.items()},
                                                 {k: v[sel] for k, v in asked.items()}, task.scored)
    # Two independent real sets of the same prompts: one to compare with, one for the floor.
    real = [torch.stack([task.draw_real(p.spec, size, ((seed * 3 + r) * len(prompts) + i) * per_prompt + k)
                         for i, p in enumerate(prompts) for k in range(per_prompt)]) for r in (1, 2)]
    f_real, f_real2 = features(reader, real[0]), features(reader, real[1])
    result["frechet"] = frechet_distance(f_gen, f_real)
    result["frechet_floor"] = frechet_distance(f_real2, f_real)
    if per_prompt > 1:
        result["diversity"] = within_prompt_spread(f_gen, prompt_id) / within_prompt_spread(f_real, prompt_id)
    result["real_match"] = match_rates(read_features(reader, f_real), asked, task.scored)["all"]
    result["confusion"] = {k: confusion_matrix(pred[k], asked[k], len(task.heads[k]))
                           for k in task.scored}
    return result


def model_task(config: dict) -> str:
    """What the model was trained on: a procedural dataset by name, or "emoji" for a folder that
    `diffuse data emoji` built (data._emoji_build records it)."""
    data = config.get("data", {})
    if data.get("emoji"):
        return "emoji"
    kind = data.get("kind")
    if kind not in TASKS:
        raise DiffuseError(f"eval reads the procedural datasets ({', '.join(TASKS)}) and emoji art; this model was "
                           f"trained on {kind or 'unknown data'}")
    return kind


EVAL_SEEDS, EVAL_PROMPTS, EVAL_IMAGES = 2 ** 12, 2 ** 10, 2 ** 10  # their bits fill a 32-bit seed


def eval_seed(seed: int, prompt: int, image: int = 0) -> int:
    """The noise seed of image `image` of prompt `prompt` in the evaluation run `seed`: each
    (seed, prompt, image) gets its own stream, so runs at two seeds share no image whatever
    --per-prompt is (the old seed + 1000 * prompt + image made --seed 1 repeat half of --seed 0).
    The three fields are packed into 32 bits, since torch's CPU generator reads no more of a
    seed (pipeline.MAX_SEED): 4,096 seeds, 1,024 prompts and 1,024 images per prompt."""
    if not (0 <= seed < EVAL_SEEDS and 0 <= prompt < EVAL_PROMPTS and 0 <= image < EVAL_IMAGES):
        raise ValueError(f"evaluation seed out of range: seed {seed}, prompt {prompt}, image {image}")
    return (seed << 20) | (prompt << 10) | image


def evaluate(pipe, per_prompt: int = 2, seed: int = 0, progress: Callable[[str], None] | None = None,
             batch_prompts: int = 32, read_size: int | None = None, **request_kw) -> dict:
    """Generate `per_prompt` images for every prompt of the model's dataset and score them
    (emoji models: read at `read_size` px if given, see emoji_eval.evaluate_emoji)."""
    if model_task(pipe.config) == "emoji":
        from .emoji_eval import evaluate_emoji  # the emoji extra is optional: imported only when asked for
        return evaluate_emoji(pipe, per_prompt, seed, progress, batch_prompts, read_size, **request_kw)
    task = TASKS[model_task(pipe.config)]
    size = pipe.model.image_size
    if read_size not in (None, size):
        raise DiffuseError(f"--read-size is for emoji models; a {task.name} model is read at its own size ({size} px)")
    prompts = task.prompts()
    eval_seed(seed, len(prompts) - 1, per_prompt - 1)  # the range, before the reader: it may train for a minute
    reader, info = load_reader(task.name, size, progress)
    generated, sample_s = generate_images(pipe, [p.prompt for p in prompts], per_prompt, seed, progress,
                                          batch_prompts, request_kw)
    result = score(reader, task, generated, prompts, per_prompt, size, seed)
    result.update(model=pipe.name, model_hash=pipe.model_hash[:12], seed=seed, sample_s=sample_s,
                  reader_accuracy=info["accuracy"], settings=sampler_settings(request_kw))
    return result


def generate_images(pipe, prompts: list[str], per_prompt: int, seed: int, progress: Callable[[str], None] | None,
                    batch_prompts: int, request_kw: dict) -> tuple[torch.Tensor, float]:
    """`per_prompt` images of each prompt in prompt order, as they would be saved, and the seconds
    it took."""
    from .pipeline import GenerateRequest
    images, t0 = [], time.monotonic()
    # A request's images take the seeds seed, seed + 1, ...: those of eval_seed(seed, i, k).
    requests = [GenerateRequest(prompt=p, n=per_prompt, seed=eval_seed(seed, i), **request_kw)
                for i, p in enumerate(prompts)]
    for start in range(0, len(requests), batch_prompts):
        # Many prompts per pass: the same images as one prompt at a time (per-image seeds), faster.
        images.append(pipe.sample_batch(requests[start:start + batch_prompts]))
        if progress:
            progress(f"generated {min(start + batch_prompts, len(prompts))}/{len(prompts)} prompts")
    # Scored as they would be saved: the real draws are 8-bit images, and a sampler's floats beyond
    # [-1, 1] or between two 8-bit levels are nothing a user ever sees.
    return as_saved(torch.cat(images).cpu()), round(time.monotonic() - t0, 1)


def sampler_settings(request_kw: dict) -> dict:
    from .pipeline import GenerateRequest
    return {k: v for k, v in asdict(GenerateRequest(prompt="", **request_kw)).items()
            if k in ("steps", "sampler", "guidance", "schedule", "eta")}


def format_table(result: dict) -> str:
    """The result as a plain-text table (the JSON carries the same figures)."""
    if result["task"] == "emoji":
        from .emoji_eval import format_emoji_table
        return format_emoji_table(result)
    attrs = list(next(iter(result["match"].values())))
    lines = [f"{result.get('model', '')} ({result['task']}): {result['images']} images, {result['prompts']} prompts x "
             f"{result['per_prompt']}, settings {result.get('settings', {})}",
             "match       " + "".join(f"{a:>12}" for a in attrs)]
    for group, rates in result["match"].items():
        lines.append(f"{group:<12}" + "".join(f"{100 * rates[a]:>11.1f}%" for a in attrs))
    lines.append(f"frechet distance {result['frechet']:.2f} (real floor {result['frechet_floor']:.2f}, "
                 f"ratio {result['frechet'] / max(result['frechet_floor'], 1e-9):.2f})")
    if "diversity" in result:
        lines.append(f"diversity {result['diversity']:.2f} of real (1.00 = as varied as real draws)")
    lines.append(f"real draws read right: {100 * result['real_match']:.1f}% (the reader's own ceiling)")
    if "confusion" in result:
        lines += format_confusion(result, worst_attribute(result))
    return "\n".join(lines)


def worst_attribute(result: dict) -> str:
    """The scored attribute with the lowest match rate on seen prompts: the one worth a confusion table."""
    seen = result["match"].get("seen") or next(iter(result["match"].values()))
    return min(result["confusion"], key=lambda a: seen[a])


def format_confusion(result: dict, attr: str) -> list[str]:
    names = TASKS[result["task"]].heads[attr]
    width = max(7, *(len(n) + 1 for n in names))
    lines = [f"{attr}: asked for (rows) against read as (columns), all images",
             " " * width + "".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, result["confusion"][attr]):
        lines.append(f"{name:<{width}}" + "".join(f"{c:>{width}}" for c in row))
    return lines

