"""One Markdown row per training run from its log.jsonl: how far it got, how fast, and whether
it diverged (the loss jumping and staying up), with the gradient spikes the trainer logged.

    .venv/bin/python benchmarks/log_summary.py runs/a runs/b ...

A run is called diverged when the median loss of a later window of 500 steps is over 2x the
lowest such window before it (the 60-minute default run of issue 23 went from 0.10 to ~0.6).
"""

import json
import statistics
import sys
from pathlib import Path


def read_rows(run: Path) -> tuple[list[dict], list[dict]]:
    if not (run / "log.jsonl").is_file():
        return [], []
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r.strip()]
    return [r for r in rows if "loss" in r], [r for r in rows if r.get("event") == "grad_spike"]


def divergence(rows: list[dict], window: int = 500) -> tuple[int | None, float]:
    """The first step whose trailing-window median loss is > 2x the best earlier window, and the
    worst such ratio."""
    if not rows:
        return None, 0.0
    per = max(1, window // max(1, rows[1]["step"] - rows[0]["step"] if len(rows) > 1 else 1))
    best, first, worst = float("inf"), None, 0.0
    for i in range(per, len(rows) + 1, per):
        med = statistics.median(r["loss"] for r in rows[i - per:i])
        if best < float("inf"):
            ratio = med / best
            worst = max(worst, ratio)
            if ratio > 2 and first is None:
                first = rows[i - 1]["step"]
        best = min(best, med)
    return first, worst


def summary(run: Path) -> str:
    rows, spikes = read_rows(run)
    if not rows:
        return f"| {run.name} | no steps logged | | | | | | |"
    last = rows[-1]
    ips = statistics.median(r["images_per_s"] for r in rows[len(rows) // 4:] or rows)
    gn = [r.get("grad_norm_max", float("nan")) for r in rows]
    first, worst = divergence(rows)
    tail = statistics.median(r["loss"] for r in rows[-max(1, len(rows) // 10):])
    spike = spikes[0] if spikes else None
    spike_txt = (f"{len(spikes)}; first at step {spike['step']}: |g| {spike['grad_norm']:.3g} "
                 f"(median {spike['median_grad_norm']:.3g}), sigma {spike['worst_sigma']:.3g}, "
                 f"{spike['top_layers'][0][0]}") if spike else "0"
    return (f"| {run.name} | {last['step']} | {last['images']} | {ips:.0f} | {tail:.4f} | {max(gn):.3g} | "
            f"{'at step ' + str(first) if first else 'no'} (worst {worst:.2f}x) | {spike_txt} |")


def main(runs: list[str]) -> None:
    print("| run | steps | images | img/s (median) | loss (last 10%, median) | max grad norm | diverged | "
          "grad spikes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(summary(Path(r)))


if __name__ == "__main__":
    main(sys.argv[1:])
