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

Consistency distillation (Song et al. 2023, alg. 2), the method the issue compares it with
(`method="consistency"`): one student f(x, sigma, w) learns to map every point of a teacher's
ODE trajectory to the same clean image. For adjacent levels s_n < s_{n+1} of an EDM grid, x =
y + s_{n+1} z, and x^ the guided teacher's Heun step from s_{n+1} to s_n, the loss is
    d(f_theta(x, s_{n+1}), f_theta-(x^, s_n)),     theta- an EMA of theta (mu = 0.95, as in the paper),
with d the pseudo-Huber distance of Song & Dhariwal 2023 (improved consistency training, eq. 6)
in place of LPIPS, which needs downloaded weights. The EDM denoiser already meets the boundary
condition f(x, sigma_min) = x to within c_out(0.002) = 0.002 (Karras et al. 2022, table 1). It
samples in any number of steps by multistep consistency sampling (samplers.sample_consistency).

A multistep consistency model (Heek et al. 2024, `segments=True`) splits the levels into `steps`
segments at the cm schedule's levels (80, 10, 3.5, 1, 0 for 4 steps) and is consistent only within
each: from any x at s_{n+1} it predicts the x0 whose DDIM step lands where the teacher's path
meets the segment's lower boundary b, so the target above becomes the x0 whose step from x to b
lands on the target network's step from the teacher's point to b (for b = 0, plain consistency
distillation). It samples by those DDIM (Euler) steps on cm, deterministically, and only in its
`steps`; each segment is a shorter path to learn than the whole way to 0.
"""

import copy
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import CONFIG_FILE
from .denoiser import DenoiserFn
from .errors import CheckpointError, DiffuseError
from .schedules import SIGMA_MAX, cm_sigmas, karras0_sigmas, karras_sigmas

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


# ----------------------------------------------------------------------------- consistency distillation

def consistency_levels(n: int) -> torch.Tensor:
    """The N levels s_1 = sigma_min < ... < s_N = sigma_max of consistency distillation: EDM's
    ramp (eq. 5, rho = 7), ascending, as in Song et al. 2023 (N = 18 for CIFAR-10)."""
    return karras_sigmas(n)[:-1].flip(0)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(|a - b|^2 + c^2) - c per example (Song & Dhariwal 2023, eq. 6): L2 far away, squared
    L2 near, which the authors found more robust than either."""
    return torch.sqrt(((a - b) ** 2).flatten(1).sum(1) + c ** 2) - c


def consistency_loss(student: DenoiserFn, target: DenoiserFn, teacher_solve: Callable, y: torch.Tensor, cond,
                     scale: torch.Tensor, levels: torch.Tensor, generator: torch.Generator | None = None,
                     boundaries: torch.Tensor | None = None) -> torch.Tensor:
    """One batch of consistency distillation (Song et al. 2023, alg. 2): for each clean image y a
    random pair of adjacent `levels` (ascending), x = y + s_{n+1} z, the teacher's x at s_n
    (teacher_solve, one Heun step), and the distance between the student's clean image of x and
    the target network's of the teacher's point. c = 0.00054 sqrt(d), the paper's choice."""
    b = y.shape[0]
    n = torch.randint(len(levels) - 1, (b,), generator=generator)
    lo, hi = levels[n].to(y), levels[n + 1].to(y)
    x = y + _column(hi, y) * torch.randn(y.shape, generator=generator).to(y)
    with torch.no_grad():
        x_lo = teacher_solve(x, hi, lo, cond, scale)
        aim = target(x_lo, lo, with_guidance(cond, scale))
        if boundaries is not None:
            # Multistep consistency (Heek et al. 2024): consistent only down to the segment's
            # lower boundary b, reached by a DDIM step; the aim is the x0 whose step from x lands there.
            bounds = boundaries.to(lo)
            b = bounds[torch.searchsorted(bounds, lo, right=True) - 1]
            aim = student_target(x, ddim_step(x_lo, aim, lo, b), hi, b)
    c = 0.00054 * math.sqrt(y[0].numel())
    return pseudo_huber(student(x, hi, with_guidance(cond, scale)), aim, c).mean()


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, mu: float) -> None:
    """theta- <- mu theta- + (1 - mu) theta (Song et al. 2023, alg. 2, last line)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, 1 - mu)


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
    method: str = "progressive"      # or "consistency" (one student, any steps; start_steps is not used)
    levels: int = 18                 # consistency: the N of the teacher's grid (Song et al. 2023: 18)
    ema: float = 0.95                # consistency: the target network's EMA rate mu
    segments: bool = False           # consistency: multistep (Heek et al. 2024), --steps segments on the cm levels
    save_every: int = 200            # iterations between saves of a round in progress (0: only its end)
    device: str = "cpu"              # a torch device (devices.resolve_device); the draws stay on the CPU's generator


METHODS = ("progressive", "consistency")


def student_of(teacher) -> "torch.nn.Module":
    """A copy of the teacher whose UNet also takes the guidance scale (its embedding zero: it
    starts as the teacher's conditional model)."""
    from .model import TextToImageModel
    cfg = teacher.config()
    cfg["unet"] = {**cfg["unet"], "guidance_input": True}
    student = TextToImageModel.from_config(cfg)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all("guidance_emb" in k for k in missing), (missing, unexpected)
    return student.to(next(teacher.parameters()).device)


def train_student(student, loss_of: Callable, data, cfg: DistillConfig, g: torch.Generator, label: str,
                  progress: Callable[[str], None], target=None, partial: Path | None = None,
                  run: dict | None = None) -> tuple[list[float], float]:
    """One round: Adam on the student's denoiser, its rate decayed linearly to 0, batches of the
    teacher's training images with their captions and a guidance scale drawn per example;
    loss_of(y, cond, w) is the method's loss; `target`, if any, follows the student as an EMA
    (consistency distillation). The text encoder stays the teacher's. Every cfg.save_every
    iterations the round's state is saved in `partial`, with `run` (what the round must not change
    midway: settings, teacher), and a round that finds one there goes on from it exactly, if it
    was saved with the same `run`. Returns the losses and the round's seconds."""
    run = run or {}
    params = [p for name, p in student.named_parameters() if name.startswith("denoiser.")]
    for p in student.text_encoder.parameters():
        p.requires_grad_(False)  # the words mean what they meant to the teacher
    opt = torch.optim.Adam(params, lr=cfg.lr)
    losses, start, elapsed = [], 0, 0.0
    if partial is not None and (partial / CONFIG_FILE).is_file():
        start, losses, elapsed = resume_round(partial, student, opt, g, target, run)
        progress(f"{label}: going on from {start}/{cfg.iterations}")
    t0 = time.monotonic() - elapsed
    student.train()
    for it in range(start, cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (1 - it / cfg.iterations)  # linear decay to 0 (Salimans & Ho, sec. 5)
        # Drawn on the CPU's generator wherever the math runs: a run on CUDA trains on the same
        # batches, levels and noise as on the CPU (the losses move them to the images' device).
        idx = torch.randint(len(data.captions), (cfg.batch_size,), generator=g)
        with torch.no_grad():
            cond = student.encode([data.captions[i] for i in idx.tolist()])
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(cfg.batch_size, generator=g)
        y = data.images[idx.to(data.images.device)]
        loss = loss_of(y, cond, w.to(y.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if target is not None:
            ema_update(target, student, cfg.ema)
        losses.append(loss.item())
        if (it + 1) % 100 == 0:
            progress(f"{label}: {it + 1}/{cfg.iterations}, loss {sum(losses[-100:]) / 100:.4f}")
        if partial is not None and cfg.save_every and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
            save_round(partial, student, opt, g, target, it + 1, losses, time.monotonic() - t0, run)
    student.eval()
    return losses, time.monotonic() - t0


def rng_tensors(g: torch.Generator) -> dict[str, torch.Tensor]:
    """The random streams a run draws from: its generator (batches, noise, levels) and torch's
    own (the UNet's dropout)."""
    return {"rng.g": g.get_state(), "rng.torch": torch.get_rng_state()}


def set_rng(tensors: dict[str, torch.Tensor], g: torch.Generator) -> None:
    g.set_state(tensors["rng.g"])
    torch.set_rng_state(tensors["rng.torch"])


def save_round(partial: Path, student, opt, g: torch.Generator, target, iteration: int, losses: list[float],
               seconds: float, run: dict) -> None:
    """A round in progress, atomically (checkpoint.save_checkpoint): the student, and as its
    training state Adam's moments, the random streams, the EMA target and the losses so far."""
    from .checkpoint import optimizer_tensors, save_checkpoint
    tensors, param_groups = optimizer_tensors(opt)
    tensors.update(rng_tensors(g), losses=torch.tensor(losses, dtype=torch.float64))
    if target is not None:
        tensors.update({f"target.{k}": v for k, v in target.state_dict().items()})
    save_checkpoint(partial, student, {"distilling": {"iteration": iteration}}, tensors,
                    {"iteration": iteration, "seconds": seconds, "param_groups": param_groups, "run": run})


def resume_round(partial: Path, student, opt, g: torch.Generator, target, run: dict) -> tuple[int, list[float], float]:
    """What save_round saved, put back: returns the iteration to go on from, the losses, the seconds.
    A round saved with another `run` is a DiffuseError that names what differs."""
    from safetensors.torch import load_file
    from .checkpoint import MODEL_FILE, load_optimizer, load_training_state
    tensors, info = load_training_state(partial)  # checks that state and weights belong together
    saved = info.get("run", run)  # (rounds saved before runs were recorded: taken as they are)
    changed = sorted(k for k in {**saved, **run} if saved.get(k) != run.get(k))
    if changed:
        raise DiffuseError(f"{partial} is a round started with other {', '.join(changed)} "
                           f"({', '.join(f'{k} {saved.get(k)!r}' for k in changed)}): give those again, or remove "
                           "the folder to start the round afresh")
    student.load_state_dict(load_file(str(partial / MODEL_FILE)))
    load_optimizer(opt, tensors, info["param_groups"])
    if target is not None:
        target.load_state_dict({k.removeprefix("target."): v for k, v in tensors.items() if k.startswith("target.")})
    set_rng(tensors, g)
    return info["iteration"], tensors["losses"].tolist(), info["seconds"]


def distill(cfg: DistillConfig, progress: Callable[[str], None] = print) -> Path:
    """Distil cfg.teacher into OUT. Progressive: from cfg.start_steps down to cfg.steps, one
    student per halving; consistency: one student. Each round's student is saved when the round
    ends, in OUT/rounds/<N>-steps or OUT/rounds/consistency (a stopped run starts again at the
    first round not saved), and the last one in OUT."""
    from .checkpoint import load_checkpoint, load_training_state, model_dir, model_name, save_checkpoint
    from .copies import training_set
    from .devices import use_device
    if cfg.method not in METHODS:
        raise DiffuseError(f"unknown distillation method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    if cfg.segments and cfg.method != "consistency":
        raise DiffuseError("--segments makes a multistep consistency model: it needs --method consistency")
    teacher_dir = model_dir(cfg.teacher)
    use_device(cfg.device)
    teacher, teacher_cfg = load_checkpoint(teacher_dir, cfg.device)
    if teacher_cfg.get("distilled"):
        raise DiffuseError(f"{cfg.teacher!r} is a distilled student already: distil its teacher")
    teacher = frozen_copy(teacher)
    data = training_set(teacher_cfg)
    data = dataclasses.replace(data, images=data.images.to(cfg.device))
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        empty = teacher.encode([""])
    uncond_of = lambda b: empty.repeat(b)  # noqa: E731
    record = {"teacher": model_name(teacher_dir), "teacher_sha256": teacher_cfg["weights_sha256"],
              "guidance_range": [cfg.guidance_min, cfg.guidance_max], "settings": dataclasses.asdict(cfg)}
    # What a round in progress must go on with: all but where it is written, how often saved and
    # where the math runs (a round stopped on a GPU may go on on the CPU, as `diffuse train` may).
    run = {"teacher_sha256": teacher_cfg["weights_sha256"],
           **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("teacher", "out", "save_every", "device")}}

    def save(folder, student, losses, seconds, **what):
        """A finished round, with the random streams where it left them (a run that keeps this
        round goes on drawing what it would have drawn), then its partial state removed."""
        info = {"data": teacher_cfg.get("data", {}),
                "distilled": {"method": cfg.method, **what, **record, "seconds": round(seconds, 1),
                              "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:]))}}
        save_checkpoint(folder, student, info, rng_tensors(g), {"round_done": True})
        shutil.rmtree(partial_of(folder), ignore_errors=True)
        progress(f"{folder.name}: saved {folder}")

    def keep(folder):
        try:
            set_rng(load_training_state(folder)[0], g)
        except CheckpointError:  # saved before rounds kept their random state: draws differ from then on
            progress(f"{folder.name}: no random state saved with it; the next round draws afresh")
        return load_checkpoint(folder, cfg.device)[0]

    if cfg.method == "consistency":
        last = Path(cfg.out) / "rounds" / "consistency"
        if not (last / CONFIG_FILE).is_file():
            student = student_of(teacher).requires_grad_(True)
            target = frozen_copy(student)
            solve = teacher_of_first_student(teacher.denoiser, uncond_of, 1)
            levels = consistency_levels(cfg.levels)
            bounds = None
            if cfg.segments:
                bounds = cm_sigmas(cfg.steps).flip(0)
                levels = torch.unique(torch.cat([levels, bounds[1:]]))
            losses, seconds = train_student(
                student, lambda y, cond, w: consistency_loss(student.denoiser, target.denoiser, solve, y, cond, w,
                                                             levels, g, bounds),
                data, cfg, g, "consistency", progress, target=target, partial=partial_of(last), run=run)
            # The online network is the student (Song et al. sample with the EMA of a slower rate,
            # 0.9999, which a run of a few thousand steps would barely move from the teacher).
            if cfg.segments:
                save(last, student, losses, seconds, steps=cfg.steps, sampler="euler", schedule="cm")
            else:
                save(last, student, losses, seconds, steps=cfg.steps, sampler="consistency", schedule="cm",
                     any_steps=True)
    else:
        previous = None
        for n in halvings(cfg.start_steps, cfg.steps):
            last = Path(cfg.out) / "rounds" / f"{n}-steps"
            if (last / CONFIG_FILE).is_file():
                previous = keep(last)
                progress(f"{n} steps: kept from {last}")
                continue
            student = (student_of(teacher) if previous is None else copy.deepcopy(previous)).requires_grad_(True)
            solve = (teacher_of_first_student(teacher.denoiser, uncond_of, cfg.teacher_substeps) if previous is None
                     else teacher_of_next_student(frozen_copy(previous).denoiser))
            grid = rho_grid(n)
            losses, seconds = train_student(
                student, lambda y, cond, w: distillation_loss(student.denoiser, solve, y, cond, w, grid, g),
                data, cfg, g, f"{n} steps", progress, partial=partial_of(last), run=run)
            save(last, student, losses, seconds, steps=n, sigmas=[float(s) for s in grid], sampler="euler",
                 schedule="karras0")
            previous = student
    final, _ = load_checkpoint(last)
    save_checkpoint(cfg.out, final, read_config_info(last))
    return Path(cfg.out)


def partial_of(folder: Path) -> Path:
    """Where a round in progress keeps its state: beside the folder it will be saved in."""
    return folder.with_name(folder.name + ".partial")


def read_config_info(folder: Path) -> dict:
    """What a saved student's config.json says beyond its model (data and distillation record)."""
    from .checkpoint import read_config
    cfg = read_config(folder)
    return {k: cfg[k] for k in ("data", "distilled") if k in cfg}
