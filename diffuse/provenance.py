"""What an image says about how it was made: the report of `diffuse inspect`.

Three witnesses, each read on its own and none taken on another's word. The PNG's text parameters
say how to make the image again, but anyone can write them, so they say nothing of who made it.
The content credentials (C2PA, see credentials.py) sign a claim and every byte of the file: they
show whether the file changed since it was signed, and by which key. A watermark in the pixels
themselves, set in the start noise (watermark.py) and read by inverting the sampler with each
candidate model, survives what strips both of the others, a re-encoding or a rescaled copy.
"""

import io
import json
import shlex
from dataclasses import asdict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .credentials import (COMPOSITE, COMPOSITE_SYNTHETIC, COMPOSITE_TRAINED, TRAINED, WHAT_IT_PROVES, Claim,
                          local_anchor, read_bytes, read_claim)
from .errors import DiffuseError

WATERMARK_SKIPPED = "not read (no model given to read it with)"
SOURCE_MEANING = {TRAINED: "made by a generative AI model",
                  COMPOSITE_TRAINED: "an input image changed by a generative AI model",
                  COMPOSITE_SYNTHETIC: "an input image with synthetic parts added by an algorithm",
                  COMPOSITE: "a composite of several images, any of which may or may not be made by AI",
                  "digitalCapture": "a capture by a camera or scanner"}
INPUT, MASK = "INPUT.png", "MASK.png"  # what the re-create command calls the files an edit started from


def inspect_image(path: str | Path, pipes: list | None = None) -> dict:
    """Everything diffuse can read of an image file, as a JSON-ready dict, its watermark read
    with each of `pipes` (none: not read); a file that is missing or not an image is a
    DiffuseError."""
    return inspect_bytes(read_bytes(path), str(path), pipes)


def inspect_bytes(data: bytes, name: str, pipes: list | None = None) -> dict:
    """inspect_image() of an image's bytes (an upload), `name` standing for its file."""
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise DiffuseError(f"{name!r} is not an image diffuse can read") from None
    text = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}
    params, where = recorded_parameters(text), "png text"
    claim = read_claim(data, anchors=local_anchor(), mime=Image.MIME.get(img.format, "image/png"))
    if params is None and claim is not None and claim.valid and isinstance(claim.parameters, dict):
        params, where = claim.parameters, "content credentials"  # a GIF has no text of ours: its manifest does
    if params is None and img.format == "GIF" and isinstance(img.info.get("comment"), bytes):
        params, where = recorded_parameters({"diffuse": img.info["comment"].decode("utf-8", "replace")}), "gif comment"
    mark = read_watermark(img, params, pipes)
    return {"file": name, "format": img.format, "width": img.width, "height": img.height,
            "parameters": params, "parameters_from": where if params is not None else None,
            "a1111_parameters": text.get("parameters"),
            "recreate": recreate(params) if params is not None else None,
            "credentials": claim_report(claim) if claim is not None else None,
            "watermark": mark,
            "watermark_note": WATERMARK_SKIPPED if mark is None else watermark_line(mark)}


def recorded_model_dirs(path: str | Path) -> list[str]:
    """The checkpoint folder an image's parameters name, when it is a folder here (bundled
    models are candidates anyway); nothing for a file that cannot be read."""
    try:
        with Image.open(path) as img:
            text = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return []
    params = recorded_parameters(text)
    first = (params.get("images") or [params])[0] if params else {}
    name = first.get("model") if isinstance(first, dict) else None
    from .checkpoint import CONFIG_FILE
    return [str(Path(name))] if isinstance(name, str) and (Path(name) / CONFIG_FILE).is_file() else []


def read_watermark(img: Image.Image, params: dict | None, pipes: list | None) -> dict | None:
    """The best reading of the start-noise mark among the candidate models (the one it records
    first, when it is among them), with every model's reading under "tried"."""
    from .watermark import best_reading, read_mark
    if not pipes:
        return None
    first = (params.get("images") or [params])[0] if params else None  # a picture: its first tile's settings
    readings = [read_mark(p, img, first if isinstance(first, dict) else None) for p in pipes]
    best = best_reading(readings)
    return {**best, "tried": [r["model"] for r in readings]}


def watermark_line(mark: dict) -> str:
    from .watermark import describe
    return describe(mark)


def recorded_parameters(text: dict) -> dict | None:
    """The "diffuse" JSON of a PNG's text chunks, when it holds an object."""
    try:
        params = json.loads(text["diffuse"])
    except (KeyError, ValueError):
        return None
    return params if isinstance(params, dict) else None


def claim_report(claim: Claim) -> dict:
    return {**asdict(claim), "meaning": SOURCE_MEANING.get(claim.digital_source_type), "proves": WHAT_IT_PROVES}


def recreate(params: dict) -> dict:
    """{"command": the one `diffuse` command that makes the image again, or None, "note": what
    else it needs or why there is none}."""
    try:
        command, note = recreate_picture(params) if "picture" in params else recreate_image(params)
    except (KeyError, TypeError, ValueError) as e:
        return {"command": None, "note": f"the parameters lack what a command needs ({e})"}
    notes = [n for n in (note, model_note(params)) if n]
    return {"command": shlex.join(str(a) for a in command) if command else None, "note": "; ".join(notes) or None}


def recreate_image(p: dict) -> tuple[list | None, str | None]:
    """One image of generate, img2img, inpaint, outpaint or vary (which is img2img at low strength)."""
    if p["mode"] == "txt2img":
        return ["diffuse", "generate", p["prompt"], *sampling_args(p)], None
    strength = ["--strength", p["strength"]]
    if "outpaint" in p:
        pads = [a for side, v in p["outpaint"].items() for a in (f"--{side}", v)]
        command = ["diffuse", "outpaint", INPUT, p["prompt"], *sampling_args(p), *pads]
    elif p["mode"] == "inpaint":
        command = ["diffuse", "inpaint", INPUT, MASK, p["prompt"], *sampling_args(p), *strength]
    else:
        command = ["diffuse", "img2img", INPUT, p["prompt"], *sampling_args(p), *strength]
    return command, input_note(p)


def recreate_picture(p: dict) -> tuple[list | None, str | None]:
    """A grid or an explain picture: the command that draws the whole picture again."""
    kind, shown = p["picture"], p.get("images", [])
    if kind == "explain noise":
        return (["diffuse", "explain", "noise", INPUT, "--sigmas", *p["sigmas"], "--size", p["size"], "--seed", p["seed"]],
                input_note(p))
    first = shown[0]
    if kind == "grid":
        seeds = [t["seed"] for t in shown]
        same = all({**t, "seed": 0, "variation_seed": 0} == {**first, "seed": 0, "variation_seed": 0} for t in shown)
        if not same or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            return None, "its images were not made by one command (their settings differ)"
        command, note = recreate_image(first)
        grid_note = "the grid is the file grid-SEED-PROMPT.png, or NAME-grid.png with --out NAME.png"
        return command + ["-n", len(shown), "--grid"], "; ".join(n for n in (note, grid_note) if n)
    if kind == "explain denoise":
        return ["diffuse", "explain", "denoise", first["prompt"], *sampling_args(first)], None
    if kind == "explain guidance":
        args = sampling_args({**first, "guidance": None})
        return ["diffuse", "explain", "guidance", first["prompt"], *args, "--scales", *[t["guidance"] for t in shown]], None
    if kind == "explain prompt":
        prompts = list(dict.fromkeys(t["prompt"] for t in shown))
        return (["diffuse", "explain", "prompt", *prompts, "--model", first["model"], "-n", len(shown) // len(prompts),
                 "--seed", first["seed"], "--steps", first["steps"], *mark_args(first)], None)
    if kind == "explain styles":
        cells = [t["prompt"].rsplit(", ", 1) for t in shown]  # "<subject>, <style> style"
        subjects = list(dict.fromkeys(subject for subject, _ in cells))
        styles = list(dict.fromkeys(style.removesuffix(" style") for _, style in cells))
        return (["diffuse", "explain", "styles", *subjects, "--model", first["model"], "--styles", ",".join(styles),
                 "--seed", first["seed"], "--steps", first["steps"], *mark_args(first)], None)
    if kind == "explain copies":
        return None, "drawn by diffuse copies --picture (or diffuse explain copies): its -n and --seed are in the report"
    return None, f"no command draws a picture of kind {kind!r}"


def sampling_args(p: dict) -> list:
    """The options of one GenerateRequest, every setting spelled out (so a changed default cannot
    change the image); a None guidance is left out (explain guidance gives its own scales)."""
    args = ["--negative-prompt", p["negative_prompt"]] if p.get("negative_prompt") else []
    args += ["--model", p["model"], "--seed", p["seed"], "--steps", p["steps"], "--sampler", p["sampler"],
             "--schedule", p["schedule"]]
    args += ["--guidance", p["guidance"]] if p["guidance"] is not None else []
    args += ["--eta", p["eta"]] if p.get("eta") is not None else []
    args += ["--width", p["width"], "--height", p["height"]]
    if p.get("variation_seed") is not None:
        args += ["--variation-seed", p["variation_seed"], "--variation-strength", p["variation_strength"]]
    return args + mark_args(p)


def mark_args(p: dict) -> list:
    """--no-watermark for an image made without the start-noise mark (or before it existed):
    the mark changes the start noise, so the command must leave it out too."""
    return [] if p.get("watermark") else ["--no-watermark"]


def input_note(p: dict) -> str:
    needs = f"{INPUT} stands for the input image, which this file does not hold"
    if p.get("init_image_sha256") and "outpaint" not in p:  # outpaint records its padded canvas's hash
        needs += f"; its pixels' sha256 starts {p['init_image_sha256'][:12]}"
    if p.get("mode") == "inpaint" and "outpaint" not in p:
        needs += f", and {MASK} for the mask"
    return needs


def model_note(params: dict) -> str | None:
    """Whether --model NAME finds the model that made the image: a bundled model's name does, when
    its weights are the ones recorded; any other name is the folder the model was in."""
    from .checkpoint import BUNDLED_MODELS, read_config
    first = (params.get("images") or [params])[0]
    name, sha256 = first.get("model"), first.get("model_sha256") or first.get("model_hash")
    if not name:
        return None
    if name in BUNDLED_MODELS:
        if sha256 is None or read_config(BUNDLED_MODELS[name])["weights_sha256"].startswith(sha256):
            return None
        return f"a model named {name!r} but not the bundled one made it: give its folder as --model"
    weights = f" (its weights' sha256 starts {sha256[:12]})" if sha256 else ""
    return f"--model {name} names the folder the model was in{weights}: give its path if it is elsewhere"


def format_report(r: dict) -> str:
    """The report as the lines `diffuse inspect` prints."""
    lines = [f"{r['file']}: {r['format']} {r['width']}x{r['height']}"]
    p = r["parameters"]
    if p is None:
        a1111 = r["a1111_parameters"]
        lines.append("  parameters   none by diffuse" + (f"; A1111 text: {a1111!r}" if a1111 is not None else ""))
    else:
        lines.append(f"  parameters   {summary(p)}" + (" (as signed in its content credentials)"
                                                      if r["parameters_from"] == "content credentials" else ""))
        c = r["recreate"]
        lines.append(f"  re-create    {c['command'] or 'no single command'}")
        if c["note"]:
            lines.append(f"               ({c['note']})")
    lines += credential_lines(r["credentials"])
    lines.append(f"  watermark    {r['watermark_note']}")
    return "\n".join(lines)


def summary(p: dict) -> str:
    if "picture" in p:
        shown = p.get("images", [])
        return f"a picture ({p['picture']}) of {len(shown)} generated image{'s' * (len(shown) != 1)}" if shown else \
            f"a picture ({p['picture']}) drawn by no model"
    return ", ".join(f"{k} {p[k]!r}" if k == "prompt" else f"{k} {p[k]}"
                     for k in ("prompt", "mode", "model", "seed", "steps", "sampler", "guidance") if k in p)


def credential_lines(c: dict | None) -> list[str]:
    if c is None:
        return ["  credentials  none (no C2PA manifest)"]
    if not c["valid"]:
        lines = ["  credentials  C2PA manifest, INVALID: the file changed after it was signed, or the manifest is damaged"]
        return lines + [f"               {problem}" for problem in c["problems"]]
    source = c["digital_source_type"] or "no digital source type"
    meaning = f" ({c['meaning']})" if c["meaning"] else ""
    lines = ["  credentials  C2PA manifest, signature valid: the file is unchanged since it was signed",
             f"               generator  {c['generator']}",
             f"               source     {source}{meaning}"]
    if c["model"]:
        lines.append(f"               model      {c['model']}" + (f", weights sha256 {c['model_sha256']}" if c["model_sha256"] else ""))
    trust = ("yes: the key is this computer's own diffuse key" if c["trusted"] else
             "no: no trust anchor here vouches for the key")
    lines.append(f"               signer     {c['signer']}")
    lines.append(f"               trusted    {trust}")
    lines.append(f"               ({c['proves']})")
    return lines
