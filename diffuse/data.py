"""Captioned image data: image folders, procedural shapes, scikit-learn's digits and (built by
diffuse/emoji.py into an image folder) emoji art.

Every dataset yields (image, caption) with images as float tensors [3, H, W] in [-1, 1].
"""

import functools
import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from .errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


def as_saved(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as a saved PNG holds them: clamped and rounded to 8 bits, exactly what
    pil_to_tensor(tensor_to_pil(x)) gives, without the trip through PIL."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size` (Lanczos), then cut the centre square, as diffusers'
    training scripts do with Resize + CenterCrop."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.convert("RGB").resize((nw, nh), Image.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


@dataclass
class TensorDataset(torch.utils.data.Dataset):
    """Images held in memory (the datasets this system trains on in minutes are small)."""

    images: torch.Tensor          # [N, 3, H, W] in [-1, 1]
    captions: list[str]
    summary: dict = field(default_factory=dict)  # what the checkpoint records about the data

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        return self.images[i], self.captions[i]


# ----------------------------------------------------------------------------- image folders

@dataclass
class FolderMetadata:
    """What the metadata.jsonl files below a folder say about its images."""

    captions: dict[Path, list[str]] = field(default_factory=dict)  # image -> its captions, "text" first
    held_out: set[Path] = field(default_factory=set)                # images kept out of training


def _row_captions(row: dict) -> list[str]:
    """"text", or a row's list "captions" (several captions of one image: each becomes a
    training example of its own, so one image is seen with all of them)."""
    if "captions" not in row:
        return [str(row["text"])]
    caps = row["captions"]
    if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
        raise TypeError
    return caps


def _read_metadata(folder: Path) -> FolderMetadata:
    """Captions from every metadata.jsonl below `folder` (Hugging Face imagefolder convention:
    file_name is relative to the metadata file's own folder). Beyond the convention, a row may
    carry "captions" (a list of strings) and "held_out": true (kept for evaluation)."""
    found = FolderMetadata()
    for meta in sorted(folder.rglob("metadata.jsonl")):
        for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path = (meta.parent / row["file_name"]).resolve()
                found.captions[path] = _row_captions(row)
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{meta}:{n}: expected a JSON object with 'file_name' and 'text' "
                                f"(and, if any, 'captions' as a list of strings)") from None
            if row.get("held_out") is True:
                found.held_out.add(path)
    return found


def _sidecar_caption(image: Path) -> list[str] | None:
    txt = image.with_suffix(".txt")
    return [txt.read_text(encoding="utf-8", errors="replace").strip()] if txt.is_file() else None


def load_image_folder(path: str | Path, size: int, holdout: bool = True) -> TensorDataset:
    """All images below `path` with a caption (metadata.jsonl or a .txt file beside the image),
    resized and centre-cropped to `size`; an image with several captions is one example per
    caption. Images marked held_out are left out unless `holdout` is False. Unreadable files and
    images without captions are skipped, counted and reported; no usable image is an error."""
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"data path {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise DataError(f"data path {str(folder)!r} is not a folder")
    meta = _read_metadata(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images, captions, rows = [], [], []
    uncaptioned = unreadable = held_out = 0
    for f in files:
        if holdout and f.resolve() in meta.held_out:
            held_out += 1
            continue
        caps = meta.captions.get(f.resolve()) or _sidecar_caption(f)
        if caps is None:
            uncaptioned += 1
            continue
        try:
            with Image.open(f) as img:
                img.load()
                images.append(pil_to_tensor(resize_center_crop(img, size)))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            unreadable += 1
            continue
        captions += caps
        rows += [len(images) - 1] * len(caps)
    if uncaptioned or unreadable:
        warnings.warn(f"skipped {uncaptioned} image(s) without a caption and {unreadable} unreadable "
                      f"file(s) in {folder}", stacklevel=2)
    if not images:
        raise DataError(f"no usable captioned images in {str(folder)!r} ({len(files)} image file(s), "
                        f"{uncaptioned} without caption, {unreadable} unreadable, {held_out} held out); captions "
                        f"come from metadata.jsonl lines {{\"file_name\", \"text\"}} or .txt files beside the images")
    stacked = torch.stack(images)
    if len(rows) > len(images):  # the training loop indexes examples, so each caption gets a row
        stacked = stacked[torch.tensor(rows)]
    summary = {"kind": "folder", "path": str(folder), "images": len(images), "examples": len(captions),
               "skipped_uncaptioned": uncaptioned, "skipped_unreadable": unreadable, "held_out": held_out,
               "size": size, "prompts": spread(captions, EXAMPLE_PROMPTS)}
    built = _emoji_build(folder)
    if built:
        summary["emoji"] = built
    return TensorDataset(stacked, captions, summary)


def _emoji_build(folder: Path) -> dict | None:
    """What `diffuse data emoji` recorded about a folder it wrote (its build.json), so that a
    model trained on it knows its data was emoji art (the evaluator picks its reader by this)."""
    try:
        info = json.loads((folder / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "styles" not in info or "concepts" not in info:
        return None
    return {k: info[k] for k in ("size", "styles", "sources", "concepts", "images") if k in info}


# ----------------------------------------------------------------------------- procedural shapes

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
          "purple": (150, 60, 200), "orange": (245, 140, 30), "cyan": (40, 210, 220), "pink": (245, 130, 190)}
BACKGROUNDS = {"black": (15, 15, 15), "white": (240, 240, 240), "gray": (128, 128, 128), "navy": (20, 30, 80)}
SIZES = {"small": 0.26, "large": 0.40}  # radius as a share of the image side (before the position factor)
POSITIONS = {"center": (0.5, 0.5), "top left": (0.3, 0.3), "top right": (0.7, 0.3),
             "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7)}
TEMPLATES = (
    "a {size} {color} {shape} on a {background} background",
    "a {color} {shape} in the {position}, {background} background",
    "{size} {color} {shape}, {position}, on {background}",
    "a picture of a {size} {color} {shape} in the {position} on a {background} background",
    "{color} {shape}",
    "a {shape} colored {color} against {background}",
)


# (shape, colour) pairs that training on `shapes` leaves out by default, so evaluation can ask whether
# a model composes attributes it never saw together. Each shape and each of six colours is left
# out once; every shape and every colour still appears in training with other partners.
HELD_OUT = frozenset({("star", "red"), ("circle", "blue"), ("triangle", "yellow"), ("square", "green"),
                      ("cross", "purple"), ("diamond", "cyan")})


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    color: str
    background: str
    size: str
    position: str

    def caption(self, template: str) -> str:
        return template.format(**self.__dict__)


def _shape_points(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n, radii, phase):
        return [(cx + radii[k % len(radii)] * r * math.sin(phase + 2 * math.pi * k / n),
                 cy - radii[k % len(radii)] * r * math.cos(phase + 2 * math.pi * k / n)) for k in range(n)]
    if shape == "square":
        return ring(4, [1.25], math.pi / 4 + rot)
    if shape == "diamond":
        return ring(4, [1.25], rot)
    if shape == "triangle":
        return [(x, y + 0.15 * r) for x, y in ring(3, [1.3], rot)]
    if shape == "star":
        return ring(10, [1.3, 0.55], rot)
    if shape == "cross":
        a, b = 1.1, 0.38
        pts = [(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b), (-b, a)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]
    raise ValueError(shape)


def render_shape(spec: ShapeSpec, size: int, rng: random.Random) -> Image.Image:
    """Draw at 4x and downsample, for anti-aliased edges; small jitter of place, size, rotation
    and colour keeps the data from being 1,920 exact copies."""
    s = 4 * size
    jitter = lambda v, amount: tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in v)
    img = Image.new("RGB", (s, s), jitter(BACKGROUNDS[spec.background], 8))
    draw = ImageDraw.Draw(img)
    px, py = POSITIONS[spec.position]
    cx, cy = (px + rng.uniform(-0.04, 0.04)) * s, (py + rng.uniform(-0.04, 0.04)) * s
    r = SIZES[spec.size] * (0.55 if spec.position != "center" else 0.65) * s * rng.uniform(0.9, 1.1)
    color = jitter(COLORS[spec.color], 15)
    if spec.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        draw.polygon(_shape_points(spec.shape, cx, cy, r, rng.uniform(-0.15, 0.15)), fill=color)
    return img.resize((size, size), Image.LANCZOS)


@functools.lru_cache(maxsize=8)
def shape_specs(exclude: frozenset = frozenset()) -> tuple[ShapeSpec, ...]:
    """Every attribute combination, less the (shape, color) pairs in `exclude`."""
    return tuple(ShapeSpec(sh, co, bg, sz, po) for sh in SHAPES for co in COLORS for bg in BACKGROUNDS
                 for sz in SIZES for po in POSITIONS if (sh, co) not in exclude)


def draw_shape(index: int, size: int, seed: int, exclude: frozenset = frozenset()) -> tuple[Image.Image, str, ShapeSpec]:
    """Item `index` of the shapes stream with `seed`: the same triple on every machine."""
    rng = random.Random(f"shapes-{seed}-{index}")
    specs = shape_specs(exclude)
    spec = specs[rng.randrange(len(specs))]
    return render_shape(spec, size, rng), spec.caption(rng.choice(TEMPLATES)), spec


def load_shapes(size: int = 32, n: int = 20000, seed: int = 0, exclude: frozenset = frozenset()) -> TensorDataset:
    images, captions = [], []
    for i in range(n):
        img, caption, _ = draw_shape(i, size, seed, exclude)
        images.append(pil_to_tensor(img))
        captions.append(caption)
    summary = {"kind": "shapes", "images": n, "seed": seed, "size": size, "exclude": sorted(map(list, exclude))}
    return TensorDataset(torch.stack(images), captions, summary)


# ----------------------------------------------------------------------------- digits

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("the digit {d}", "a handwritten {d}", "the number {w}", "a handwritten digit {w}", "{w}")


def load_digits(size: int = 32, seed: int = 0) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), upscaled bicubically to `size`, white
    on black, each with a caption naming its class."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    data = sk_digits()
    rng = random.Random(f"digits-{seed}")
    images, captions = [], []
    for pixels, label in zip(data.images, data.target):
        img = Image.fromarray((pixels * (255 / 16)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        images.append(pil_to_tensor(img))
        captions.append(rng.choice(DIGIT_TEMPLATES).format(d=int(label), w=DIGIT_WORDS[label]))
    summary = {"kind": "digits", "images": len(captions), "seed": seed, "size": size}
    return TensorDataset(torch.stack(images), captions, summary)


def load_dataset(spec: str, size: int, seed: int = 0, shapes: int = 20000, holdout: bool = True) -> TensorDataset:
    """`shapes` (that many drawn, without the HELD_OUT pairs unless holdout is False), `digits`,
    `emoji` (built into the cache on first use), or a path to an image folder (without its
    held-out images unless holdout is False)."""
    if spec == "shapes":
        return load_shapes(size, n=shapes, seed=seed, exclude=HELD_OUT if holdout else frozenset())
    if spec == "digits":
        return load_digits(size, seed=seed)
    if spec == "emoji":
        from .emoji import cached_emoji_folder  # the emoji extra is optional: imported only when asked for
        return load_image_folder(cached_emoji_folder(size), size, holdout=holdout)
    return load_image_folder(spec, size, holdout=holdout)


# ----------------------------------------------------------------------------- example prompts

EXAMPLE_PROMPTS = 6  # how many a checkpoint records and the web page offers


def spread(items: list, k: int) -> list:
    """k items evenly spread over the list (neighbours are often one image's captions), no repeats."""
    n = min(k, len(items))
    return list(dict.fromkeys(items[i * len(items) // n] for i in range(n)))


def example_prompts(summary: dict, k: int = EXAMPLE_PROMPTS) -> list[str]:
    """A few prompts a model knows, from the data summary its checkpoint records: the `prompts` kept
    there (an image folder's training captions; the bundled models' were chosen by hand from theirs),
    else, for the procedural sets, captions made as their data's are (no held-out pair), else none.
    The server's web page offers them as examples."""
    if summary.get("prompts"):
        return [str(p) for p in summary["prompts"]][:k]
    rng = random.Random("example prompts")
    if summary.get("kind") == "shapes":
        specs = shape_specs(frozenset(tuple(pair) for pair in summary.get("exclude", [])))
        return [rng.choice([s for s in specs if s.shape == shape]).caption(TEMPLATES[0]) for shape in SHAPES][:k]
    if summary.get("kind") == "digits":
        return [rng.choice(DIGIT_TEMPLATES).format(d=d, w=DIGIT_WORDS[d]) for d in rng.sample(range(10), k)]
    return []
