"""Generation from Python: `Pipeline.load(path).generate(GenerateRequest(...))`.

`GenerateRequest` is the one description of a generation that the Python API, the CLI, the
HTTP server and the tests share. Every image carries its own seed and the parameters that made
it (PNG text metadata), so any image can be made again alone.
"""

import json
import re
import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .checkpoint import load_checkpoint, model_dir, model_name
from .data import tensor_to_pil
from .editing import EditPlan, check_mask_size, check_strength, edit_metadata, plan_edit, slerp, steps_run
from .errors import RequestError
from .guidance import CFGDenoiser, GuidanceInput
from .model import TextToImageModel
from .samplers import SAMPLERS, STOCHASTIC, SeededNoise, Step, get_sampler
from .schedules import SCHEDULES, SIGMA_MAX, SIGMA_MIN, get_sigmas
from .watermark import GRID as MARK_GRID, VERSION as MARK_VERSION, codeword, mark_noise, nonce_of


MAX_IMAGES, MAX_STEPS, MAX_GUIDANCE = 64, 1000, 100
# The sampler a request gets when it names none. Inpainting re-noises the known region with fresh
# noise at every evaluation, which a multistep solver extrapolates from: at 20 steps with the exact
# denoiser Euler ancestral fills 95% of holes right, DPM-Solver++(2M) 85% (benchmarks/RESULTS.md,
# "Inpainting method ... and its sampler"), so inpainting has its own default.
DEFAULT_SAMPLER, INPAINT_SAMPLER = "dpmpp_2m", "euler_ancestral"
# How AUTOMATIC1111 names our samplers and schedules in its infotext ("Sampler: DPM++ 2M, Schedule
# type: Karras", its processing.create_infotext and sd_schedulers); it has no VP schedule.
A1111_SAMPLERS = {"euler": "Euler", "heun": "Heun", "dpmpp_2m": "DPM++ 2M", "ddim": "DDIM", "euler_ancestral": "Euler a",
                  "consistency": "LCM"}  # A1111 names multistep consistency sampling after latent consistency models
A1111_SCHEDULES = {"karras": "Karras", "exponential": "Exponential", "vp": "VP", "karras0": "Karras to zero",
                    "karras1": "Karras to 1", "cm": "CM levels"}
# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed: seed s and s + 2^32 draw
# the same noise, so larger seeds would repeat smaller ones' images. 32 bits, as A1111's seeds.
MAX_SEED = 2 ** 32 - 1


def check_seed(seed, span: int = 1, what: str = "seed") -> int:
    """A seed from 0 to MAX_SEED whose `span` images (seed + k, k < span) all stay in range, or a
    RequestError naming the range (beyond 2^32 - 1 a seed would alias a smaller one)."""
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - (span - 1):
        limit = "2^32 - 1" if span == 1 else f"2^32 - {span} (its {span} images use seed + k)"
        raise RequestError(f"{what} must be an integer from 0 to {limit}, got {seed!r}")
    return seed


# What the requests of one `Pipeline.sample_batch` must share (the rest is per image).
BATCH_SETTINGS = ("steps", "sampler", "guidance", "schedule", "eta", "width", "height")


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative_prompt: str = ""        # what guidance steers away from (replaces the empty prompt)
    n: int = 1                       # images; image k gets seed + k
    seed: int | None = None          # 0 to 2^32 - 1 (image k: seed + k); None: a random one, recorded in every image
    steps: int = 20                  # sampler steps (Heun spends two evaluations per step)
    sampler: str | None = None       # one of samplers.SAMPLERS; None: DEFAULT_SAMPLER, INPAINT_SAMPLER with a mask
    guidance: float = 2.0            # classifier-free guidance scale; 1 = off, 0 = unconditional (2: see
                                     # benchmarks/RESULTS.md, steps and guidance against quality)
    schedule: str = "karras"         # one of schedules.SCHEDULES
    eta: float | None = None         # noise of the ddim / euler_ancestral samplers (their default if None)
    width: int | None = None         # None: the init image's size, else the model's training size
    height: int | None = None
    init_image: Image.Image | None = None  # image-to-image / inpainting input
    strength: float | None = None    # how much of the schedule runs on init_image (None: 0.8, or 1 with a mask)
    mask: Image.Image | None = None  # inpainting: white = repaint, black = keep (any mode, soft edges)
    variation_seed: int | None = None   # seed variations: blend this seed's noise into the seed's (0 to 2^32 - 1)
    variation_strength: float = 0.0     # 0 = the seed's image, 1 = the variation seed's

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise RequestError("prompt must be a string")
        if self.sampler is None:  # resolved once, so every reader of the request sees the sampler that runs
            object.__setattr__(self, "sampler", DEFAULT_SAMPLER if self.mask is None else INPAINT_SAMPLER)
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_IMAGES:
            raise RequestError(f"n must be an integer from 1 to {MAX_IMAGES}, got {self.n!r}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise RequestError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if self.sampler not in SAMPLERS:
            raise RequestError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.schedule not in SCHEDULES:
            raise RequestError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not isinstance(self.guidance, (int, float)) or not 0 <= self.guidance <= MAX_GUIDANCE:
            raise RequestError(f"guidance must be a number from 0 to {MAX_GUIDANCE}, got {self.guidance!r}")
        if self.eta is not None and not 0 <= self.eta <= 10:
            raise RequestError(f"eta must be from 0 to 10, got {self.eta!r}")
        if self.eta is not None and self.sampler not in STOCHASTIC:  # it would be ignored without a word
            raise RequestError(f"eta is the noise of {' and '.join(sorted(STOCHASTIC))}; {self.sampler} adds none: "
                               f"leave eta out or choose one of those")
        if self.seed is not None:
            check_seed(self.seed, self.n)

        for name in ("init_image", "mask"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Image.Image):
                raise RequestError(f"{name} must be a PIL image")
        if self.mask is not None and self.init_image is None:
            raise RequestError("a mask needs an init image to inpaint")
        if self.strength is not None:
            check_strength(self.strength)
        if not isinstance(self.variation_strength, (int, float)) or not 0 <= self.variation_strength <= 1:
            raise RequestError(f"variation strength must be from 0 to 1, got {self.variation_strength!r}")
        if self.variation_seed is not None:
            check_seed(self.variation_seed, self.n, "variation seed")

    @property
    def mode(self) -> str:
        return "txt2img" if self.init_image is None else "inpaint" if self.mask is not None else "img2img"

    @property
    def effective_strength(self) -> float:
        if self.init_image is None:
            return 1.0
        return self.strength if self.strength is not None else (1.0 if self.mask is not None else 0.8)

    def size(self, model_size: int) -> tuple[int, int]:
        if self.init_image is not None:
            return self.width or self.init_image.width, self.height or self.init_image.height
        return self.width or model_size, self.height or model_size

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


def sampling_defaults(config: dict) -> dict:
    """The settings a request gets from a model where it names none: a distilled student's own
    steps, sampler and schedule (distill.py); nothing for any other model (GenerateRequest's)."""
    student = config.get("distilled")
    if not student:
        return {}
    return {"steps": student["steps"], "sampler": student["sampler"], "schedule": student["schedule"]}


def check_student_request(name: str, student: dict, request: GenerateRequest) -> None:
    """A distilled student samples only as it was trained: its steps and schedule (any, for a
    consistency model) and sampler, guidance against the empty prompt at a scale in its range. Anything else
    is a RequestError that says what to ask for: its teacher samples everything else."""
    asked = (request.steps, request.sampler, request.schedule)
    own = (student["steps"], student["sampler"], student["schedule"])
    if student.get("any_steps"):  # a consistency model maps every level to its clean image: any steps, any levels
        if asked[1] != own[1]:
            raise RequestError(f"{name} is a consistency model: it samples in any number of steps on any schedule "
                               f"with the {own[1]} sampler, not {asked[1]}: leave the sampler out, or use its "
                               f"teacher {student['teacher']!r}")
    elif asked != own:
        raise RequestError(f"{name} is distilled to sample in {own[0]} {own[1]} steps on the {own[2]} schedule, not "
                           f"{asked[0]} {asked[1]} steps on {asked[2]}: leave those settings out, or use its teacher "
                           f"{student['teacher']!r}")
    if request.negative_prompt:
        raise RequestError(f"{name} is distilled with guidance against the empty prompt: it takes no negative prompt "
                           f"(its teacher {student['teacher']!r} does)")
    lo, hi = student["guidance_range"]
    if not lo <= request.guidance <= hi:
        raise RequestError(f"{name} learned guidance from {lo:g} to {hi:g}, not {request.guidance:g}")


class Pipeline:
    def __init__(self, model: TextToImageModel, model_hash: str = "", name: str = "", config: dict | None = None,
                 watermark: bool = True):
        self.model, self.model_hash, self.name = model.eval(), model_hash, name
        self.config = config or {}  # the checkpoint's config.json (data summary, training figures)
        self.watermark = watermark  # mark the start noise (watermark.py) of every image this makes
        self.student = self.config.get("distilled")  # a distilled student's record (distill.py), or None
        self.defaults = sampling_defaults(self.config)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", watermark: bool = True) -> "Pipeline":
        """The checkpoint in `path` (a directory, or a bundled model's name: shapes, emoji, shapes-fast), or the
        bundled shapes model when path is None; `watermark`: mark the start noise (watermark.py)."""
        path = model_dir(path)
        model, cfg = load_checkpoint(path, device)
        name = model_name(path)
        return cls(model, cfg["weights_sha256"], name, cfg, watermark)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check(self, request: GenerateRequest) -> None:
        """Raise the RequestError that sample() would, before any work: the server answers 400
        instead of queueing a job that must fail."""
        check_size(self.model, *request.size(self.model.image_size))
        if request.mask is not None:
            check_mask_size(request.mask, request.init_image.size)
        if self.student:
            check_student_request(self.name, self.student, request)
        elif request.sampler == "consistency":  # re-noising a denoiser's mean loses variance at every step
            raise RequestError(f"the consistency sampler is for consistency models (diffuse distill --method "
                               f"consistency); {self.name or 'this model'} is a denoiser: use another sampler")

    @torch.no_grad()
    def sample(self, request: GenerateRequest, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
        """Images as a tensor [n, 3, H, W] in [-1, 1]; request.seed must be set."""
        if request.seed is None:
            raise RequestError("sample() needs a seed; generate() picks one")
        self.check(request)
        w, h = request.size(self.model.image_size)
        sigmas = get_sigmas(request.schedule, request.steps, SIGMA_MIN, SIGMA_MAX).to(self.device)
        plan = plan_edit(sigmas, request.n, w, h, request.init_image, request.mask, request.effective_strength)
        if not plan.runs:  # strength 0 or an empty mask: the image as it was given
            return plan.init.clone()
        noise = SeededNoise(request.seeds, (3, h, w), self.device)
        start = self.start_noise(noise(), request.seeds)
        if request.variation_seed is not None and request.variation_strength > 0:
            seeds = [request.variation_seed + k for k in range(request.n)]
            other = SeededNoise(seeds, (3, h, w), self.device)
            start = slerp(start, self.start_noise(other(), seeds), request.variation_strength)
        x = self._reverse(request, plan, plan.start(start), noise, [request.prompt] * request.n,
                          [request.negative_prompt] * request.n, callback)
        return plan.finish(x)

    def marks(self, width: int, height: int) -> bool:
        """Whether images of this size get the start-noise watermark (its grid must divide them)."""
        return self.watermark and width % MARK_GRID == 0 and height % MARK_GRID == 0

    def start_noise(self, z: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """The first noise draw of images with these seeds, watermarked (watermark.py): each
        image's block means take the signs of the codeword of its seed's nonce. Still N(0, I)."""
        if not self.marks(z.shape[-1], z.shape[-2]):
            return z
        model_hash = self.model_hash or "0" * 64
        code = torch.stack([codeword(model_hash, nonce_of(s)) for s in seeds]).to(z.device, z.dtype)
        return mark_noise(z, code)

    def _reverse(self, settings: GenerateRequest, plan: EditPlan, x: torch.Tensor, noise: SeededNoise,
                 prompts: list[str], negative_prompts: list[str],
                 callback: Callable[[Step], None] | None = None) -> torch.Tensor:
        """The reverse process that sample() and sample_batch() share: guidance on the model (one
        prompt and negative prompt per image of x), wrapped as the edit `plan` says (for
        inpainting), run by the settings' sampler over the plan's sigmas from x."""
        if self.student:  # guidance is the student's input: one pass (Meng et al. 2023)
            denoiser = GuidanceInput(self.model, settings.guidance)
        else:
            denoiser = CFGDenoiser(self.model, self.model.encode(negative_prompts), settings.guidance)
        denoiser = plan.denoiser(denoiser, noise)
        extra = {"eta": settings.eta} if settings.eta is not None and settings.sampler in STOCHASTIC else {}
        return get_sampler(settings.sampler)(denoiser, x, plan.sigmas, self.model.encode(prompts), noise=noise,
                                             callback=callback, **extra)

    @torch.no_grad()
    def sample_batch(self, requests: list[GenerateRequest],
                     callback: Callable[[Step], None] | None = None) -> torch.Tensor:
        """Text-to-image for several requests in one batch of network passes: [sum of n, 3, H, W]
        in request order. Each image depends only on its own prompt and seed (SeededNoise), so
        this gives what sampling the requests one by one gives, in fewer and larger passes (the
        evaluator samples its 108 prompts in 4 batches instead of 108). The requests
        may differ in prompt, negative prompt, n and seed; every other setting must agree."""
        if not requests:
            raise RequestError("sample_batch() needs at least one request")
        first = requests[0]
        for r in requests:
            if r.seed is None:
                raise RequestError("sample_batch() needs a seed in every request")
            if r.init_image is not None or (r.variation_seed is not None and r.variation_strength > 0):
                raise RequestError("sample_batch() makes text-to-image only: sample() the others one by one")
            if any(getattr(r, k) != getattr(first, k) for k in BATCH_SETTINGS):
                raise RequestError(f"requests in one batch must agree on {', '.join(BATCH_SETTINGS)}")
        self.check(first)
        w, h = first.size(self.model.image_size)
        sigmas = get_sigmas(first.schedule, first.steps, SIGMA_MIN, SIGMA_MAX).to(self.device)
        seeds = [s for r in requests for s in r.seeds]
        noise = SeededNoise(seeds, (3, h, w), self.device)
        plan = EditPlan(sigmas)  # text-to-image: the whole schedule from pure noise
        return self._reverse(first, plan, plan.start(self.start_noise(noise(), seeds)), noise,
                             [r.prompt for r in requests for _ in range(r.n)],
                             [r.negative_prompt for r in requests for _ in range(r.n)], callback)

    def generate(self, request: GenerateRequest, callback: Callable[[Step], None] | None = None) -> list[Image.Image]:
        """PIL images, each with its parameters in `image.info` (written by export.py)."""
        request = request.with_seed()
        return self.to_images(request, self.sample(request, callback))

    def to_images(self, request: GenerateRequest, x: torch.Tensor) -> list[Image.Image]:
        """The request's sampled tensor [n, 3, H, W] as PIL images with their parameters."""
        images = []
        for k, seed in enumerate(request.seeds):
            img = tensor_to_pil(x[k])
            img.info.update(self.metadata(request, seed))
            images.append(img)
        return images

    def request(self, prompt: str, **kwargs) -> GenerateRequest:
        """A request with this model's defaults (a distilled student's steps, sampler, schedule)
        where kwargs name none."""
        return GenerateRequest(prompt=prompt, **{**self.defaults, **kwargs})

    def __call__(self, prompt: str, **kwargs) -> list[Image.Image]:
        """Keyword shortcut: pipe("a red circle", n=4, seed=1), with the model's defaults."""
        return self.generate(self.request(prompt, **kwargs))

    def metadata(self, request: GenerateRequest, seed: int) -> dict[str, str]:
        w, h = request.size(self.model.image_size)
        params = {f.name: getattr(request, f.name) for f in fields(request)
                  if f.name not in ("n", "seed", "init_image", "mask", "width", "height", "strength")}
        params.update(seed=seed, width=w, height=h, mode=request.mode, model=self.name,
                      model_hash=self.model_hash[:12], model_sha256=self.model_hash)
        if self.marks(w, h):
            params["watermark"] = MARK_VERSION
        if request.variation_seed is not None:  # image k blends in variation seed + k, as its seed is seed + k
            params["variation_seed"] = request.variation_seed + seed - request.seed
        params.update(edit_metadata(request.init_image, request.mask, request.effective_strength, request.steps))
        # "parameters" in the AUTOMATIC1111 layout that image viewers and tools already read, in its words.
        negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
        sampler = A1111_SAMPLERS.get(request.sampler, request.sampler)
        schedule = A1111_SCHEDULES.get(request.schedule, request.schedule)
        a1111 = (f"{request.prompt}{negative}\nSteps: {request.steps}, Sampler: {sampler}, Schedule type: {schedule}, "
                 f"CFG scale: {request.guidance}, Seed: {seed}, Size: {w}x{h}, Model hash: {params['model_hash']}, "
                 f"Model: {self.name}")
        if request.eta is not None:
            a1111 += f", {'Eta DDIM' if request.sampler == 'ddim' else 'Eta'}: {request.eta}"
        if request.init_image is not None:
            a1111 += f", Denoising strength: {request.effective_strength}"
        if request.variation_seed is not None:
            a1111 += f", Variation seed: {params['variation_seed']}, Variation seed strength: {request.variation_strength}"
        return {"parameters": a1111, "diffuse": json.dumps(params)}

    def composite_metadata(self, tiles: list[tuple[GenerateRequest, int]], **picture) -> dict[str, str]:
        """PNG text for one picture of several generated images (a grid, an explain strip), from
        metadata(): each (request, seed) tile's parameters in reading order under "diffuse"
        "images", with `picture`'s keys beside them, and A1111's "parameters" of the first tile
        (its format describes one image)."""
        images = [json.loads(self.metadata(request, seed)["diffuse"]) for request, seed in tiles]
        return {"parameters": self.metadata(*tiles[0])["parameters"], "diffuse": json.dumps({**picture, "images": images})}

    @staticmethod
    def steps_run(request: GenerateRequest) -> int:
        """Sampler steps that really run: image-to-image runs round(strength * steps) of them."""
        return steps_run(request.effective_strength, request.steps)


def recorded_prompt(image: Image.Image) -> str | None:
    """The prompt an image made by this project records in its PNG metadata, if any."""
    try:
        return json.loads(image.info["diffuse"])["prompt"]
    except (KeyError, ValueError, TypeError):
        return None


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
