"""A soak of the HTTP server: mixed traffic from several clients for a long time, and whether its
resources stay flat (issue 24, item 4).

    .venv/bin/python benchmarks/serve_soak.py [--minutes 30] [--clients 6] [--model shapes] [--out outputs/soak]

Starts `diffuse serve` as its own process (as it runs for real) with an output folder limited to
`--keep 200` images, then runs `--clients` threads, each an httpx client drawing its next action
from a seeded mix until the time is up:

- generate (n 1-2, url or b64_json; a url is fetched back), edit (image-to-image), inpaint (a mask),
  variation, a stream read to its end, a stream left after two events (the server cancels the job),
- bad requests (each must get a 4xx): broken JSON, wrong types, huge numbers, a broken image, an
  unknown model, a path out of the output folder, a bad size and seed; and a prompt of 100,000
  characters (cut to what the text encoder reads, and answered).

Every `--sample-s` seconds (default 60) it reads the server's resident memory (VmRSS), open file
descriptors, threads and the output folder's size and file count from /proc and the disk. At the
end it writes samples.jsonl, soak.png (the four lines over time) and a Markdown table: answers by
action and status (a 5xx is a bug; a bad request must get a 4xx), and each resource's first and
last third (after a warm-up of two samples) with the verdict "flat" when the last third's median
is within the tolerance of the first third's (RSS 10%, descriptors and threads +-5, folder at or
under its limit plus one image per client being written at that instant). Every setting the table depends on is pinned here or printed with it.
"""

import argparse
import io
import json
import os
import platform
import random
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import free_port, rss_mib, start_server  # noqa: E402  (one starter, /proc reader, port picker)

KEEP = 200          # the output folder's limit in images (diffuse serve --keep)
QUEUE = 8           # jobs waiting behind the running one before 429
STEPS = (4, 8)      # sampler steps of the good requests: enough work to overlap, short enough to be many
PROMPTS = ["a red circle on a white background", "a large blue square on a black background",
           "a yellow star on a navy background", "a green triangle", "a taxi, openmoji style", "a cat face"]
MIX = {"generate": 30, "edit": 12, "inpaint": 8, "variation": 8, "stream": 12, "stream_left": 10, "long_prompt": 2,
       **{f"bad:{k}": 3 for k in ("broken_json", "wrong_types", "huge_numbers", "broken_image", "unknown_model",
                                  "path_escape", "bad_size_seed")}}


def png_bytes(rng: random.Random, mask: bool = False) -> bytes:
    """A 32x32 picture: a coloured block on a coloured ground, or a mask (white = repaint)."""
    img = Image.new("L" if mask else "RGB", (32, 32), 0 if mask else tuple(rng.randrange(256) for _ in range(3)))
    x, y = rng.randrange(4, 16), rng.randrange(4, 16)
    img.paste(255 if mask else tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 12, y + 12))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def good_fields(rng: random.Random) -> dict:
    return {"prompt": rng.choice(PROMPTS), "steps": rng.randint(*STEPS), "seed": rng.randrange(2 ** 32)}


BAD = {  # each must get a 4xx
    "broken_json": lambda c: c.post("/v1/images/generations", content=b"{not json",
                                    headers={"Content-Type": "application/json"}),
    "wrong_types": lambda c: c.post("/v1/images/generations", json={"prompt": 7, "n": "two"}),
    "huge_numbers": lambda c: c.post("/v1/images/generations", json={"prompt": "x", "n": 10 ** 9, "steps": 10 ** 12}),
    "broken_image": lambda c: c.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", b"\x89PNG broken")}),
    "unknown_model": lambda c: c.post("/v1/images/generations", json={"prompt": "x", "model": "no-such-model"}),
    "path_escape": lambda c: c.get("/v1/images/..%2F..%2F..%2Fetc%2Fpasswd"),
    "bad_size_seed": lambda c: c.post("/v1/images/generations", json={"prompt": "x", "size": "100000x3", "seed": -1}),
}


def act(client: httpx.Client, action: str, rng: random.Random) -> int:
    """Runs one action; its final HTTP status."""
    f = good_fields(rng)
    if action == "generate":
        body = {**f, "n": rng.randint(1, 2), "response_format": rng.choice(["url", "b64_json"])}
        r = client.post("/v1/images/generations", json=body)
        if r.status_code == 200 and body["response_format"] == "url":
            for item in r.json()["data"]:
                got = client.get(item["url"])
                if got.status_code >= 500 or (got.status_code != 200 and got.status_code != 404):
                    return got.status_code  # 404: pruned by --keep between the answer and the fetch
        return r.status_code
    if action in ("edit", "inpaint", "variation"):
        files = {"image": ("in.png", png_bytes(rng), "image/png")}
        if action == "inpaint":
            files["mask"] = ("mask.png", png_bytes(rng, mask=True), "image/png")
        data = {k: str(v) for k, v in f.items()}
        if action == "variation":
            data.pop("prompt")
            return client.post("/v1/images/variations", data=data, files=files).status_code
        return client.post("/v1/images/edits", data={**data, "strength": "0.6"}, files=files).status_code
    if action in ("stream", "stream_left"):
        with client.stream("POST", "/v1/diffuse/stream", json=f) as r:
            if r.status_code != 200:
                return r.status_code
            events = 0
            for line in r.iter_lines():
                events += line.startswith("event:")
                if action == "stream_left" and events >= 2:
                    break  # leave mid-job: closing the connection must cancel it and free everything
            return r.status_code
    if action == "long_prompt":  # 100,000 characters: cut to what the text encoder reads, and answered
        return client.post("/v1/images/generations", json={**f, "prompt": "a red circle " * 8000}).status_code
    return BAD[action.removeprefix("bad:")](client).status_code


def client_loop(base: str, seed: int, deadline: float, counts: Counter, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    actions, weights = list(MIX), list(MIX.values())
    with httpx.Client(base_url=base, timeout=300) as client:
        while time.monotonic() < deadline:
            action = rng.choices(actions, weights)[0]
            try:
                status = act(client, action, rng)
            except httpx.TransportError as e:
                status = f"transport {type(e).__name__}"
            with lock:
                counts[(action, status)] += 1
            if status == 429:
                time.sleep(0.5)


def folder_size(out: Path) -> tuple[int, int]:
    files = [p for p in out.iterdir() if p.is_file()] if out.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def sample(pid: int, out: Path, t0: float) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    files, size = folder_size(out)
    return {"t_min": round((time.monotonic() - t0) / 60, 2), "rss_mib": round(rss_mib(pid), 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads, "folder_files": files,
            "folder_mib": round(size / 2 ** 20, 3)}


def verdicts(samples: list[dict], in_flight: int = 0) -> list[tuple[str, float, float, bool]]:
    """(resource, first third's median, last third's median, flat?) after two warm-up samples. The
    folder may hold `in_flight` images over its limit at an instant: each answer is written first
    and the oldest removed just after (the 30-minute run of 2026-12-04 caught 201 once)."""
    body = samples[2:] if len(samples) > 5 else samples
    k = max(1, len(body) // 3)
    first, last = body[:k], body[-k:]
    rows = []
    for key, ok in (("rss_mib", lambda a, b: b <= a * 1.10), ("fds", lambda a, b: abs(b - a) <= 5),
                    ("threads", lambda a, b: abs(b - a) <= 5), ("folder_files", lambda a, b: b <= KEEP + in_flight)):
        a, b = statistics.median(s[key] for s in first), statistics.median(s[key] for s in last)
        within = all(s[key] <= KEEP + in_flight for s in body) if key == "folder_files" else True
        rows.append((key, a, b, ok(a, b) and within))
    return rows


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    t = [s["t_min"] for s in samples]
    for ax, (key, label) in zip(axes, [("rss_mib", "resident memory (MiB)"), ("fds", "open file descriptors"),
                                       ("threads", "threads"), ("folder_files", f"images kept (limit {KEEP})")]):
        ax.plot(t, [s[key] for s in samples], marker=".")
        ax.set_xlabel("minutes")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--sample-s", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0, help="seed of the clients' action mix")
    ap.add_argument("--out", default="outputs/soak")
    a = ap.parse_args()
    run = Path(a.out)
    run.mkdir(parents=True, exist_ok=True)
    images = run / "images"
    shutil.rmtree(images, ignore_errors=True)  # the folder's size is measured: start it empty
    port = free_port()
    proc = start_server(a.model, port, QUEUE, images, "--keep", str(KEEP), stderr=open(run / "server.log", "w"),
                        seconds=180)
    t0 = time.monotonic()
    deadline = t0 + a.minutes * 60
    counts, lock = Counter(), threading.Lock()
    threads = [threading.Thread(target=client_loop, args=(f"http://127.0.0.1:{port}", a.seed * 1000 + k, deadline,
                                                          counts, lock), daemon=True) for k in range(a.clients)]
    samples = [sample(proc.pid, images, t0)]
    for th in threads:
        th.start()
    try:
        while time.monotonic() < deadline:
            time.sleep(min(a.sample_s, max(0.0, deadline - time.monotonic())))
            samples.append(sample(proc.pid, images, t0))
        for th in threads:
            th.join(timeout=300)
        time.sleep(2)
        samples.append(sample(proc.pid, images, t0))  # after the last client left
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    plot(samples, run / "soak.png")

    print(f"# serve_soak: {a.minutes:g} min, {a.clients} clients, model {a.model}, --keep {KEEP}, --queue-size {QUEUE}, "
          f"steps {STEPS[0]}-{STEPS[1]}, mix seed {a.seed}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| action | answers by status |\n| --- | --- |")
    for action in MIX:
        by = sorted(((str(s), n) for (act_, s), n in counts.items() if act_ == action))
        print(f"| {action} | {', '.join(f'{s}: {n}' for s, n in by) or '-'} |")
    fives = sum(n for (_, s), n in counts.items() if isinstance(s, int) and s >= 500)
    bad_ok = all(isinstance(s, int) and 400 <= s < 500 for (act_, s) in counts if act_.startswith("bad:"))
    print(f"\n5xx answers: {fives}; every bad request got a 4xx: {bad_ok}; requests in all: {sum(counts.values())}\n")
    print("| resource | first third (median) | last third (median) | flat |\n| --- | --- | --- | --- |")
    for key, first, last, flat in verdicts(samples, in_flight=a.clients):
        print(f"| {key} | {first:g} | {last:g} | {'yes' if flat else 'NO'} |")
    print(f"\nsamples: {run / 'samples.jsonl'}; plot: {run / 'soak.png'}")


if __name__ == "__main__":
    main()
