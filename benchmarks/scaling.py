"""Training throughput with 1, 2, ... processes under torchrun (DistributedDataParallel).

    .venv/bin/python benchmarks/scaling.py --processes 1 2 --global-batch 16 --steps 40
    .venv/bin/python benchmarks/scaling.py --device cuda --processes 1 2 4 8 --batch 64 --preset medium

Strong scaling by default (the global batch stays --global-batch and is split across the
processes); --batch B keeps B images per process instead (weak scaling, what GPUs want). On CPU
each process gets cores / processes threads unless --threads says otherwise. Images/s comes from the run's log.jsonl, leaving out
the first logged window (warm-up). Prints a Markdown table for benchmarks/RESULTS.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def threads_for(processes: int, a) -> int:
    return a.threads or (max(1, (os.cpu_count() or 1) // processes) if a.device == "cpu" else 1)


def run(processes: int, batch: int, a, out: Path) -> float:
    threads = threads_for(processes, a)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "diffuse", "train", "--data", "shapes", "--data-size", str(a.data_size), "--out", str(out),
           "--preset", a.preset, "--batch-size", str(batch), "--steps", str(a.steps), "--device", a.device,
           "--preview-every", "0", "--checkpoint-every", "0", "--quiet"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()][1:]
    return sum(r["images_per_s"] for r in rows) / len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--global-batch", type=int, default=16, help="split across the processes (strong scaling)")
    ap.add_argument("--batch", type=int, help="images per process instead (weak scaling)")
    ap.add_argument("--steps", type=int, default=40, help="at least 20: the first 10 are warm-up")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data-size", type=int, default=2000)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="threads per process (default: CPUs / processes)")
    a = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {a.device}, preset {a.preset}, 32x32, {a.steps} steps\n")
    print("| processes | threads each | batch per process | global batch | images/s | vs first row |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for p in a.processes:
            batch = a.batch or a.global_batch // p
            ips = run(p, batch, a, Path(tmp) / f"p{p}")
            base = base or ips
            threads = threads_for(p, a)
            print(f"| {p} | {threads} | {batch} | {batch * p} | {ips:.1f} | {ips / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
