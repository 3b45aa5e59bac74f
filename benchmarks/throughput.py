"""Training and sampling throughput per network preset, precision and memory format.

    .venv/bin/python benchmarks/throughput.py [--presets tiny small medium] [--steps 6]

Prints a Markdown table (paste it into benchmarks/RESULTS.md with the date and machine). This is
what chose fp32 over bf16 autocast and channels_last for training on CPU.
"""

import argparse
import os
import platform
import time

import torch

from diffuse.data import load_shapes
from diffuse.denoiser import EDMLoss
from diffuse.model import TextToImageModel
from diffuse.networks import preset
from diffuse.pipeline import GenerateRequest, Pipeline


def train_rate(model, data, batch, steps, amp, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn, g = EDMLoss(), torch.Generator().manual_seed(0)

    def step():
        y = data.images[:batch].contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, y, model.encode(data.captions[:batch]), loss_fn.sample_sigma(batch, g),
                           torch.randn(y.shape, generator=g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN picks kernels on first use)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def sample_rate(model, n, steps):
    pipe = Pipeline(model.eval())
    req = GenerateRequest("a red circle", n=n, seed=0, steps=steps, guidance=3.0)
    pipe.sample(GenerateRequest("a red circle", n=n, seed=0, steps=2))
    t = time.perf_counter()
    pipe.sample(req)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "medium"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    data = load_shapes(32, n=a.batch)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {a.batch}, 32x32\n")
    print("| preset | params | train fp32 img/s | train fp32 channels_last | train bf16 autocast | sample img/s (20 steps dpmpp_2m, cfg 3) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in a.presets:
        torch.manual_seed(0)
        model = TextToImageModel.create(preset(name), data.captions)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rates = [train_rate(model, data, a.batch, a.steps, amp, cl) for amp, cl in ((False, False), (False, True), (True, False))]
        model = model.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            s = sample_rate(model, 16, 20)
        print(f"| {name} | {params:.2f}M | {rates[0]:.1f} | {rates[1]:.1f} | {rates[2]:.1f} | {s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
