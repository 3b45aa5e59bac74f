"""Distillation into few-step students with guidance built in (issue 21).

Progressive distillation (Salimans & Ho 2022) in sigma space, with the guidance scale an input of
the student (Meng et al. 2023, "On distillation of guided diffusion models"):

- A student samples with Euler (DDIM) steps on a grid of its own, `rho_grid`: the Karras et al.
  ramp run all the way to sigma = 0, so the grid of N steps is every other point of the grid of
  2N, and the last step lands on the clean image. One step from s to s' is the DDIM map
      x' = x0 + (s' / s) (x - x0),     x0 = student(x, s, cond, w).
- The teacher solves the same interval more precisely: the guided teacher (classifier-free
  guidance at a scale w drawn per example) with Heun substeps for the first student, then each
  student, two of its own steps, for the next with half as many steps (Salimans & Ho, alg. 2).
- The student learns the x0 that makes its one step land where the teacher lands (Salimans &
  Ho eq. 8, here with x = y + s n): from x' = x0 + r (x - x0), r = s' / s,
      x0_target = (x'_teacher - r x) / (1 - r),
  which for the last step (s' = 0) is the teacher's end point itself.

With the exact denoiser of a finite data set, a one-step student's target from pure noise is the
end of the probability-flow ODE, a data point (tests/test_distill.py).
"""

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .denoiser import DenoiserFn
from .errors import DiffuseError
from .schedules import SIGMA_MAX, karras0_sigmas

RHO = 7.0


def rho_grid(steps: int, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """The students' grid: the karras0 schedule (schedules.py), steps + 1 levels from sigma_max
    to exactly 0, whose grid of 2N steps holds every point of the grid of N."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return karras0_sigmas(steps, sigma_max=sigma_max, rho=RHO)


def ddim_step(x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM update in sigma space (Song et al. 2021, eq. 12 with eta = 0), which
    is Euler's step on the PF-ODE: x' = x0 + (s' / s)(x - x0)."""
    r = _column(s_next / s, x)
    return x0 + r * (x - x0)


def heun_solve(denoiser: DenoiserFn, x: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor, cond,
               substeps: int) -> torch.Tensor:
    """The PF-ODE from s to s_next (per example) in `substeps` Heun steps on the rho ramp between
    them (EDM alg. 1, no correction on a step that ends at 0)."""
    lo, hi = _column(s_next, x) ** (1 / RHO), _column(s, x) ** (1 / RHO)
    for k in range(substeps):
        a = (hi + (lo - hi) * k / substeps) ** RHO
        b = (hi + (lo - hi) * (k + 1) / substeps) ** RHO
        d = (x - denoiser(x, a.flatten(), cond)) / a
        euler = x + d * (b - a)
        ends = b == 0  # where the ODE ends at the clean image the derivative there is undefined
        b_safe = torch.where(ends, torch.ones_like(b), b)
        d_next = (euler - denoiser(euler, b_safe.flatten(), cond)) / b_safe
        x = torch.where(ends, euler, x + (d + d_next) / 2 * (b - a))
    return x


def student_target(x: torch.Tensor, x_teacher: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """The x0 whose DDIM step from (x, s) lands on the teacher's x at s_next (Salimans & Ho eq. 8)."""
    r = _column(s_next / s, x)
    return (x_teacher - r * x) / (1 - r)


def _column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))


# ----------------------------------------------------------------------------- guidance as an input

def with_guidance(cond, scale: torch.Tensor):
    """`cond` carrying a guidance scale per example, for a student that takes it as input."""
    return dataclasses.replace(cond, guidance=scale)


def guided(denoiser: DenoiserFn, uncond, scale: torch.Tensor) -> DenoiserFn:
    """Classifier-free guidance with a scale per example (Ho & Salimans 2022, eq. 6): the teacher
    of the first student, one batched pass for both predictions."""
    from .guidance import cat_cond

    def fn(x, sigma, cond):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        c, u = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond(cond, uncond)).chunk(2)
        return u + _column(scale, x) * (c - u)
    return fn


def student_fn(student: DenoiserFn, scale: torch.Tensor) -> DenoiserFn:
    """A student as a denoiser at per-example guidance `scale` (one pass: guidance is its input)."""
    return lambda x, sigma, cond: student(x, sigma, with_guidance(cond, scale))


# ----------------------------------------------------------------------------- one round

def distillation_loss(student: DenoiserFn, teacher_solve: Callable, y: torch.Tensor, cond, scale: torch.Tensor,
                      grid: torch.Tensor, generator: torch.Generator | None = None,
                      sigma_data: float = 0.5) -> torch.Tensor:
    """One batch of progressive distillation: for each clean image y a random step i of the
    student's `grid`, x = y + s_i n, the teacher's x at s_{i+1} (teacher_solve(x, s, s_next,
    cond, scale)), and the EDM-weighted squared error of the student's x0 against the target."""
    b = y.shape[0]
    i = torch.randint(len(grid) - 1, (b,), generator=generator)
    s, s_next = grid[i].to(y), grid[i + 1].to(y)
    n = torch.randn(y.shape, generator=generator).to(y)
    x = y + _column(s, y) * n
    with torch.no_grad():
        target = student_target(x, teacher_solve(x, s, s_next, cond, scale), s, s_next)
    x0 = student(x, s, with_guidance(cond, scale))
    weight = (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2  # EDM's lambda(sigma), eq. 8 of Karras et al.
    return (_column(weight, y) * (x0 - target) ** 2).mean()


def teacher_of_first_student(teacher: DenoiserFn, uncond_of: Callable, substeps: int) -> Callable:
    """teacher_solve for the first student: the guided teacher, Heun in `substeps` steps."""
    def solve(x, s, s_next, cond, scale):
        return heun_solve(guided(teacher, uncond_of(x.shape[0]), scale), x, s, s_next, cond, substeps)
    return solve


def teacher_of_next_student(previous: DenoiserFn) -> Callable:
    """teacher_solve for a student with half the steps: two DDIM steps of the previous student,
    through the midpoint of the interval on its own (twice as fine) grid."""
    def solve(x, s, s_next, cond, scale):
        mid = ((s ** (1 / RHO) + s_next ** (1 / RHO)) / 2) ** RHO
        fn = student_fn(previous, scale)
        x_mid = ddim_step(x, fn(x, s, cond), s, mid)
        return ddim_step(x_mid, fn(x_mid, mid, cond), mid, s_next)
    return solve


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def halvings(start_steps: int, steps: int) -> list[int]:
    """The students' step counts, start_steps down to steps by halving (both powers of two apart)."""
    if steps < 1 or start_steps < steps or start_steps % steps or not math.log2(start_steps // steps).is_integer():
        raise ValueError(f"the start steps ({start_steps}) must be the final steps ({steps}) times a power of two")
    out = [start_steps]
    while out[-1] > steps:
        out.append(out[-1] // 2)
    return out


# ----------------------------------------------------------------------------- the whole run

@dataclass(frozen=True)
class DistillConfig:
    teacher: str                     # a checkpoint folder or a bundled model's name
    out: str                         # the final student; each round's student in out/rounds/<N>-steps
    steps: int = 4                   # the final student's steps
    start_steps: int = 16            # the first student's steps (the final steps times a power of two)
    teacher_substeps: int = 2        # Heun steps of the guided teacher per interval of the first student
    iterations: int = 1000           # training steps per student
    batch_size: int = 16
    lr: float = 1e-4                 # Adam, decayed linearly to 0 within each round (Salimans & Ho, sec. 5)
    guidance_min: float = 1.0        # the student learns every scale in [min, max] (Meng et al. draw w per example)
    guidance_max: float = 4.0
    seed: int = 0


def student_of(teacher) -> "torch.nn.Module":
    """A copy of the teacher whose UNet also takes the guidance scale (its embedding zero: it
    starts as the teacher's conditional model)."""
    from .model import TextToImageModel
    cfg = teacher.config()
    cfg["unet"] = {**cfg["unet"], "guidance_input": True}
    student = TextToImageModel.from_config(cfg)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all("guidance_emb" in k for k in missing), (missing, unexpected)
    return student


def distill(cfg: DistillConfig, progress: Callable[[str], None] = print) -> Path:
    """Progressive distillation from cfg.start_steps down to cfg.steps, one student per halving,
    each saved when its round ends (a stopped run starts again at the first round not saved)."""
    from .checkpoint import CONFIG_FILE, load_checkpoint, model_dir, model_name, save_checkpoint
    from .copies import training_set
    teacher_dir = model_dir(cfg.teacher)
    teacher, teacher_cfg = load_checkpoint(teacher_dir)
    if teacher_cfg.get("distilled"):
        raise DiffuseError(f"{cfg.teacher!r} is a distilled student already: distil its teacher")
    teacher = frozen_copy(teacher)
    data = training_set(teacher_cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        empty = teacher.encode([""])
    uncond_of = lambda b: empty.repeat(b)  # noqa: E731
    previous = None
    for n in halvings(cfg.start_steps, cfg.steps):
        folder = Path(cfg.out) / "rounds" / f"{n}-steps"
        if (folder / CONFIG_FILE).is_file():
            previous, _ = load_checkpoint(folder)
            progress(f"{n} steps: kept from {folder}")
            continue
        student = (student_of(teacher) if previous is None else copy.deepcopy(previous)).requires_grad_(True)
        solve = (teacher_of_first_student(teacher.denoiser, uncond_of, cfg.teacher_substeps) if previous is None
                 else teacher_of_next_student(frozen_copy(previous).denoiser))
        params = [p for name, p in student.named_parameters() if name.startswith("denoiser.")]
        for p in student.text_encoder.parameters():
            p.requires_grad_(False)  # the words mean what they meant to the teacher
        opt = torch.optim.Adam(params, lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / cfg.iterations)
        grid, losses, t0 = rho_grid(n), [], time.monotonic()
        student.train()
        for it in range(cfg.iterations):
            idx = torch.randint(len(data.captions), (cfg.batch_size,), generator=g)
            with torch.no_grad():
                cond = student.encode([data.captions[i] for i in idx.tolist()])
            w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(cfg.batch_size, generator=g)
            loss = distillation_loss(student.denoiser, solve, data.images[idx], cond, w, grid, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if (it + 1) % 100 == 0:
                progress(f"{n} steps: {it + 1}/{cfg.iterations}, loss {sum(losses[-100:]) / 100:.4f}")
        student.eval()
        info = {"data": teacher_cfg.get("data", {}),
                "distilled": {"method": "progressive", "steps": n, "sigmas": [float(s) for s in grid],
                              "sampler": "euler", "schedule": "karras0",
                              "guidance_range": [cfg.guidance_min, cfg.guidance_max],
                              "teacher": model_name(teacher_dir), "teacher_sha256": teacher_cfg["weights_sha256"],
                              "settings": dataclasses.asdict(cfg), "seconds": round(time.monotonic() - t0, 1),
                              "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:]))}}
        save_checkpoint(folder, student, info)
        progress(f"{n} steps: saved {folder}")
        previous = student
    final, _ = load_checkpoint(Path(cfg.out) / "rounds" / f"{cfg.steps}-steps")
    save_checkpoint(cfg.out, final, read_config_info(Path(cfg.out) / "rounds" / f"{cfg.steps}-steps"))
    return Path(cfg.out)


def read_config_info(folder: Path) -> dict:
    """What a saved student's config.json says beyond its model (data and distillation record)."""
    from .checkpoint import read_config
    cfg = read_config(folder)
    return {k: cfg[k] for k in ("data", "distilled") if k in cfg}
