"""Training and sampling throughput per network preset, precision and memory format.

    .venv/bin/python benchmarks/throughput.py [--presets tiny small medium] [--steps 6] [--device cuda --batch 256]

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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(model, data, batch, steps, amp, channels_last, device="cpu"):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn, g = EDMLoss(), torch.Generator().manual_seed(0)
    y = data.images[:batch].to(device).contiguous(memory_format=fmt)

    def step():
        sigma, noise = loss_fn.sample_sigma(batch, g).to(device), torch.randn(y.shape, generator=g).to(device)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, y, model.encode(data.captions[:batch]), sigma, noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN and cuDNN pick kernels on first use)
    synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - t)


def sample_rate(model, n, steps, device="cpu", amp=False):
    pipe = Pipeline(model.to(device).eval(), watermark=False)  # unmarked, as its tables were made (before the start-noise watermark)
    req = GenerateRequest("a red circle", n=n, seed=0, steps=steps, guidance=3.0)
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
        pipe.sample(GenerateRequest("a red circle", n=n, seed=0, steps=2))
        synchronize(device)
        t = time.perf_counter()
        pipe.sample(req)
        synchronize(device)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "medium"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--sample-n", type=int, default=16, help="images per sampling batch")
    a = ap.parse_args()
    if a.device == "cuda":
        return main_cuda(a)
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


def main_cuda(a):
    """On a GPU: channels_last throughout (cuDNN's tensor-core layout), fp32 (TF32 matmuls, as
    diffuse sets) against bf16 autocast, for training and for sampling."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    data = load_shapes(32, n=a.batch)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch}, 32x32, "
          f"{a.steps} timed steps after one warm-up\n")
    print(f"| preset | params | train fp32/TF32 img/s | train bf16 img/s | sample fp32 img/s | sample bf16 img/s "
          f"(n={a.sample_n}, 20 steps dpmpp_2m, cfg 3) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in a.presets:
        torch.manual_seed(0)
        model = TextToImageModel.create(preset(name), data.captions)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rates = [train_rate(model, data, a.batch, a.steps, amp, True, "cuda") for amp in (False, True)]
        model = model.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            samples = [sample_rate(model, a.sample_n, 20, "cuda", amp) for amp in (False, True)]
        print(f"| {name} | {params:.2f}M | {rates[0]:.0f} | {rates[1]:.0f} | {samples[0]:.0f} | {samples[1]:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
