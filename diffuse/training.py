"""Training: EDM loss, AdamW, EMA, caption dropout, previews, atomic checkpoints, exact resume.

Everything random in a run (data order, caption dropout, noise levels, noise) comes from the run
seed and the number of images seen, or from generators whose state the checkpoint stores, so a
run stopped and resumed gives the very same weights as one that never stopped.

Under torchrun the same loop runs in every process (DistributedDataParallel). One optimizer step
consumes a global batch of batch_size x processes x grad_accum images: the stream positions
[images_seen, images_seen + global batch) of the data order, cut into micro-batches in rank
order. Every process draws the randomness of the whole global batch from the same generator
and keeps its own micro-batches' share, so W processes compute exactly what one process with
W times the accumulation computes, and a run can resume with another number of processes.
"""

import collections
import contextlib
import copy
import json
import math
import signal
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import (CONFIG_FILE, STATE_JSON, load_checkpoint, load_optimizer, load_training_state, model_dir,
                         model_name, optimizer_tensors, read_config, remove_stale_temporaries, roll_forward,
                         save_checkpoint)
from .data import TensorDataset, load_dataset
from .denoiser import EDMLoss
from .devices import DEVICES, resolve_device, use_device
from .distributed import World, any_rank, barrier, mean_over_ranks, process_group
from .errors import DiffuseError
from .model import TextToImageModel
from .networks import preset


LR_SCHEDULES = ("constant", "cosine", "rsqrt")


def learning_rate(step: int, peak: float, warmup: int, schedule: str = "constant", total: int | None = None,
                  ref: int = 2000) -> float:
    """The rate of optimizer step `step` (0-based): a linear warm-up, then
    - constant: the peak rate throughout;
    - cosine: a decay from the peak to a tenth of it at the last step (Loshchilov & Hutter 2017,
      SGDR; the floor of lr/10 is nanoGPT's, after Chinchilla); it depends on the run's length;
    - rsqrt: the peak until step `ref`, then peak / sqrt(step / ref) (EDM2, Karras et al. 2024,
      eq. 17). It does not depend on the run's length, so a run extended with a larger --steps
      continues the very same schedule."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "rsqrt":
        return peak / math.sqrt(max(step / ref, 1.0))
    if schedule == "constant" or total is None or total <= warmup + 1:
        return peak
    progress = min(1.0, (step - warmup) / (total - 1 - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainConfig:
    data: str                          # "shapes", "digits" or an image folder
    out: str                           # run directory: the checkpoint, log.jsonl and previews/
    preset: str = "small"              # network size, see networks.PRESETS
    image_size: int = 32               # 32 or 64
    batch_size: int = 32               # images per micro-batch in each process (16 before 2026-12-05)
    grad_accum: int = 1                # micro-batches per optimizer step in each process
    lr: float = 2e-3                   # AdamW peak learning rate
    weight_decay: float = 0.0
    warmup_steps: int = 25             # linear learning-rate warm-up (800 images at batch 32)
    lr_schedule: str = "rsqrt"         # constant | cosine (to lr/10 at the last step; needs steps) | rsqrt (default: a constant 2e-3 drifted worse after step 9,000, RESULTS)
    lr_ref_steps: int = 1000           # rsqrt: steps at the peak before the 1/sqrt decay begins (32,000 images at batch 32)
    minutes: float | None = None       # wall-clock budget of this invocation
    steps: int | None = None           # total optimizer steps of the run (counts resumed steps)
    ema_halflife_kimg: float = 2.0     # EMA half-life in thousands of images (EDM's ema_halflife_kimg)
    ema_rampup: float = 0.1            # early on, half-life <= this share of the images seen (EDM)
    caption_dropout: float = 0.1       # share of captions replaced by "" so guidance has an unconditional model
    p_mean: float = -0.4               # log-normal sigma distribution of the loss (EDM table 1 has -1.2;
                                       # -0.4 measured better here: benchmarks/RESULTS.md, training recipe)
    p_std: float = 1.2
    high_sigma_share: float = 0.0      # share of noise levels drawn log-uniformly from EDMLoss.high_range instead
    clip_grad: float = 0.0             # clip the global gradient norm to this (0: no clipping)
    seed: int = 0
    data_size: int = 20000             # images drawn for the procedural datasets (shapes)
    holdout: bool = True               # shapes: leave out data.HELD_OUT (shape, colour) pairs
    precision: str = "auto"            # auto | fp32 | bf16 (auto: bf16 on a CPU with AVX-512 BF16 or AMX, else fp32; see autocast_dtype)
    device: str = "auto"               # auto | cpu | cuda (auto: CUDA when a GPU is visible)
    compile: bool = False              # torch.compile the UNet
    preview_every: int = 500           # steps between preview grids (0: none)
    checkpoint_every: int = 1000       # steps between checkpoints (0: only at the end)
    log_every: int = 10
    resume: bool = False
    init: str | None = None            # start from this model's weights (a bundled name or a checkpoint directory)
    progress: bool = True

    def __post_init__(self):
        if self.minutes is None and self.steps is None:
            raise DiffuseError("give a budget: --minutes or --steps")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise DiffuseError(f"{name} must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise DiffuseError("steps must be at least 1")
        if self.minutes is not None and not self.minutes > 0:
            raise DiffuseError("minutes must be positive")
        if not self.lr > 0:
            raise DiffuseError(f"learning rate must be positive, got {self.lr}")
        if self.image_size not in (32, 64):
            raise DiffuseError(f"image size must be 32 or 64, got {self.image_size}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise DiffuseError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise DiffuseError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_ref_steps < 1:
            raise DiffuseError(f"lr ref steps must be at least 1, got {self.lr_ref_steps}")
        if self.lr_schedule == "cosine" and self.steps is None:
            raise DiffuseError("the cosine lr schedule needs --steps (it decays over the whole run)")
        if not self.p_std > 0:
            raise DiffuseError(f"p_std must be positive, got {self.p_std}")
        if not 0 <= self.high_sigma_share <= 1:
            raise DiffuseError(f"high sigma share must be in [0, 1], got {self.high_sigma_share}")
        if not 0 <= self.caption_dropout < 1:
            raise DiffuseError("caption dropout must be in [0, 1)")
        if not self.clip_grad >= 0:
            raise DiffuseError(f"gradient clipping must be >= 0 (0: off), got {self.clip_grad}")
        if self.device not in DEVICES:
            raise DiffuseError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")


# Fields that define what is trained; resuming with others would not continue the same run.
# The number of processes is not one of them: only the global batch it helps make matters.
RUN_IDENTITY = ("data", "preset", "image_size", "seed", "data_size", "holdout", "init")


# Settings a resumed run keeps from its start unless given again on purpose (resume_config). The
# rest say where and how to run (budget, device, precision, logging), not what is trained.
RUN_RECIPE = RUN_IDENTITY + ("steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps", "lr_schedule", "lr_ref_steps",
                             "ema_halflife_kimg", "ema_rampup", "caption_dropout", "p_mean", "p_std",
                             "high_sigma_share", "clip_grad")


# What a run saved before a setting existed did, so that resuming it does not take a later default
# (the learning rate was constant, nothing was clipped, no share of noise levels was high).
BEFORE_THE_OPTION = {"lr_schedule": "constant", "clip_grad": 0.0, "high_sigma_share": 0.0}


def same_data(a: str, b: str) -> bool:
    """Whether two --data values name the same data: the same name, or paths to one folder."""
    return a == b or Path(a).resolve() == Path(b).resolve()


def resume_config(out: str | Path, data: str | None = None, **given) -> TrainConfig:
    """The config to continue the run in `out` with: its own recipe, except the settings in
    `given` (None values count as not given). Budget and machine settings come from `given` or
    the defaults. A run started with --minutes alone has no step target to keep. `data` None is
    the run's own data."""
    roll_forward(out)  # a save killed past its commit point is a checkpoint: finish it before reading
    try:
        saved = json.loads((Path(out) / STATE_JSON).read_text())["train"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        read_config(out)  # the clear error when there is no checkpoint at all
        raise DiffuseError(f"{out} has no readable training state ({STATE_JSON}) to resume from") from None
    given = {k: v for k, v in given.items() if v is not None}
    if "minutes" in given and "steps" not in given and saved.get("minutes") is not None:
        saved = {**saved, "steps": None}  # a time-budgeted run stays time-budgeted
    saved = {**BEFORE_THE_OPTION, **saved}
    if data is not None and not same_data(data, saved.get("data", data)):
        given["data"] = data  # another data, given on purpose: check_resume refuses it like any identity change
    kept = {k: saved[k] for k in RUN_RECIPE if k in saved and k not in given}
    if data is None and "data" not in kept:
        raise DiffuseError(f"{out} does not record its training data: give --data")
    return TrainConfig(**{"data": data, "out": str(out), **kept, **given, "resume": True})


def init_settings(name: str) -> dict:
    """The settings a model given to --init fixes unless given: its preset (when its config names
    one) and image size."""
    saved = read_config(model_dir(name))
    found = {"preset": saved.get("training", {}).get("preset"), "image_size": saved["unet"]["image_size"]}
    return {k: v for k, v in found.items() if v is not None}


def changed_settings(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """The recipe settings a resumed run changes: {name: (was, now)}."""
    return {k: (saved[k], getattr(cfg, k)) for k in RUN_RECIPE
            if k in saved and k not in RUN_IDENTITY and k != "steps" and saved[k] != getattr(cfg, k)}


def check_resume(saved: dict, cfg: TrainConfig, warn: bool = True) -> None:
    """Refuse to resume a run (its saved settings `saved`) as another one: a changed setting of
    RUN_IDENTITY is an error; a changed recipe setting, given on purpose, is named (`warn`)."""
    for k in RUN_IDENTITY:
        was = saved.get(k, getattr(TrainConfig, k, None))
        if was != getattr(cfg, k):
            raise DiffuseError(f"cannot resume: the run used {k}={was!r}, not {getattr(cfg, k)!r}")
    for k, (was, now) in changed_settings(saved, cfg).items() if warn else ():
        warnings.warn(f"the resumed run changes {k} from {was!r} to {now!r}", stacklevel=3)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the next step boundary, so the saved
    state is that of a finished step and resuming is as exact as never stopping. A second
    Ctrl-C stops at once, without saving."""

    def __init__(self):
        self.requested, self._previous = False, {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving (Ctrl-C again to stop now without saving)", file=sys.stderr)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def epoch_permutation(n: int, epoch: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(n: int, start: int, count: int, seed: int) -> torch.Tensor:
    """Dataset indices of stream positions start .. start+count-1: epoch after epoch, each a
    fresh permutation, so the order depends only on the seed and the number of images seen."""
    out, pos = [], start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        take = min(count - len(out), n - offset)
        out.extend(epoch_permutation(n, epoch, seed)[offset: offset + take].tolist())
        pos += take
    return torch.tensor(out)


def micro_batches(batch: int, accum: int, rank: int) -> list[slice]:
    """Where process `rank`'s micro-batches lie in the global batch. The global batch is
    processes x accum micro-batches of `batch` images in rank order, so the W x A micro-batches
    of W processes are exactly those of one process accumulating W x A."""
    first = rank * accum
    return [slice((first + a) * batch, (first + a + 1) * batch) for a in range(accum)]


def ema_beta(batch: int, images_seen: int, halflife_kimg: float, rampup: float) -> float:
    """EMA decay per step for a half-life counted in images (EDM training_loop.py)."""
    halflife = halflife_kimg * 1000
    if rampup:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


# The training state stores the weights the optimizer steps under this prefix (model.safetensors
# holds their EMA); optimizer moments and generator states sit beside them under their own.
TRAINED_PREFIX = "model."


def trained_weights(state_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The raw (non-EMA) model weights out of a training state's tensors, as a state_dict."""
    return {k.removeprefix(TRAINED_PREFIX): v for k, v in state_tensors.items() if k.startswith(TRAINED_PREFIX)}


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - beta)


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype, None for fp32. `auto` is bf16 on a CPU that computes in bf16 natively
    (AVX-512 BF16 or AMX): there, with attention and group norm kept in fp32, it trains 1.4x as
    many images/s at batch 32 and reached 72.6% all-attribute match in 60 minutes where fp32 at
    batch 16 stayed at 10.1% (benchmarks/RESULTS.md, "Time to quality at 60 minutes"). Elsewhere
    `auto` is fp32 (TF32 tensor cores on CUDA): on an H200 at batch 256 bf16 was no faster for the
    tiny, small and medium presets (only large gained 17%) and one bf16 run's gradient became nan
    where fp32 passed the same batch ("On one H200 GPU")."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and str(device).startswith("cpu"):
        from .devices import cpu_has_fast_bf16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


def clip_gradients(params, max_norm: float) -> torch.Tensor:
    """The global gradient norm before clipping; the gradients are scaled to `max_norm` when it
    is exceeded (Pascanu et al. 2013), or left as they are when max_norm is 0."""
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf, foreach=True)


def layer_grad_norms(model: nn.Module, depth: int = 4) -> dict[str, float]:
    """Gradient norm per module, parameter names cut to `depth` dotted parts, largest first:
    where a gradient spike comes from."""
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            key = ".".join(name.split(".")[:depth])
            sq[key] = sq.get(key, 0.0) + p.grad.detach().float().pow(2).sum().item()
    return dict(sorted(((k, v ** 0.5) for k, v in sq.items()), key=lambda kv: -kv[1]))


class SpikeWatch:
    """Flags steps whose gradient norm exceeds `factor` times the median of the last `window`
    steps, so a log shows when, where and at which noise level a run starts to diverge."""

    def __init__(self, factor: float = 4.0, window: int = 200, warmup: int = 100):
        self.factor, self.warmup = factor, warmup
        self.recent: collections.deque[float] = collections.deque(maxlen=window)

    def is_spike(self, grad_norm: float) -> tuple[bool, float]:
        median = statistics.median(self.recent) if self.recent else math.inf
        self.recent.append(grad_norm)
        return len(self.recent) > self.warmup and grad_norm > self.factor * median, median


class ModelLoss(nn.Module):
    """The model and its per-example loss as one module, so that one forward call of the
    DistributedDataParallel wrapper covers every parameter that gets a gradient (text encoder
    included) and the gradients are averaged across processes during backward."""

    def __init__(self, model: TextToImageModel, loss_fn: EDMLoss):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, images: torch.Tensor, captions: list[str], sigma: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, images, self.model.encode(captions), sigma, noise)


class RunLog:
    """A run's log.jsonl: a row per logged step and one per event (checkpoint, grad_spike). As a
    run starts, rows past the checkpoint it continues from go (`keep_until`): they belong to the
    steps a stop undid, so the log of a stopped and resumed run reads as one never stopped."""

    def __init__(self, out: Path):
        self.path = out / "log.jsonl"

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def lines(self) -> list[str]:
        return [r for r in self.path.read_text().splitlines() if r.strip()] if self.path.exists() else []

    def rows(self) -> list[dict]:
        return [json.loads(r) for r in self.lines()]

    def keep_until(self, step: int) -> None:
        if self.path.exists():
            self.path.write_text("".join(r + "\n" for r in self.lines() if json.loads(r).get("step", 0) <= step))


class BestCheckpoint:
    """best/: the checkpoint whose EMA weights score the lowest probe loss, and the warning when
    a later one scores over twice that (the run has likely diverged: issue 23's 60-minute run went
    from 0.10 to 0.6). The probe is fixed: 32 training images, each at 4 noise levels (0.1 to 10)
    with fixed noise, so checkpoints of one run compare exactly.

    Invariant: best/ ends as in a run never stopped. Each checkpoint's row in the log, written
    after best/ has taken it or turned it down, says it was scored; a run resumed from a
    checkpoint without its row (killed while scoring, or inside best/'s save) scores it first."""

    def __init__(self, out: Path, data: TensorDataset, loss_fn: EDMLoss, device: str, log: RunLog, data_name: str):
        self.dir, self.data, self.loss_fn, self.device, self.log = out / "best", data, loss_fn, device, log
        self.data_name = data_name  # for the warning's resume command

    @torch.no_grad()
    def probe_loss(self, ema: TextToImageModel) -> float:
        g, was_training = torch.Generator().manual_seed(12345), ema.training
        ema.eval()  # no dropout: the probe must not draw from the run's random streams
        idx = torch.randperm(len(self.data), generator=g)[:32]
        y = self.data.images[idx].to(self.device)
        cond = ema.encode([self.data.captions[i] for i in idx.tolist()])
        total = 0.0
        for s in (0.1, 0.5, 2.0, 10.0):
            noise = torch.randn(y.shape, generator=g).to(self.device)
            total += self.loss_fn(ema, y, cond, torch.full((len(y),), s, device=self.device), noise).mean().item()
        ema.train(was_training)
        return total / 4

    def score(self, step: int, ema: TextToImageModel, save_best: Callable[[float], None]) -> None:
        """Score the checkpoint of `step` just saved; `save_best(probe_loss)` saves the run's
        state into best/ when it is the lowest so far."""
        loss = self.probe_loss(ema)
        best = read_config(self.dir).get("probe_loss") if (self.dir / CONFIG_FILE).exists() else None
        if best is None or loss < best:
            save_best(loss)
        elif loss > 2 * best:
            best_step = read_config(self.dir)["training"]["steps"]
            warnings.warn(f"the run may have diverged: probe loss {loss:.4f} at step {step} against {best:.4f} "
                          f"at step {best_step}, kept in {self.dir}; to go on from there: diffuse train "
                          f"--data {self.data_name} --out {self.dir} --resume --clip-grad 1 (or a lower --lr)",
                          stacklevel=2)
        # Written last: the row says best/ has seen this checkpoint (catch_up relies on it).
        self.log.write({"event": "checkpoint", "step": step, "probe_loss": loss, "best_probe_loss": best})

    def catch_up(self, step: int, ema: TextToImageModel, save_best: Callable[[float], None]) -> None:
        """Score the checkpoint a run resumes from if a kill left it unscored (scoring is
        idempotent, so one scored already is not missed either way)."""
        if not any(r.get("event") == "checkpoint" and r.get("step") == step for r in self.log.rows()):
            self.score(step, ema, save_best)


class Trainer:
    """One process's share of a run: its state and exact resume (_state, _restore, save), the
    step (train_step over micro-batches), checkpoints and previews at their intervals (run). The
    log and best/ are RunLog's and BestCheckpoint's."""

    def __init__(self, cfg: TrainConfig, world: World = World(), device: str | None = None, credentials=None):
        """One process's share of a run; `world` and `device` come from torchrun via train();
        the preview grids are signed with `credentials` (diffuse.credentials; None: unsigned)."""
        from .export import Exporter
        self.cfg, self.world, self.export = cfg, world, Exporter(credentials)
        self.device = device or resolve_device(cfg.device, world.local_rank)
        self.out = Path(cfg.out)
        self._finish_killed_saves()
        if (self.out / CONFIG_FILE).exists() and not cfg.resume:
            raise DiffuseError(f"{self.out} already holds a checkpoint: pass --resume to continue it or choose another output")
        state = None
        if cfg.resume:
            saved = read_config(self.out)  # fails clearly when there is nothing to resume
            state_tensors, state = load_training_state(self.out)
            check_resume(state["train"], cfg, warn=world.is_main)
            if world.is_main:
                self._check_global_batch(state.get("global_batch", state["train"].get("batch_size")))
        self.data: TensorDataset = load_dataset(cfg.data, cfg.image_size, seed=cfg.seed, shapes=cfg.data_size,
                                                  holdout=cfg.holdout)
        self.init_summary: dict | None = None
        if state is None:
            torch.manual_seed(cfg.seed)
            if cfg.init:
                self.model = self._init_model(cfg.init)
            else:
                self.model = TextToImageModel.create(preset(cfg.preset, cfg.image_size), self.data.captions)
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        else:
            self.ema, _ = load_checkpoint(self.out)
            self.init_summary = saved.get("training", {}).get("init")
            self.model = TextToImageModel.from_config(saved)
            self.model.load_state_dict(trained_weights(state_tensors))
        # channels_last measured ~20% faster for training convolutions on this CPU (oneDNN); on
        # CUDA it is what cuDNN's tensor-core convolutions prefer (not measured here: no GPU).
        self.model.to(self.device, memory_format=torch.channels_last).train()
        self.ema.to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # caption dropout, sigmas, noise
        self.loss_fn = EDMLoss(cfg.p_mean, cfg.p_std, self.model.denoiser.sigma_data,
                               high_share=cfg.high_sigma_share)
        self.step, self.images_seen, self.elapsed = 0, 0, 0.0
        self.saved_step: int | None = None  # the step of the last checkpoint this process wrote
        self.spikes, self.log = SpikeWatch(), RunLog(self.out)
        self.best = BestCheckpoint(self.out, self.data, self.loss_fn, self.device, self.log, cfg.data)
        if state is not None:
            self._restore(state_tensors, state)
        if world.is_main:  # a run killed before its first checkpoint leaves rows of no step kept
            self.log.keep_until(self.step)
        self.amp = autocast_dtype(cfg.precision, self.device)
        if state is not None and cfg.precision == "auto":
            # A resumed run keeps the precision it ran in, so it continues exactly (a run saved before
            # this was recorded ran in fp32: `auto` meant fp32 then); --precision changes it on purpose.
            self.amp = torch.bfloat16 if state.get("precision", "fp32") == "bf16" else None
        if cfg.compile:
            self.model.denoiser.net.compile()  # in place: parameter names, hence checkpoints, stay as they are
        self.forward: nn.Module = ModelLoss(self.model, self.loss_fn)
        if world.size > 1:
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[self.device] if self.device.startswith("cuda") else None)

    def _init_model(self, name: str) -> TextToImageModel:
        """A model to fine-tune or train on from (--init): its weights, network and vocabulary, which
        must be the --preset at the --size this run names; EMA, optimizer, step count and learning-
        rate schedule start afresh (warm-up included), as a diffusers fine-tuning run starts from
        a pretrained model. Caption words outside its vocabulary read as <unk>: named once here."""
        d = model_dir(name)
        model, saved = load_checkpoint(d)
        want = preset(self.cfg.preset, self.cfg.image_size)
        if model.unet_cfg != want:
            got = saved.get("training", {}).get("preset", "another network")
            raise DiffuseError(f"--init {name}: its network ({got}, {model.image_size}x{model.image_size}) is not "
                               f"the {self.cfg.preset} preset at {self.cfg.image_size}: give the --preset and --size it has")
        unknown = sorted({w for c in set(self.data.captions) for w in model.tokenizer.unknown_words(c)})
        if unknown and self.world.is_main:
            warnings.warn(f"{len(unknown)} caption words are not in the vocabulary of {name} and read as unknown "
                          f"(e.g. {', '.join(unknown[:5])})", stacklevel=3)
        self.init_summary = {"model": model_name(d), "weights_sha256": saved["weights_sha256"],
                             "steps": saved.get("training", {}).get("steps")}
        return model.train().requires_grad_(True)

    def _finish_killed_saves(self) -> None:
        """Roll forward the saves a kill interrupted past their commit point, so that a checkpoint
        counts even before its config.json is in place, and remove the temporaries of those killed
        before it. Both the run directory and best/ are saved into; a fresh start counts too (a
        first save can be killed). Only the main process deletes: it alone writes."""
        for d in (self.out, self.out / "best"):
            if self.world.is_main:
                remove_stale_temporaries(d)
            else:
                roll_forward(d)

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.world.size * self.cfg.grad_accum

    def _check_global_batch(self, was: int) -> None:
        """Another number of processes continues the same run only with the same global batch."""
        now = self.global_batch
        if was == now:
            return
        per_step = self.cfg.batch_size * self.world.size
        hint = f"; --grad-accum {was // per_step} keeps it" if was % per_step == 0 else ""
        warnings.warn(f"the run trained with a global batch of {was} images per step and continues with {now} "
                      f"(batch size x processes x grad-accum){hint}", stacklevel=3)

    # -------------------------------------------------------------- state
    def _state(self) -> tuple[dict, dict]:
        tensors = {TRAINED_PREFIX + k: v for k, v in self.model.state_dict().items()}
        optim, param_groups = optimizer_tensors(self.opt)
        tensors.update(optim)
        tensors["rng.train"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        info = {"step": self.step, "images_seen": self.images_seen, "elapsed_s": self.elapsed,
                "global_batch": self.global_batch, "world_size": self.world.size,
                "precision": "bf16" if self.amp == torch.bfloat16 else "fp32",
                "param_groups": param_groups, "train": asdict(self.cfg)}
        return tensors, info

    def _restore(self, tensors: dict, info: dict) -> None:
        load_optimizer(self.opt, tensors, info["param_groups"])
        for g in self.opt.param_groups:  # a resumed run may change these on purpose (resume_config)
            g["lr"], g["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.gen.set_state(tensors["rng.train"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step, self.images_seen, self.elapsed = info["step"], info["images_seen"], info["elapsed_s"]

    def save(self, where: Path | None = None, **summary) -> None:
        """The EMA model and the whole training state into the run directory (or `where`), with
        `summary` added to its config."""
        tensors, info = self._state()
        save_checkpoint(where or self.out, self.ema, {**self._summary(), **summary}, tensors, info)

    def save_best(self, probe_loss: float) -> None:
        self.save(self.best.dir, probe_loss=probe_loss)

    def _summary(self) -> dict:
        return {"data": self.data.summary, "training": {
            "steps": self.step, "images_seen": self.images_seen, "elapsed_s": round(self.elapsed, 1),
            "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum, "world_size": self.world.size,
            "global_batch": self.global_batch, "device": self.device, "lr": self.cfg.lr, "preset": self.cfg.preset,
            "ema_halflife_kimg": self.cfg.ema_halflife_kimg, "caption_dropout": self.cfg.caption_dropout,
            "lr_schedule": self.cfg.lr_schedule, "p_mean": self.cfg.p_mean, "p_std": self.cfg.p_std,
            "high_sigma_share": self.cfg.high_sigma_share, "clip_grad": self.cfg.clip_grad,
            **({"init": self.init_summary} if self.init_summary else {})}}

    # -------------------------------------------------------------- previews
    def preview(self) -> None:
        from .pipeline import GenerateRequest, Pipeline, image_grid
        prompts = list(dict.fromkeys(self.data.captions))[:4]
        pipe = Pipeline(self.ema, name=str(self.out))
        requests = [GenerateRequest(prompt=p, n=4, seed=0, steps=16) for p in prompts]
        grid = image_grid([img for r in requests for img in pipe.generate(r)], cols=4)
        grid.info.update(pipe.composite_metadata([(r, s) for r in requests for s in r.seeds],
                                                 picture="training preview", step=self.step))
        self.export.save(grid, self.out / "previews" / f"step_{self.step:07d}.png")
        (self.out / "previews" / "prompts.txt").write_text("\n".join(prompts) + "\n")

    # -------------------------------------------------------------- the loop
    def draw_global_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Data indices, caption dropout, sigmas and noise of the whole global batch. Every
        process draws all of it from the same generator, so the randomness of an image depends on
        its position in the data stream, not on which process trains on it."""
        gb = self.global_batch
        idx = batch_indices(len(self.data), self.images_seen, gb, self.cfg.seed)
        drop = torch.rand(gb, generator=self.gen) < self.cfg.caption_dropout
        sigma = self.loss_fn.sample_sigma(gb, self.gen)
        noise = torch.randn((gb, *self.data.images.shape[1:]), generator=self.gen)
        return idx, drop, sigma, noise

    def micro_step(self, idx, drop, sigma, noise) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its per-example losses."""
        dev = self.device
        images = self.data.images[idx].to(dev).contiguous(memory_format=torch.channels_last)
        captions = ["" if d else self.data.captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
        with torch.autocast(dev.split(":")[0], dtype=self.amp or torch.float32, enabled=self.amp is not None):
            losses = self.forward(images, captions, sigma.to(dev), noise.to(dev))
        # Mean over the global batch: each process sums its micro-batches / accum here, and
        # DistributedDataParallel averages the processes' gradients.
        (losses.mean() / self.cfg.grad_accum).backward()
        return losses.detach()

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on one global batch; returns this process's mean loss and the
        global gradient norm before clipping."""
        cfg = self.cfg
        idx, drop, sigma, noise = self.draw_global_batch()
        lr = learning_rate(self.step, cfg.lr, cfg.warmup_steps, cfg.lr_schedule, cfg.steps, cfg.lr_ref_steps)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        parts = micro_batches(cfg.batch_size, cfg.grad_accum, self.world.rank)
        losses = []
        for a, part in enumerate(parts):
            # Gradients are exchanged once per step, after the last micro-batch.
            last = a == len(parts) - 1
            with contextlib.nullcontext() if last or self.world.size == 1 else self.forward.no_sync():
                losses.append(self.micro_step(idx[part], drop[part], sigma[part], noise[part]))
        losses = torch.cat(losses)
        grad_norm = clip_gradients(self.model.parameters(), cfg.clip_grad)
        if not torch.isfinite(grad_norm):  # the same on every process: DDP averaged the gradients
            raise DiffuseError(self._nonfinite_message(losses))
        self._watch_spikes(grad_norm, losses, torch.cat([sigma[p] for p in parts]))
        self.opt.step()
        self.images_seen += self.global_batch
        self.step += 1
        update_ema(self.ema, self.model, ema_beta(self.global_batch, self.images_seen, cfg.ema_halflife_kimg,
                                                  cfg.ema_rampup))
        return losses.mean(), grad_norm.detach()

    def _step_on_disk(self) -> int | None:
        """The step of the checkpoint in the run directory, or None before the first one."""
        return read_config(self.out)["training"]["steps"] if (self.out / CONFIG_FILE).exists() else None

    def _nonfinite_message(self, losses: torch.Tensor) -> str:
        what = "loss" if not torch.isfinite(losses).all() else "gradient"
        saved = self._step_on_disk()
        kept = f"the checkpoint of step {saved} in {self.out} is intact" if saved is not None else "nothing was saved"
        return (f"the {what} became nan or inf at step {self.step + 1}; the weights were not updated and {kept}: "
                f"resume it with --resume and a lower --lr or --clip-grad 1")

    def _watch_spikes(self, grad_norm: torch.Tensor, losses: torch.Tensor, sigma: torch.Tensor) -> None:
        """Log a gradient spike with the layers it sits in and the noise level of the worst example."""
        spike, median = self.spikes.is_spike(grad_norm.item())
        if spike and self.world.is_main:
            worst = int(losses.argmax())
            layers = list(layer_grad_norms(self.model).items())[:3]
            self.log.write({"event": "grad_spike", "step": self.step + 1, "grad_norm": grad_norm.item(),
                       "median_grad_norm": median, "top_layers": [[k, round(v, 4)] for k, v in layers],
                       "worst_sigma": sigma[worst].item(), "worst_loss": losses[worst].item(),
                       "batch_loss": losses.mean().item()})

    def keep_going(self, deadline: float, stop: StopRequest) -> bool:
        """Whether to take another step; all processes agree, or one would wait for the others forever."""
        if self.cfg.steps is not None and self.step >= self.cfg.steps:
            return False
        if deadline == math.inf and self.world.size == 1:
            return not stop.requested
        return not any_rank(time.monotonic() >= deadline or stop.requested, self.device)

    def checkpoint(self) -> None:
        self.saved_step = self.step
        if self.world.is_main:
            try:
                self.save()
            except OSError as e:  # a full disk, a file-size limit, a folder gone: one line, the old one kept
                had = self._step_on_disk()
                kept = f"the checkpoint of step {had} is intact" if had is not None else "no earlier checkpoint exists"
                raise DiffuseError(f"could not write the checkpoint of step {self.step} to {self.out} "
                                   f"({e.strerror or e}); {kept}: free space and continue with --resume") from None
            self.best.score(self.step, self.ema, self.save_best)
        barrier()  # when any process returns, the checkpoint is complete

    def run(self) -> Path:
        cfg, main = self.cfg, self.world.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                self.best.catch_up(self.step, self.ema, self.save_best)
        deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes else math.inf
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and main), unit="step",
                   dynamic_ncols=True)
        window_t, window_imgs, losses, norms = time.monotonic(), 0, [], []
        with StopRequest() as stop:
            while self.keep_going(deadline, stop):
                t0 = time.monotonic()
                loss, grad_norm = self.train_step()
                losses.append(loss)
                norms.append(grad_norm)
                self.elapsed += time.monotonic() - t0
                window_imgs += self.global_batch
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    loss = mean_over_ranks(torch.stack(losses).mean()).item()  # every process takes part
                    gn = torch.stack(norms)  # the same on every process: DDP averaged the gradients
                    now = time.monotonic()
                    ips = window_imgs / max(now - window_t, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4f}", grad=f"{gn.mean():.3f}", img_s=f"{ips:.1f}")
                    if main:
                        self.log.write({"step": self.step, "images": self.images_seen, "loss": loss, "images_per_s": ips,
                                   "lr": self.opt.param_groups[0]["lr"], "grad_norm": gn.mean().item(),
                                   "grad_norm_max": gn.max().item(), "elapsed_s": round(self.elapsed, 2),
                                   "global_batch": self.global_batch, "processes": self.world.size})
                    window_t, window_imgs, losses, norms = now, 0, [], []
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                if main and cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.preview()
            bar.close()
            if self.saved_step != self.step:  # the loop may have just saved this very step
                self.checkpoint()
        if stop.requested:
            raise KeyboardInterrupt  # saved at a step boundary: --resume continues exactly
        if main and cfg.preview_every:
            self.preview()
        return self.out


def train(cfg: TrainConfig, credentials=None) -> Path:
    """Train in this process, or in this process's share of a torchrun job; previews are signed
    with `credentials` (None: unsigned)."""
    world = World.from_env()
    device = resolve_device(cfg.device, world.local_rank)
    use_device(device)
    with process_group(world, device):
        return Trainer(cfg, world, device, credentials).run()
