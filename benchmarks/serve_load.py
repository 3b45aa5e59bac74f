"""The HTTP server under load: many concurrent requests against its one model worker.

    .venv/bin/python benchmarks/serve_load.py MODEL [--requests 200] [--steps 2] [--queue-size 8]
                                              [--max-batch 1 16]

Starts `diffuse serve` as its own process on a free loopback port (as it runs for real: the
client's event loop does not share the server's), then fires the requests all at once from one
httpx.AsyncClient as POST /v1/images/generations, twice:
- "no retry": every answer is counted as it comes, so a full queue shows as 429s;
- "retry": a client that gets a 429 waits the Retry-After it was given and tries again, until
  every request has its image.
Once per --max-batch value (the server's batching of waiting jobs with the same settings, issue
21; 1 = one job at a time, as before), each its own server, in one run. The server runs with
--limit-concurrency above --requests: its default of 64 (issue 24, against hostile clients)
answers the rest 503 at once, which is what it is for but not what this measures. Prints a Markdown table
(paste it into benchmarks/RESULTS.md with the date and machine): answers
by status (5xx must be 0), latency p50/p99 of all answers and of the 200s, images/s over the
phase, and the server's resident memory (VmRSS) after start-up and after each phase.
"""

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (no psutil needed)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(model: str, port: int, queue_size: int, out: str, *extra: str, stderr=subprocess.DEVNULL,
                 seconds: float = 120) -> subprocess.Popen:
    """`diffuse serve` as its own process with `extra` flags, once /healthz answers (serve_soak.py
    and tests/test_hostile.py start theirs here too)."""
    cmd = [sys.executable, "-m", "diffuse", "serve", "--model", model, "--port", str(port), "--output-dir", str(out),
           "--queue-size", str(queue_size), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


async def one(client: httpx.AsyncClient, body: dict, retry: bool) -> tuple[int, float, int]:
    """(final status, seconds from first try to final answer, 429s seen on the way)."""
    start, rejected = time.perf_counter(), 0
    while True:
        r = await client.post("/v1/images/generations", json=body)
        if r.status_code != 429 or not retry:
            return r.status_code, time.perf_counter() - start, rejected
        rejected += 1
        await asyncio.sleep(float(r.headers["Retry-After"]))


async def phase(base: str, n: int, steps: int, retry: bool) -> dict:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=600) as client:
        # guidance 3 pinned: the tables in RESULTS were made with it, before the default became 2
        bodies = [{"prompt": "a red circle on a white background", "steps": steps, "seed": k, "guidance": 3.0,
                   "response_format": "b64_json"} for k in range(n)]
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, b, retry) for b in bodies))
        wall = time.perf_counter() - start
    statuses = Counter(s for s, _, _ in results)
    ok = sorted(t for s, t, _ in results if s == 200)
    every = sorted(t for _, t, _ in results)
    return {"statuses": statuses, "wall": wall, "ok": ok, "all": every, "retries": sum(r for _, _, r in results)}


def pct(xs: list[float], q: float) -> str:
    return f"{xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]:.2f}" if xs else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="checkpoint directory")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[1, 16],
                    help="the server's --max-batch, one server each (default: 1 16)")
    a = ap.parse_args()

    rows, notes = [], []
    for max_batch in a.max_batch:
        port = free_port()
        with tempfile.TemporaryDirectory() as out:
            proc = start_server(a.model, port, a.queue_size, out, "--max-batch", str(max_batch),
                                "--limit-concurrency", str(a.requests + 64))
            base = f"http://127.0.0.1:{port}"
            try:
                asyncio.run(phase(base, 1, a.steps, retry=False))  # warm-up: the first run picks kernels
                rss = {"start": rss_mib(proc.pid)}
                for name, retry in (("no retry", False), ("retry", True)):
                    rows.append((max_batch, name, asyncio.run(phase(base, a.requests, a.steps, retry)),
                                 rss_mib(proc.pid)))
                health = httpx.get(f"{base}/healthz").json()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        notes.append(f"max batch {max_batch}: RSS after start-up and warm-up {rss['start']:.0f} MiB; the worker's "
                     f"counts at the end {health['jobs']}, runs by jobs sharing them {health.get('batches')}")

    print(f"{a.requests} concurrent POST /v1/images/generations, {a.steps} steps dpmpp_2m, 1 image each, "
          f"queue {a.queue_size}; {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| max batch | phase | 200 | 429 | other 4xx | 5xx | 429s retried | p50 s (all) | p99 s (all) | p50 s (200) "
          "| p99 s (200) | images/s | RSS after, MiB |")
    print("| --- " * 13 + "|")
    for max_batch, name, r, rss_after in rows:
        s = r["statuses"]
        other = sum(v for k, v in s.items() if 400 <= k < 500 and k != 429)
        server_errors = sum(v for k, v in s.items() if k >= 500)
        print(f"| {max_batch} | {name} | {s[200]} | {s[429]} | {other} | {server_errors} | {r['retries']} | "
              f"{pct(r['all'], .5)} | {pct(r['all'], .99)} | {pct(r['ok'], .5)} | {pct(r['ok'], .99)} | "
              f"{s[200] / r['wall']:.1f} | {rss_after:.0f} |")
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
