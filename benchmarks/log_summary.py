"""One Markdown row per training run from its log.jsonl: how far it got, how fast, and whether
it diverged (the loss jumping and staying up), with the gradient spikes the trainer logged.

    .venv/bin/python benchmarks/log_summary.py runs/a runs/b ... [--plot curves.png]

With --plot, a picture of each run against the images it trained on: the training loss and the
gradient norm (median of each window of 500 steps, with the window's largest single-step norm
shaded above it) and the probe loss of each checkpoint (fixed images and noise, EMA weights).

A run is called diverged when the median loss of a later window of 500 steps is over 2x the
lowest such window before it (the 60-minute default run of issue 23 went from 0.10 to ~0.6).
"""

import argparse
import json
import statistics
from pathlib import Path


HEADER = ("| run | steps | images | img/s (median) | loss (last 10%, median) | max grad norm | diverged | grad spikes |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def read_log(run: Path) -> list[dict]:
    if not (run / "log.jsonl").is_file():
        return []
    return [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r.strip()]


def read_rows(run: Path) -> tuple[list[dict], list[dict]]:
    rows = read_log(run)
    return [r for r in rows if "loss" in r], [r for r in rows if r.get("event") == "grad_spike"]


def rows_per_window(rows: list[dict], window: int) -> int:
    """How many log rows (one per `log_every` steps) make a window of `window` steps."""
    return max(1, window // max(1, rows[1]["step"] - rows[0]["step"])) if len(rows) > 1 else 1


def windows(rows: list[dict], window: int = 500) -> list[tuple[int, float, float, float]]:
    """(images at the window's end, median loss, median and largest gradient norm) per window of
    `window` steps, from the log's rows (one per `log_every` steps). A run resumed from a
    checkpoint logs the steps after it again; the later rows count."""
    latest = {r["step"]: r for r in rows}
    rows = [latest[k] for k in sorted(latest)]
    per = rows_per_window(rows, window)
    out = []
    for i in range(0, len(rows), per):
        w = rows[i:i + per]
        gn = [r["grad_norm"] for r in w if "grad_norm" in r]
        gmax = [r.get("grad_norm_max", r.get("grad_norm")) for r in w if "grad_norm" in r]
        out.append((w[-1]["images"], statistics.median(r["loss"] for r in w),
                    statistics.median(gn) if gn else float("nan"), max(gmax) if gmax else float("nan")))
    return out


def probe_losses(run: Path) -> list[tuple[int, float]]:
    """(step, probe loss) of each checkpoint the run logged, the later where a resume repeated one."""
    found = {r["step"]: r["probe_loss"] for r in read_log(run)
             if r.get("event") == "checkpoint" and r.get("probe_loss") is not None}
    return sorted(found.items())


def plot(runs: list[Path], path: Path) -> None:
    """Training loss, gradient norm and probe loss of each run against images trained on."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a_loss, a_grad, a_probe) = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        rows, _ = read_rows(run)
        if not rows:
            continue
        w = windows(rows)
        images = [x[0] for x in w]
        a_loss.plot(images, [x[1] for x in w], label=run.name)
        line, = a_grad.plot(images, [x[2] for x in w], label=f"{run.name} (median)")
        a_grad.fill_between(images, [x[2] for x in w], [x[3] for x in w], color=line.get_color(), alpha=0.2)
        # the probe's steps become images through the log's own step-to-images rows
        per_step = {r["step"]: r["images"] for r in rows}
        probes = [(per_step.get(s, s * rows[-1]["images"] / rows[-1]["step"]), v) for s, v in probe_losses(run)]
        if probes:
            a_probe.plot(*zip(*probes), "o-", label=run.name)
    for ax, title in ((a_loss, "training loss (median per 500 steps)"),
                      (a_grad, "gradient norm (median; shaded: window's largest)"),
                      (a_probe, "probe loss at each checkpoint (EMA weights)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("images trained on")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def divergence(rows: list[dict], window: int = 500) -> tuple[int | None, float]:
    """The first step whose trailing-window median loss is > 2x the best earlier window, and the
    worst such ratio."""
    if not rows:
        return None, 0.0
    per = rows_per_window(rows, window)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders holding a log.jsonl")
    ap.add_argument("--plot", help="also draw loss, gradient norm and probe loss into this PNG")
    a = ap.parse_args()
    runs = a.runs
    print(HEADER)
    for r in runs:
        print(summary(Path(r)))
    if a.plot:
        plot([Path(r) for r in runs], Path(a.plot))
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
