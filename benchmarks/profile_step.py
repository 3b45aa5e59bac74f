"""Where a training step's time goes, and how close it comes to the machine's peak (issue 23, lever 1).

    .venv/bin/python benchmarks/profile_step.py [--batch 32] [--steps 8] [--top 12]

For the `small` preset (the default network) and for Hugging Face diffusers' UNet2DConditionModel
of about the same size and FLOPs (benchmarks/time_to_quality.py's baseline, built as a diffusers
user would: block_out_channels (32, 64, 64), one layer per block, cross-attention on the lower
two levels), in fp32 and under bf16 autocast, one run measures:

- training images/s (forward, backward, AdamW; batch 32 at 32x32, channels_last as diffuse trains),
  the median of `--steps` timed steps after two warm-ups;
- FLOPs per image of forward + backward (torch.utils.flop_counter, matmuls and convolutions);
- the machine's own matmul peak in each precision (2048x2048 products on all threads), and the
  share of it each network reaches (model FLOP utilisation, MFU);
- torch.profiler's table of the ops that take the most self CPU time in one step.

Every setting the tables depend on is pinned here (the preset, batch, image size, thread count
printed with them). diffusers is needed only for its rows: `.venv/bin/pip install diffusers`.
"""

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from diffuse.data import load_shapes
from diffuse.denoiser import EDMLoss
from diffuse.model import TextToImageModel
from diffuse.networks import preset

SIZE, PRESET = 32, "small"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of an n x n x n matrix product in `dtype`, the best of `reps` after a warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class DiffuseStep:
    name = f"diffuse {PRESET}"

    def __init__(self, data, batch: int):
        torch.manual_seed(0)
        self.model = TextToImageModel.create(preset(PRESET), data.captions).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.loss_fn, self.g = EDMLoss(), torch.Generator().manual_seed(0)
        self.y = data.images[:batch].contiguous(memory_format=torch.channels_last)
        self.captions, self.batch = data.captions[:batch], batch

    def __call__(self, amp: bool) -> None:
        sigma = self.loss_fn.sample_sigma(self.batch, self.g)
        noise = torch.randn(self.y.shape, generator=self.g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = self.loss_fn(self.model, self.y, self.model.encode(self.captions), sigma, noise).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def params(self) -> int:
        return sum(p.numel() for p in self.model.denoiser.parameters())


class DiffusersStep:
    name = "diffusers UNet2DConditionModel"

    def __init__(self, data, batch: int):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        torch.manual_seed(0)
        self.text = TextToImageModel.create(preset(PRESET), data.captions)
        width = self.text.text_encoder.cfg.width
        self.unet = UNet2DConditionModel(
            sample_size=SIZE, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=width, attention_head_dim=2, norm_num_groups=8).to(memory_format=torch.channels_last)
        self.sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        self.opt = torch.optim.AdamW(list(self.unet.parameters()) + list(self.text.text_encoder.parameters()), lr=1e-4)
        self.g = torch.Generator().manual_seed(0)
        self.y = data.images[:batch].contiguous(memory_format=torch.channels_last)
        self.captions, self.batch = data.captions[:batch], batch

    def __call__(self, amp: bool) -> None:
        noise = torch.randn(self.y.shape, generator=self.g)
        t = torch.randint(0, 1000, (self.batch,), generator=self.g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            cond = self.text.encode(self.captions)
            pred = self.unet(self.sched.add_noise(self.y, noise, t), t, cond.tokens,
                             encoder_attention_mask=cond.mask.float()).sample
            loss = F.mse_loss(pred.float(), noise)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def params(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def flops_per_image(step, batch: int) -> float:
    with FlopCounterMode(display=False) as counter:
        step(False)
    return counter.get_total_flops() / batch


def images_per_s(step, amp: bool, batch: int, steps: int) -> float:
    for _ in range(2):
        step(amp)
    return batch / statistics.median(timed(lambda: step(amp)) for _ in range(steps))


def op_table(step, amp: bool, top: int) -> list[str]:
    step(amp)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(amp)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| op | calls | self CPU ms | share |", "| --- | --- | --- | --- |"]
    for e in events[:top]:
        lines.append(f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | {e.self_cpu_time_total / total:.1%} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-diffusers", action="store_true")
    a = ap.parse_args()
    data = load_shapes(SIZE, n=max(256, a.batch), seed=0)
    peak = {False: matmul_peak(torch.float32), True: matmul_peak(torch.bfloat16)}
    print(f"# profile_step: batch {a.batch}, {SIZE}x{SIZE}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"matmul peak (2048^3, all threads): fp32 {peak[False]:.0f} GFLOP/s, bf16 {peak[True]:.0f} GFLOP/s\n")
    steps = [DiffuseStep(data, a.batch)]
    if not a.no_diffusers:
        try:
            steps.append(DiffusersStep(data, a.batch))
        except ImportError:
            print("(diffusers not installed: its rows are left out)\n")
    print("| network | params | GFLOP / image (fwd+bwd) | precision | train img/s | GFLOP/s | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    tables = []
    for step in steps:
        flops = flops_per_image(step, a.batch)
        for amp in (False, True):
            rate = images_per_s(step, amp, a.batch, a.steps)
            achieved = rate * flops / 1e9
            print(f"| {step.name} | {step.params() / 1e6:.2f}M | {flops / 1e9:.3f} | {'bf16' if amp else 'fp32'} | "
                  f"{rate:.1f} | {achieved:.0f} | {achieved / peak[amp]:.1%} |")
            tables.append((f"{step.name}, {'bf16 autocast' if amp else 'fp32'}", op_table(step, amp, a.top)))
    for title, lines in tables:
        print(f"\n### {title}: the ops with the most self CPU time in one step\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
