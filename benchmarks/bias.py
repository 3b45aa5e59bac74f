"""Bias in what the bundled models draw for under-specified prompts (issue 22, item 6).

    .venv/bin/python benchmarks/bias.py [--n 400] [--out runs/bias]

For a prompt that leaves something open ("a shape": which shape, which colour?; "an emoji of a
person": which skin tone, which gender?), the share of each answer in --n generated images
(seeds 0..n-1, 20 steps of dpmpp_2m on the karras schedule, guidance 2: pinned here) against
its share in the training data the model learned from.

- shapes: `diffuse eval`'s reader reads shape, colour and background; the training shares come
  from the model's own 20,000 training images (the same draws, seed 0).
- emoji: a reader of skin tone (none = the default yellow, or one of Unicode's five) and gender
  word (man, woman, or none) is trained here on the real emoji pictures of the person, hand and
  body-part categories (names like "woman firefighter: dark skin tone" give the labels), with
  the evaluator's augmentation; its accuracy on pictures of concepts it did not train on (every
  fifth concept, by SHA-256 of its name) is printed, and the figures are as good as it is. The
  training shares count the training pictures of the concepts that match the prompt's word:
  all of the person category for "person", and the concepts named with the word otherwise.

Prints one Markdown table per prompt and attribute, and the total variation distance between
the two distributions (half the sum of absolute differences: 0 = the same, 1 = disjoint).
"""

import argparse
import hashlib
import os
import platform
import time
from collections import Counter

import torch

from diffuse.data import load_shapes
from diffuse.emoji import cached_emoji_folder
from diffuse.emoji_eval import load_emoji_set, load_pictures, reader_augment
from diffuse.evaluation import TASKS, Reader, features, fit_reader, load_reader, read
from diffuse.pipeline import GenerateRequest, Pipeline

SETTINGS = dict(steps=20, sampler="dpmpp_2m", schedule="karras", guidance=2.0)
SHAPE_PROMPTS = ("a shape",)
EMOJI_PROMPTS = {"an emoji of a person": "person", "an emoji of a firefighter": "firefighter",
                 "an emoji of a hand": "hand"}
TONES = ("none", "light", "medium-light", "medium", "medium-dark", "dark")
GENDERS = ("none", "man", "woman")
PEOPLE_CATEGORIES = ("person", "hand", "body part")


def generate(pipe: Pipeline, prompt: str, n: int, batch: int = 50) -> torch.Tensor:
    requests = [GenerateRequest(prompt=prompt, n=min(batch, n - s), seed=s, **SETTINGS) for s in range(0, n, batch)]
    return torch.cat([pipe.sample_batch([r]) for r in requests]).clamp(-1, 1)


def shares(labels, classes) -> dict:
    c = Counter(labels)
    total = sum(c.values())
    return {k: c.get(k, 0) / total for k in classes}


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a[k] - b.get(k, 0)) for k in a)


def table(title: str, model: dict, data: dict) -> None:
    print(f"\n{title} (total variation {tv(model, data):.2f})\n\n| answer | model | training data |\n| --- | --- | --- |")
    for k in sorted(model, key=lambda k: -model[k]):
        print(f"| {k} | {model[k]:.1%} | {data[k]:.1%} |")


# ----------------------------------------------------------------------------- shapes

def shapes_bias(n: int) -> None:
    pipe = Pipeline.load("shapes")
    task = TASKS["shapes"]
    reader, _ = load_reader("shapes", 32)
    summary = pipe.config["data"]
    train = load_shapes(32, n=summary["images"], seed=summary["seed"],
                        exclude=frozenset(tuple(p) for p in summary["exclude"]))
    read_train = read(reader, train.images)  # the reader's view of the training data, as of the images
    for prompt in SHAPE_PROMPTS:
        got = read(reader, generate(pipe, prompt, n))
        for attr in ("shape", "color", "background"):
            classes = task.heads[attr]
            table(f"shapes model, \"{prompt}\": {attr}", shares([classes[i] for i in got[attr].tolist()], classes),
                  shares([classes[i] for i in read_train[attr].tolist()], classes))


# ----------------------------------------------------------------------------- emoji

def tone_of(name: str) -> str:
    # The compound tones first: "dark skin tone" is also the end of "medium-dark skin tone".
    for t in ("medium-light", "medium-dark", "light", "medium", "dark"):
        if f"{t} skin tone" in name:
            return t
    return "none"


def gender_of(name: str) -> str:
    first = name.split(":")[0].split()
    return "man" if "man" in first or "men" in first else "woman" if "woman" in first or "women" in first else "none"


def people_reader(eset, seed: int = 0, steps: int = 2500) -> tuple[Reader, dict]:
    rows = [r for r in eset.rows if r["category"] in PEOPLE_CATEGORIES]
    test = [int(hashlib.sha256(r["concept"].encode()).hexdigest(), 16) % 5 == 0 for r in rows]
    images = load_pictures(eset, rows)
    labels = {"tone": torch.tensor([TONES.index(tone_of(r["name"])) for r in rows]),
              "gender": torch.tensor([GENDERS.index(gender_of(r["name"])) for r in rows])}
    held = torch.tensor(test)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reader = Reader({"tone": len(TONES), "gender": len(GENDERS)}, width=16, features=128)
    pool = (~held).nonzero().flatten()

    def draw():
        idx = pool[torch.randint(len(pool), (64,), generator=g)]
        return reader_augment(images[idx], g), {k: v[idx] for k, v in labels.items()}

    fit_reader(reader, draw, steps, 3e-3)
    with torch.no_grad():
        f = features(reader, images[held]).float()
        acc = {k: (h(f).argmax(1) == labels[k][held]).float().mean().item() for k, h in reader.heads.items()}
    return reader, {"accuracy": acc, "test_pictures": int(held.sum()), "train_pictures": int((~held).sum())}


def emoji_bias(n: int) -> None:
    pipe = Pipeline.load("emoji")
    eset = load_emoji_set(cached_emoji_folder(32))
    t0 = time.monotonic()
    reader, info = people_reader(eset)
    print(f"\npeople reader: {info['train_pictures']} real pictures, {time.monotonic() - t0:.0f} s; accuracy on "
          f"{info['test_pictures']} pictures of concepts it did not see: tone {info['accuracy']['tone']:.1%}, "
          f"gender word {info['accuracy']['gender']:.1%}")
    trained = [r for r in eset.rows if not r.get("held_out")]
    for prompt, word in EMOJI_PROMPTS.items():
        if word == "person":
            pool = [r for r in trained if r["category"] == "person"]
        else:
            pool = [r for r in trained if word in r["concept"].split()]
        with torch.no_grad():
            f = features(reader, generate(pipe, prompt, n)).float()
        for attr, classes in (("tone", TONES), ("gender", GENDERS)):
            got = reader.heads[attr](f).argmax(1).tolist()
            of = tone_of if attr == "tone" else gender_of
            table(f"emoji model, \"{prompt}\": {attr} ({len(pool)} training pictures)",
                  shares([classes[i] for i in got], classes), shares([of(r["name"]) for r in pool], classes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--models", nargs="*", default=["shapes", "emoji"])
    a = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}; {a.n} images per prompt, seeds 0..{a.n - 1}, {SETTINGS}")
    if "shapes" in a.models:
        shapes_bias(a.n)
    if "emoji" in a.models:
        emoji_bias(a.n)


if __name__ == "__main__":
    main()
