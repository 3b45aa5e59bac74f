"""Pictures of the process, for people learning how diffusion works.

- the forward process: an image under growing noise, each labelled with sigma and SNR;
- the reverse process: at every step the noisy image x_t and the model's current guess of the
  clean image (a two-row strip and an animated GIF);
- the effect of the guidance scale and of a more specific prompt, at the same seeds;
- training curves from a run's log.jsonl.
"""

import json
import math
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .data import tensor_to_pil
from .errors import DiffuseError
from .pipeline import GenerateRequest, Pipeline, check_seed

LABEL_H = 24  # pixels of caption under each tile
DEFAULT_NOISE_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


def forward_process(y: torch.Tensor, sigmas, seed: int = 0) -> torch.Tensor:
    """x_sigma = y + sigma * n for each sigma with one fixed noise n (EDM eq. 1 / the VE forward
    process), so the strip shows the same static growing: [len(sigmas), C, H, W], unclamped."""
    n = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return torch.stack([y + s * n for s in sigmas])


def snr(y: torch.Tensor, sigma: float) -> float:
    """Signal-to-noise ratio: the image's variance over the noise's, var(y) / sigma^2."""
    return math.inf if sigma == 0 else y.var().item() / sigma ** 2


def display(x: torch.Tensor, sigma: float, sigma_data: float = 0.5) -> torch.Tensor:
    """x_sigma scaled back to the data's range (EDM's c_in times sigma_data), so a very noisy
    image shows as static rather than as saturated colour; sigma 0 shows the image itself."""
    return x * sigma_data / math.sqrt(sigma ** 2 + sigma_data ** 2)


def labelled_strip(rows: list[list[torch.Tensor]], labels: list[list[str]], scale: int = 3) -> Image.Image:
    """Tiles [-1, 1] in rows, each scaled up `scale` times with a caption under it."""
    tiles = [[tensor_to_pil(t).resize((t.shape[-1] * scale, t.shape[-2] * scale), Image.NEAREST) for t in row]
             for row in rows]
    w, h = tiles[0][0].size
    cols = max(len(r) for r in tiles)
    out = Image.new("RGB", (cols * w, len(tiles) * (h + LABEL_H)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            x, y = c * w, r * (h + LABEL_H)
            out.paste(tile, (x, y))
            for k, line in enumerate(labels[r][c].split("\n")[:2]):
                draw.text((x + 2, y + h + 1 + 11 * k), line, fill=(0, 0, 0))
    return out


def fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.3g}"


def noise_strip(image: Image.Image, sigmas=DEFAULT_NOISE_SIGMAS, size: int = 64, seed: int = 0) -> Image.Image:
    from .editing import image_sha256, image_tensor
    if any(s < 0 for s in sigmas):
        raise DiffuseError("noise levels must be >= 0")
    check_seed(seed)
    y = image_tensor(image, size, size)
    xs = forward_process(y, sigmas, seed)
    labels = [f"sigma {fmt(s)}\nSNR {fmt(snr(y, s))}" for s in sigmas]
    strip = labelled_strip([[display(x, s) for x, s in zip(xs, sigmas)]], [labels], scale=max(1, 128 // size))
    # No model makes this picture: what does is the noise's seed, the levels and the input image.
    strip.info["diffuse"] = json.dumps({"picture": "explain noise", "seed": seed, "sigmas": [float(s) for s in sigmas],
                                        "size": size, "init_image_sha256": image_sha256(image)})
    return strip


def denoise_frames(pipe: Pipeline, request: GenerateRequest) -> tuple[list, list, list[float]]:
    """x_t, the denoised guess and sigma at every step of one image's sampling run."""
    xs, guesses, sigmas = [], [], []

    def keep(step):
        xs.append(step.x[0].clone())
        guesses.append(step.denoised[0].clone())
        sigmas.append(step.sigma)

    final = pipe.sample(request.with_seed(), callback=keep)[0]
    xs.append(final)
    guesses.append(final)
    sigmas.append(0.0)
    return xs, guesses, sigmas


def denoise_strip(pipe: Pipeline, request: GenerateRequest) -> tuple[Image.Image, list[Image.Image]]:
    """A two-row strip (top: x_t, bottom: the guess of the clean image) and GIF frames, one per
    step, each showing both side by side; the last column / frame is the finished image."""
    request = request.with_seed()
    xs, guesses, sigmas = denoise_frames(pipe, request)
    shown = [display(x, s, pipe.model.denoiser.sigma_data) for x, s in zip(xs, sigmas)]
    top = [f"step {i}\nsigma {fmt(s)}" for i, s in enumerate(sigmas[:-1])] + ["final", ]
    strip = labelled_strip([shown, guesses], [top, ["guess"] * (len(xs) - 1) + ["x0"]])
    strip.info.update(pipe.composite_metadata([(request, request.seed)], picture="explain denoise"))
    frames = [labelled_strip([[x, g]], [[f"x_t, sigma {fmt(s)}", "guess of x0"]], scale=4)
              for x, g, s in zip(shown[:-1], guesses[:-1], sigmas[:-1])]
    return strip, frames


def guidance_row(pipe: Pipeline, request: GenerateRequest, scales) -> Image.Image:
    from dataclasses import replace
    request = request.with_seed()  # one seed for every scale
    requests = [replace(request, guidance=float(g), n=1) for g in scales]
    row = labelled_strip([[pipe.sample(r)[0] for r in requests]], [[f"guidance {g:g}" for g in scales]])
    row.info.update(pipe.composite_metadata([(r, r.seed) for r in requests], picture="explain guidance"))
    return row


def prompt_grid(pipe: Pipeline, prompts: list[str], n: int, seed: int, **settings) -> Image.Image:
    """Rows of n images per prompt at the same seeds; `settings` (steps, sampler, schedule) over
    the model's own defaults (pipe.request)."""
    requests = [pipe.request(p, n=n, seed=seed, **settings) for p in prompts]
    labels = [["\n".join(textwrap.wrap(p, 15)[:2]) if k == 0 else f"seed {seed + k}" for k in range(n)] for p in prompts]
    grid = labelled_strip([list(pipe.sample(r)) for r in requests], labels)
    grid.info.update(pipe.composite_metadata([(r, s) for r in requests for s in r.seeds], picture="explain prompt"))
    return grid


def model_styles(pipe: Pipeline) -> list[str]:
    """The style words a model was trained with (an emoji model records them), else none."""
    return list(pipe.config.get("data", {}).get("emoji", {}).get("styles", []))


def style_grid(pipe: Pipeline, subjects: list[str], styles: list[str], seed: int, **settings) -> Image.Image:
    """One row per style, one column per subject: "<subject>, <style> style" (a caption template the
    emoji data trains on) at one seed, so a column shows the same start noise drawn in each style."""
    rows = [[pipe.request(f"{subject}, {style} style", n=1, seed=seed, **settings) for subject in subjects]
            for style in styles]
    labels = [[f"{style}\n{textwrap.shorten(subject, 15, placeholder='..')}" for subject in subjects] for style in styles]
    images = pipe.sample_batch([r for row in rows for r in row])  # one batch: the same images, fewer passes
    grid = labelled_strip([list(images[i * len(subjects):(i + 1) * len(subjects)]) for i in range(len(styles))], labels)
    grid.info.update(pipe.composite_metadata([(r, seed) for row in rows for r in row], picture="explain styles"))
    return grid


# ----------------------------------------------------------------------------- training curves

def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise DiffuseError(f"no training log at {path} (diffuse train writes log.jsonl into its --out folder)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DiffuseError(f"{path}:{n} is not a JSON line") from None
    rows = [r for r in rows if "step" in r and "loss" in r]
    if not rows:
        raise DiffuseError(f"{path} holds no training steps yet")
    return rows


def smooth(values: list[float], halflife: float = 10) -> list[float]:
    """Exponential moving average with bias correction (as Adam's), so the start is not pulled to 0."""
    beta, avg, out = 0.5 ** (1 / halflife), 0.0, []
    for k, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** k))
    return out


def plot_run(run_dir: str | Path, out: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_log(run_dir)
    steps = [r["step"] for r in rows]
    panels = [("loss", "EDM loss")] + ([("grad_norm", "gradient norm")] if "grad_norm" in rows[-1] else [])
    panels += [("images_per_s", "images / s")] if "images_per_s" in rows[0] else []
    evals = [k for k in rows[-1] if k.startswith("eval_")]
    panels += [(k, k[5:].replace("_", " ")) for k in evals]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], panels):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, color="0.75", lw=1, label="logged")
        ax.plot(xs, smooth(ys), color="C0", lw=2, label="smoothed")
        if key in ("loss", "grad_norm"):
            ax.set_yscale("log")
            ax.legend()
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"{Path(run_dir).name}: {steps[-1]} steps, {rows[-1].get('images', '?')} images")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
