"""Generation from Python: `Pipeline.load(path).generate(GenerateRequest(...))`.

`GenerateRequest` is the one description of a generation that the Python API, the CLI, the
HTTP server and the tests share. Every image carries its own seed and the parameters that made
it (PNG text metadata), so any image can be made again alone.
"""

import json
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .checkpoint import load_checkpoint
from .data import tensor_to_pil
from .errors import RequestError
from .guidance import CFGDenoiser
from .model import TextToImageModel
from .samplers import SAMPLERS, SeededNoise, Step, get_sampler
from .schedules import SCHEDULES, SIGMA_MAX, SIGMA_MIN, get_sigmas

MAX_IMAGES, MAX_STEPS = 64, 1000


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative_prompt: str = ""        # what guidance steers away from (replaces the empty prompt)
    n: int = 1                       # images; image k gets seed + k
    seed: int | None = None          # None: a random seed, recorded in every image
    steps: int = 20                  # sampler steps (Heun spends two evaluations per step)
    sampler: str = "dpmpp_2m"        # one of samplers.SAMPLERS
    guidance: float = 3.0            # classifier-free guidance scale; 1 = off, 0 = unconditional
    schedule: str = "karras"         # one of schedules.SCHEDULES
    eta: float | None = None         # noise of the ddim / euler_ancestral samplers (their default if None)
    width: int | None = None         # None: the model's training size
    height: int | None = None

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise RequestError("prompt must be a string")
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_IMAGES:
            raise RequestError(f"n must be an integer from 1 to {MAX_IMAGES}, got {self.n!r}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise RequestError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if self.sampler not in SAMPLERS:
            raise RequestError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.schedule not in SCHEDULES:
            raise RequestError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not isinstance(self.guidance, (int, float)) or not 0 <= self.guidance <= 100:
            raise RequestError(f"guidance must be a number from 0 to 100, got {self.guidance!r}")
        if self.eta is not None and not 0 <= self.eta <= 10:
            raise RequestError(f"eta must be from 0 to 10, got {self.eta!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63 - MAX_IMAGES):
            raise RequestError(f"seed must be a non-negative integer below 2^63, got {self.seed!r}")

    def with_seed(self) -> "GenerateRequest":
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2 ** 31))

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n)]


def check_size(model: TextToImageModel, width: int, height: int) -> None:
    """A convolutional UNet makes any size that its down-sampling divides; far beyond the
    training size it only repeats texture, so sizes are capped at 4x."""
    stride, size = model.unet_cfg.stride, model.image_size
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < stride or v > 4 * size or v % stride:
            raise RequestError(f"{name} {v!r} is not possible for this model: use a multiple of {stride} "
                               f"from {stride} to {4 * size} (trained at {size})")


class Pipeline:
    def __init__(self, model: TextToImageModel, model_hash: str = "", name: str = ""):
        self.model, self.model_hash, self.name = model.eval(), model_hash, name

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Pipeline":
        model, cfg = load_checkpoint(path, device)
        return cls(model, cfg["weights_sha256"], Path(path).name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample(self, request: GenerateRequest, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
        """Images as a tensor [n, 3, H, W] in [-1, 1]; request.seed must be set."""
        if request.seed is None:
            raise RequestError("sample() needs a seed; generate() picks one")
        w, h = request.width or self.model.image_size, request.height or self.model.image_size
        check_size(self.model, w, h)
        sigmas = get_sigmas(request.schedule, request.steps, SIGMA_MIN, SIGMA_MAX).to(self.device)
        noise = SeededNoise(request.seeds, (3, h, w), self.device)
        cond = self.model.encode([request.prompt] * request.n)
        uncond = self.model.encode([request.negative_prompt] * request.n)
        denoiser = CFGDenoiser(self.model, uncond, request.guidance)
        extra = {"eta": request.eta} if request.eta is not None and request.sampler in ("ddim", "euler_ancestral") else {}
        sampler = get_sampler(request.sampler)
        return sampler(denoiser, noise.initial(float(sigmas[0])), sigmas, cond, noise=noise, callback=callback, **extra)

    def generate(self, request: GenerateRequest, callback: Callable[[Step], None] | None = None) -> list[Image.Image]:
        """PIL images, each with its parameters in `image.info` (written by `save_png`)."""
        request = request.with_seed()
        x = self.sample(request, callback)
        images = []
        for k, seed in enumerate(request.seeds):
            img = tensor_to_pil(x[k])
            img.info.update(self.metadata(request, seed))
            images.append(img)
        return images

    def __call__(self, prompt: str, **kwargs) -> list[Image.Image]:
        """Keyword shortcut: pipe("a red circle", n=4, seed=1)."""
        return self.generate(GenerateRequest(prompt=prompt, **kwargs))

    def metadata(self, request: GenerateRequest, seed: int) -> dict[str, str]:
        params = {k: v for k, v in asdict(request).items() if k not in ("n", "seed")}
        params.update(seed=seed, width=request.width or self.model.image_size,
                      height=request.height or self.model.image_size, model=self.name,
                      model_hash=self.model_hash[:12])
        # "parameters" in the AUTOMATIC1111 layout that image viewers and tools already read.
        a1111 = (f"{request.prompt}\nNegative prompt: {request.negative_prompt}\nSteps: {request.steps}, "
                 f"Sampler: {request.sampler}, CFG scale: {request.guidance}, Seed: {seed}, "
                 f"Size: {params['width']}x{params['height']}, Model hash: {params['model_hash']}, Model: {self.name}")
        return {"parameters": a1111, "diffuse": json.dumps(params)}


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG with the image's text metadata (PIL drops `info` unless told)."""
    meta = PngInfo()
    for k, v in image.info.items():
        if isinstance(v, str):
            meta.add_text(k, v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, pnginfo=meta)
    return path


def image_grid(images: list[Image.Image], cols: int | None = None) -> Image.Image:
    cols = cols or min(len(images), max(1, round(len(images) ** 0.5 + 0.49)))
    rows = -(-len(images) // cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for k, img in enumerate(images):
        grid.paste(img, ((k % cols) * w, (k // cols) * h))
    return grid


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"
