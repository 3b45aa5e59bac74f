"""Editing as sigma slicing and denoiser wrappers, so it composes with every sampler.

- Image-to-image (SDEdit, Meng et al. 2022): start at the sigma that `strength` selects, from the
  input plus noise of that level, and run the rest of the schedule.
- Inpainting: a denoiser wrapper that, at every evaluation, puts the known region back at the
  current noise level (init + sigma * n, n fresh noise from the image's own generator) before
  denoising, and returns the known region unchanged. Soft mask values blend the two with the
  noise kept at std sigma.
- Outpainting: padding plus inpainting of the padded border.
- Seed variations: the starting noise is a spherical blend of two seeds' noises.

A request's image, mask and strength enter the pipeline once, as an EditPlan (`plan_edit`): the
schedule's tail, the start, the denoiser wrapper and the final composite; its PNG parameters
come from `edit_metadata`.
"""


import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .data import pil_to_tensor
from .errors import DiffuseError, RequestError

VARY_STRENGTH = 0.4  # variations of an image: low-strength img2img keeps its composition, changes details


def check_strength(strength: float) -> float:
    if not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise RequestError(f"strength must be a number from 0 to 1, got {strength!r}")
    return float(strength)


def img2img_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The tail of a schedule that `strength` selects: round(strength * steps) steps run, ending
    at 0. Strength 1 is the whole schedule, strength 0 is just [0] (no step: the input returns)."""
    steps = len(sigmas) - 1
    return sigmas[steps - steps_run(check_strength(strength), steps):]


def noised_start(init: torch.Tensor | None, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x at the first sigma: init + sigma * noise (SDEdit), or pure noise when there is no init
    image or the schedule starts at its very top (strength 1 equals text-to-image)."""
    return noise * sigmas[0] if init is None else init + noise * sigmas[0]


class InpaintDenoiser:
    """D'(x, sigma) for the repaint region `mask` (1 = repaint, soft values blend):
    x' = blend_renoised(x, init, mask, sigma, n);  D' = mask D(x', sigma) + (1 - mask) init,
    with fresh noise n = noise() at every evaluation: the replacement method of Song et al. 2021
    (appendix I.2) and RePaint (Lugmayr et al. 2022) without resampling. Fresh noise measured
    clearly better than re-using the starting noise, whose error never averages out, and better
    than one noise per step (benchmarks/inpaint_methods.py; RESULTS, "Inpainting method")."""

    def __init__(self, denoiser, init: torch.Tensor, mask: torch.Tensor, noise):
        self.denoiser, self.init, self.mask, self.noise = denoiser, init, mask, noise

    def __call__(self, x, sigma, cond=None):
        s = sigma.reshape(-1, *[1] * (x.ndim - 1))
        d = self.denoiser(blend_renoised(x, self.init, self.mask, s, self.noise()), sigma, cond)
        return self.mask * d + (1 - self.mask) * self.init


def blend_renoised(x: torch.Tensor, init: torch.Tensor, mask: torch.Tensor, sigma: torch.Tensor,
                   n: torch.Tensor) -> torch.Tensor:
    """m x + (1 - m) init + sigma sqrt(1 - m^2) n: the sample where m = 1, the known image
    re-noised to sigma where m = 0. Blending x with init + sigma n instead would leave noise of
    std sigma sqrt(m^2 + (1-m)^2) on a soft edge (0.71 sigma at m = 0.5), less than the denoiser
    expects; with the independent n scaled by sqrt(1 - m^2) the variance is m^2 sigma^2 +
    (1 - m^2) sigma^2 = sigma^2 at every mask value."""
    return mask * x + (1 - mask) * init + sigma * (1 - mask ** 2).sqrt() * n


def composite(x: torch.Tensor, init: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The known region exactly as given, to the last bit (1 = generated)."""
    return torch.where(mask > 0, mask * x + (1 - mask) * init, init)


@dataclass(frozen=True)
class EditPlan:
    """What an image and a mask change in one run of a sampler, decided once (`plan_edit`): the
    tail of the schedule that runs, where it starts, the denoiser wrapper and the last composite.
    Text-to-image is the plan without an image: the whole schedule from pure noise, as it is."""
    sigmas: torch.Tensor
    init: torch.Tensor | None = None     # [n, 3, H, W] in [-1, 1]
    mask: torch.Tensor | None = None     # [n, 3, H, W] in [0, 1], 1 = repaint
    strength: float = 1.0

    @property
    def runs(self) -> bool:
        """Whether any step runs: strength 0 (a one-sigma schedule) and an empty mask return the image."""
        return len(self.sigmas) > 1 and (self.mask is None or bool(self.mask.any()))

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        return noised_start(self.init if self.strength < 1 else None, self.sigmas, noise)

    def denoiser(self, denoiser, noise):
        """`denoiser` for this plan; `noise()` draws each evaluation's fresh noise for inpainting."""
        return denoiser if self.mask is None else InpaintDenoiser(denoiser, self.init, self.mask, noise)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's result as the edit returns it: the known region put back exactly."""
        return x if self.mask is None else composite(x, self.init, self.mask)


def plan_edit(sigmas: torch.Tensor, n: int, width: int, height: int, init_image: Image.Image | None = None,
              mask_image: Image.Image | None = None, strength: float = 1.0) -> EditPlan:
    """The EditPlan of n images of width x height over the schedule `sigmas`: image-to-image when
    there is an init image (strength picks the tail), inpainting when there is also a mask (of the
    image's size; resized with it to the output)."""
    if init_image is None:
        return EditPlan(sigmas)
    init = image_tensor(init_image, width, height).to(sigmas.device).expand(n, -1, -1, -1)
    mask = None
    if mask_image is not None:
        mask = mask_tensor(mask_image, init_image.size).to(sigmas.device)
        if mask.shape[1:] != (height, width):
            mask = F.interpolate(mask[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        if mask.max() == 0:
            warnings.warn("the mask is empty (all black): nothing to repaint, the image is returned as it is",
                          stacklevel=3)
        mask = mask.expand(n, 3, height, width)
    return EditPlan(img2img_sigmas(sigmas, strength), init, mask, strength)


def edit_metadata(init_image: Image.Image | None, mask_image: Image.Image | None, strength: float,
                  steps: int) -> dict:
    """What an image's parameters record of its edit: strength, the steps that ran, the hashes
    of the image and the mask (the pixels themselves are not stored)."""
    if init_image is None:
        return {}
    params = {"strength": strength, "steps_run": steps_run(strength, steps),
              "init_image_sha256": image_sha256(init_image)}
    if mask_image is not None:
        params["mask_sha256"] = image_sha256(mask_image)
    return params


def steps_run(strength: float, steps: int) -> int:
    """Sampler steps that really run: image-to-image runs round(strength * steps) of them (img2img_sigmas)."""
    return round(strength * steps)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two Gaussian noises per image, so the blend keeps the norm a
    Gaussian sample has (a straight lerp would shrink it toward the middle)."""
    if t == 0:
        return a
    af, bf = a.flatten(1), b.flatten(1)
    cos = (F.normalize(af, dim=1) * F.normalize(bf, dim=1)).sum(1).clamp(-1, 1)
    omega = torch.acos(cos)[:, None]
    so = torch.sin(omega)
    out = torch.where(so.abs() < 1e-6, (1 - t) * af + t * bf,
                      (torch.sin((1 - t) * omega) * af + torch.sin(t * omega) * bf) / so.clamp(min=1e-12))
    return out.reshape(a.shape)


# ----------------------------------------------------------------------------- images and masks

def image_tensor(img: Image.Image, width: int, height: int) -> torch.Tensor:
    """An RGB image as [3, H, W] in [-1, 1], resized (Lanczos) when its size differs."""
    img = img.convert("RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.LANCZOS)
    return pil_to_tensor(img)


def open_image(source, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """An image from a path or a binary file object, in a mode the pipeline reads (RGB, RGBA, L,
    LA); unreadable input is a DiffuseError naming `what`. `max_pixels` refuses a huge image from
    its header, before its pixels are decoded (an upload cannot make the server allocate gigabytes)."""
    name = f"{what} {str(source)!r}" if isinstance(source, (str, Path)) else what
    try:
        img = Image.open(source)
    except FileNotFoundError:
        raise DiffuseError(f"{name} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise DiffuseError(f"{name} is not a readable image ({type(e).__name__})") from None
    with img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise RequestError(f"{name} is {img.width}x{img.height}: at most {max_pixels} pixels are accepted")
        try:
            img.load()
        except (OSError, ValueError) as e:
            raise DiffuseError(f"{name} is not a readable image ({type(e).__name__})") from None
        return img.copy() if img.mode in ("RGB", "RGBA", "L", "LA") else img.convert("RGBA" if "A" in img.mode else "RGB")


def has_transparency(img: Image.Image) -> bool:
    """Whether an alpha channel marks any pixel as (partly) transparent: such pixels are the area to
    repaint, as image editors export masks and as OpenAI's edits endpoint reads an image."""
    return img.mode in ("RGBA", "LA") and img.getextrema()[-1][0] < 255


def check_mask_size(mask: Image.Image, size: tuple[int, int]) -> None:
    if mask.size != size:
        raise RequestError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}: "
                           f"give a mask of the image's size")


def mask_tensor(mask: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A mask of any mode as [1, H, W] in [0, 1], white = repaint; an alpha channel, when the
    mask has one, marks transparent pixels for repainting as editors export them."""
    check_mask_size(mask, size)
    if has_transparency(mask):
        arr = 255 - np.asarray(mask.getchannel("A"), dtype=np.float32)
    else:
        arr = np.asarray(mask.convert("L"), dtype=np.float32)
    return torch.from_numpy(arr / 255.0)[None]


def outpaint_canvas(img: Image.Image, left: int, top: int, right: int, bottom: int) -> tuple[Image.Image, Image.Image]:
    """The image on a larger canvas (border filled by stretching its edge pixels, a better start
    for partial-strength fills than a flat colour) and the mask of the new border."""
    if min(left, top, right, bottom) < 0 or left + top + right + bottom == 0:
        raise RequestError("outpainting needs non-negative padding, at least one side above 0")
    w, h = img.size
    arr = np.pad(np.asarray(img.convert("RGB")), ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(arr.shape[:2], 255, dtype=np.uint8)
    mask[top: top + h, left: left + w] = 0
    return Image.fromarray(arr), Image.fromarray(mask, "L")


def image_sha256(img: Image.Image) -> str:
    import hashlib
    h = hashlib.sha256(f"{img.mode}{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()
