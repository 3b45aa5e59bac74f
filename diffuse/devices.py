"""Where the math runs: `--device auto|cpu|cuda`, and the fast-math settings each device gets.

A checkpoint does not depend on the device it was trained on: safetensors weights are read onto
the CPU and then moved (checkpoint.load_checkpoint), so a model trained on a GPU generates on a
laptop, and the other way round.
"""

import re
from pathlib import Path

import torch

from .errors import DiffuseError

DEVICES = ("auto", "cpu", "cuda")


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str, local_rank: int = 0, gpus: int | None = None) -> str:
    """The torch device for `--device name` in the process with LOCAL_RANK `local_rank`.

    auto is CUDA when a GPU is visible, else the CPU. Under torchrun each process on a node takes
    the GPU of its LOCAL_RANK, so `torchrun --nproc_per_node=8` uses eight GPUs. `gpus` (default:
    what torch sees) is a parameter so the choice can be tested on a machine without a GPU."""
    gpus = visible_gpus() if gpus is None else gpus
    if name not in DEVICES:
        raise DiffuseError(f"unknown device {name!r}: choose {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and gpus == 0):
        return "cpu"
    if gpus == 0:
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
        raise DiffuseError(f"--device cuda: {why}; use --device cpu or auto")
    if local_rank >= gpus:
        raise DiffuseError(f"process {local_rank} on this node has no GPU of its own ({gpus} visible): "
                           f"start at most {gpus} processes per node")
    return f"cuda:{local_rank}"


def use_device(device: str) -> None:
    """Make `device` the current one. On CUDA, float32 matmuls and convolutions may use TF32
    tensor cores (10-bit mantissa, as bf16 autocast already accepts for most of the math)."""
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX, as Linux's /proc/cpuinfo
    lists them; False where that cannot be read), so that bf16 autocast trains more images/s than
    fp32: 1.4x at batch 32 on the 2-core AVX-512 BF16 CPU (benchmarks/RESULTS.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None
