"""Does it copy? Each generated image's nearest training images, and a near-copy threshold
calibrated on the training set itself.

Two distances, both to every (distinct) training image:
- pixels: the tiled L2 of Carlini et al. 2023 ("Extracting Training Data from Diffusion Models",
  sec. 5): the images are cut into a 4 x 4 grid of tiles and the distance is the largest tile's
  RMS difference, so two images are close only if they match everywhere, not just on the plain
  background most of them share;
- features: Euclidean distance between the evaluator's reader features (evaluation.Reader, the
  64-d layer `diffuse eval` computes its Frechet distance in), where they exist for the data: a
  near-copy shifted by a pixel or recoloured slightly is still close there.

Closeness alone says little: a training set of 20,000 procedural shapes holds many images almost
alike, and an image drawn well from their distribution lies close to some of them. So each
distance is made relative, as Carlini et al. do: the distance to the nearest training image
divided by the mean distance to the k = 50 nearest (their l(x^, x; S) with its alpha folded
into the threshold). A copy of one training image scores near 0; an image in a crowd of similar
ones scores near 1.

The threshold comes from the training images themselves, as Somepalli et al. 2023 ("Diffusion
Art or Digital Forgery?", sec. 4) calibrate theirs on the training set's own similarities: for a
sample of training images, the same ratio to the rest of the set (leaving the image itself out)
measures how close a training image normally lies to its nearest other one. The threshold in
each space is that ratio's 1% quantile over half of the sample; an image is a near-copy if it
is closer than that in pixels or in features. A new draw from the data's own distribution is as
close to the training set as a training image is to the others, so it is flagged about as often
as the other half of the sample is: that rate, measured, is what a model that does not copy
should show, and the verdict compares the generated images' share with it (a one-sided binomial
test).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError

from .data import IMAGE_EXTENSIONS, as_saved, load_dataset, load_digits, load_shapes, pil_to_tensor, resize_center_crop
from .errors import DiffuseError

TILES = 4              # Carlini et al. cut images into a 4 x 4 grid
NEIGHBOURS = 50        # k of the relative distance (their n = 50)
QUANTILE = 0.01        # the threshold: this quantile of the training images' own ratios
CALIBRATION = 2000     # training images in the calibration sample (half sets the threshold, half checks it)
NEAREST_SHOWN = 3      # training images listed and drawn beside each generated image
VERDICT_P = 1e-3       # the binomial test's level for "copies"


@dataclass
class TrainingSet:
    """The distinct images a model trained on, one caption each, in [-1, 1]."""
    images: torch.Tensor
    captions: list[str]
    summary: dict


# ----------------------------------------------------------------------------- the data

def distinct(images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Each image once (an image folder repeats an image per caption), with its first caption;
    compared as saved 8-bit images."""
    keep, seen = [], set()
    levels = ((as_saved(images) + 1) * 127.5).round().to(torch.uint8)
    for i in range(len(images)):
        key = hashlib.sha1(levels[i].numpy().tobytes()).digest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return as_saved(images[keep]), [captions[i] for i in keep]


def training_set(config: dict, data: str | None = None) -> TrainingSet:
    """The images the model of `config` trained on, rebuilt from what its checkpoint records
    (procedural data by its seed and count, an image folder by its path, without the held-out
    images it was not trained on), or those of `data` (a name or folder) at the model's size."""
    summary = config.get("data", {})
    size = config["unet"]["image_size"]
    if data is not None:
        ds = load_dataset(data, size)
    elif summary.get("kind") == "shapes":
        ds = load_shapes(size, n=summary["images"], seed=summary.get("seed", 0),
                         exclude=frozenset(tuple(p) for p in summary.get("exclude", [])))
    elif summary.get("kind") == "digits":
        ds = load_digits(size, seed=summary.get("seed", 0))
    elif summary.get("kind") == "folder" and summary.get("path"):
        path = summary["path"]
        if path != "emoji" and not Path(path).is_dir():
            raise DiffuseError(f"the model was trained on the folder {path!r}, which is not here: name its "
                               f"training images with --data FOLDER")
        ds = load_dataset(path, size, holdout=summary.get("held_out", 0) > 0)
    else:
        raise DiffuseError("the checkpoint does not say what it was trained on: name its training images with --data")
    images, captions = distinct(ds.images, ds.captions)
    return TrainingSet(images, captions, ds.summary)


def load_image_files(folder: str | Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """Every image in `folder` (not below it), resized and centre-cropped to `size`, as saved."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DiffuseError(f"--images {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images, names = [], []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                images.append(pil_to_tensor(resize_center_crop(img, size)))
                names.append(f.name)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            continue
    if not images:
        raise DiffuseError(f"no readable images in {str(folder)!r} ({len(files)} image file(s))")
    return as_saved(torch.stack(images)), names


# ----------------------------------------------------------------------------- the distances

def tiles(x: torch.Tensor, n: int = TILES) -> torch.Tensor:
    """[B, C, H, W] -> [n*n, B, C*(H/n)*(W/n)]: the image cut into an n x n grid of tiles."""
    b, c, h, w = x.shape
    if h % n or w % n:
        raise DiffuseError(f"images of {h}x{w} pixels do not cut into a {n}x{n} grid")
    t = x.reshape(b, c, n, h // n, n, w // n).permute(2, 4, 0, 1, 3, 5)
    return t.reshape(n * n, b, -1)


@torch.no_grad()
def tiled_l2(a: torch.Tensor, b: torch.Tensor, n: int = TILES, chunk: int = 256) -> torch.Tensor:
    """[len(a), len(b)]: the largest over the n x n tiles of the RMS difference (Carlini et al.
    2023, sec. 5), on [-1, 1] images."""
    ta, tb = tiles(a.float(), n), tiles(b.float(), n)
    dims = ta.shape[-1]
    out = torch.empty(len(a), len(b))
    for s in range(0, len(a), chunk):
        worst = torch.zeros(min(chunk, len(a) - s), len(b))
        for k in range(n * n):
            torch.maximum(worst, torch.cdist(ta[k, s:s + chunk], tb[k]), out=worst)
        out[s:s + chunk] = worst / math.sqrt(dims)
    return out


def relative(distances: torch.Tensor, k: int = NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nearest distances and indices, and the ratio nearest / mean of the k nearest (Carlini
    et al. 2023's relative distance without its alpha; the nearest is one of the k)."""
    k = min(k, distances.shape[1])
    near, index = distances.topk(k, dim=1, largest=False)
    ratio = near[:, 0] / near.mean(1).clamp_min(1e-12)
    return near, index, ratio


@dataclass
class Space:
    """One space in which images are compared: how far apart a batch is from the training set."""
    name: str
    distances: Callable[[torch.Tensor], torch.Tensor]   # images -> [B, len(training set)]
    threshold: float = 0.0
    fresh_rate: float = 0.0                              # share of the checking half it flags


def pixel_space(train: torch.Tensor) -> Space:
    return Space("pixels", lambda x: tiled_l2(x, train))


def feature_space(reader, train: torch.Tensor) -> Space:
    from .evaluation import features
    train_f = features(reader, train).float()
    return Space("features", lambda x: torch.cdist(features(reader, x).float(), train_f))


def calibrate(spaces: list[Space], train: torch.Tensor, n: int = CALIBRATION, quantile: float = QUANTILE,
              seed: int = 0) -> dict:
    """Set each space's threshold from the training set's own ratios (each sampled image against
    the others): the `quantile` of the first half of the sample. The second half, flagged with
    those thresholds in any space, gives the rate at which draws like the training images are
    flagged."""
    if len(train) < 4:
        raise DiffuseError(f"the training set has {len(train)} distinct image(s): too few to calibrate a threshold")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:min(n, len(train))]
    half = len(pick) // 2
    flagged = torch.zeros(len(pick) - half, dtype=torch.bool)
    for space in spaces:
        d = space.distances(train[pick])
        d[torch.arange(len(pick)), pick] = float("inf")  # leave the image itself out
        ratio = relative(d)[2]
        space.threshold = float(torch.quantile(ratio[:half].double(), quantile))
        over = ratio[half:] <= space.threshold
        space.fresh_rate = float(over.float().mean())
        flagged |= over
    return {"calibration_images": len(pick), "checked": len(pick) - half, "quantile": quantile, "neighbours": NEIGHBOURS,
            "fresh_rate": float(flagged.float().mean()),
            "thresholds": {s.name: s.threshold for s in spaces},
            "fresh_rate_per_space": {s.name: s.fresh_rate for s in spaces}}


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    p = min(max(p, 1e-12), 1 - 1e-12)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


# ----------------------------------------------------------------------------- the report

def find_copies(generated: torch.Tensor, names: list[str], train: TrainingSet, reader=None,
                progress: Callable[[str], None] | None = None) -> dict:
    """Each generated image's nearest training images in pixels (and features, given a reader),
    whether it is a near-copy, and the share of near-copies against the calibrated fresh rate."""
    if generated.shape[1:] != train.images.shape[1:]:
        raise DiffuseError(f"generated images are {tuple(generated.shape[1:])}, the training images "
                           f"{tuple(train.images.shape[1:])}")
    spaces = [pixel_space(train.images)] + ([feature_space(reader, train.images)] if reader is not None else [])
    if progress:
        progress(f"calibrating on {min(CALIBRATION, len(train.images))} of {len(train.images)} training images")
    calibration = calibrate(spaces, train.images)
    rows = [{"image": name, "near_copy": False} for name in names]
    for space in spaces:
        near, index, ratio = relative(space.distances(generated))
        for i, row in enumerate(rows):
            close = bool(ratio[i] <= space.threshold)
            row[space.name] = {"ratio": round(float(ratio[i]), 4), "near_copy": close,
                               "nearest": [{"index": int(j), "distance": round(float(d), 4),
                                            "caption": train.captions[int(j)]}
                                           for d, j in zip(near[i, :NEAREST_SHOWN], index[i, :NEAREST_SHOWN])]}
            row["near_copy"] |= close
    copies = sum(r["near_copy"] for r in rows)
    n = len(rows)
    # A rate measured as 0 on m images is taken as 1/m: the test must not call one flag significant.
    p = binomial_tail(copies, n, max(calibration["fresh_rate"], 1 / calibration["checked"]))
    return {"generated": n, "training_images": len(train.images), "spaces": [s.name for s in spaces],
            "calibration": calibration, "near_copies": copies, "share": copies / n,
            "share_per_space": {s.name: sum(r[s.name]["near_copy"] for r in rows) / n for s in spaces},
            "p_value": p, "copies": bool(p < VERDICT_P and copies / n >= 2 * calibration["fresh_rate"]),
            "rows": rows}


def verdict(report: dict) -> str:
    share, fresh = report["share"], report["calibration"]["fresh_rate"]
    if report["copies"]:
        return (f"COPIES: {share:.1%} of the generated images are near-copies of training images, against "
                f"{fresh:.1%} for draws like the training images themselves (p = {report['p_value']:.1g})")
    return (f"no sign of copying: {share:.1%} near-copies, against {fresh:.1%} for draws like the training "
            f"images themselves")


def format_report(report: dict, rows: int = 10) -> str:
    cal = report["calibration"]
    lines = [f"generated images   {report['generated']}",
             f"training images    {report['training_images']} distinct",
             "threshold          " + ", ".join(f"{k} ratio <= {v:.3f}" for k, v in cal["thresholds"].items())
             + f" (the {cal['quantile']:.0%} quantile of {cal['calibration_images'] - cal['checked']} training images' own)",
             "near-copies        " + ", ".join(f"{k} {v:.1%}" for k, v in report["share_per_space"].items())
             + f"; either {report['share']:.1%}",
             verdict(report), "",
             "most copy-like (ratio: nearest distance / mean of the 50 nearest; lower is closer):"]
    for r in sorted(report["rows"], key=lambda r: r["pixels"]["ratio"])[:rows]:
        near = r["pixels"]["nearest"][0]
        lines.append(f"  {'COPY ' if r['near_copy'] else '     '}{r['image']}: pixels {r['pixels']['ratio']:.3f}"
                     + (f", features {r['features']['ratio']:.3f}" if "features" in r else "")
                     + f"; nearest #{near['index']} ({near['caption']!r}) at {near['distance']:.3f}")
    return "\n".join(lines)


def copies_picture(report: dict, generated: torch.Tensor, train: TrainingSet, made_by: list[dict],
                   rows: int = 8) -> Image.Image:
    """The most copy-like generated images, each beside its three nearest training images in
    pixels, labelled with distances (`diffuse explain copies`); `made_by` holds each generated
    image's parameters (Pipeline.metadata, or {"file": name} for an image read from a folder),
    which the picture records with the training images it shows beside them."""
    from .explain import labelled_strip
    order = sorted(range(len(report["rows"])), key=lambda i: report["rows"][i]["pixels"]["ratio"])[:rows]
    tiles_, labels = [], []
    for i in order:
        r = report["rows"][i]
        tiles_.append([generated[i]] + [train.images[n["index"]] for n in r["pixels"]["nearest"]])
        labels.append([f"{'COPY' if r['near_copy'] else 'generated'}\nratio {r['pixels']['ratio']:.2f}"]
                      + [f"#{n['index']}\nd {n['distance']:.3f}" for n in r["pixels"]["nearest"]])
    picture = labelled_strip(tiles_, labels)
    picture.info["diffuse"] = json.dumps({
        "picture": "explain copies", "images": [made_by[i] for i in order], "data": train.summary.get("path") or train.summary.get("kind"),
        "training_images": [[n["index"] for n in report["rows"][i]["pixels"]["nearest"]] for i in order]})
    return picture


def reader_for(config: dict, train: TrainingSet, progress: Callable[[str], None] | None = None):
    """The evaluator's reader for the model's data, or None where there is none (any other folder)."""
    from .evaluation import TASKS, load_reader, model_task
    try:
        task = model_task({"data": train.summary})
    except DiffuseError:
        return None
    size = config["unet"]["image_size"]
    if task == "emoji":
        from .emoji import cached_emoji_folder
        from .emoji_eval import load_emoji_reader, load_emoji_set
        path = train.summary["path"]
        folder = cached_emoji_folder(size) if path == "emoji" else Path(path)
        return load_emoji_reader(load_emoji_set(folder), size, progress)[0]
    return load_reader(TASKS[task].name, size, progress)[0]


def generate_from_captions(pipe, train: TrainingSet, n: int, seed: int, batch: int = 32,
                           **request_kw) -> tuple[torch.Tensor, list[str], list[dict]]:
    """n images from the captions of n training images picked at random (Carlini et al. prompt
    with training captions: where a model copies, they are what makes it), image i from seed + i."""
    g = torch.Generator().manual_seed(seed)
    m = len(train.captions)  # each caption once while there are enough, else drawn with repeats
    pick = (torch.randperm(m, generator=g)[:n] if n <= m else torch.randint(m, (n,), generator=g)).tolist()
    requests = [pipe.request(train.captions[j], n=1, seed=seed + i, **request_kw) for i, j in enumerate(pick)]
    images = torch.cat([pipe.sample_batch(requests[s:s + batch]) for s in range(0, len(requests), batch)]).cpu()
    names = [f"seed {r.seed}: {r.prompt}" for r in requests]
    return as_saved(images), names, [json.loads(pipe.metadata(r, r.seed)["diffuse"]) for r in requests]
