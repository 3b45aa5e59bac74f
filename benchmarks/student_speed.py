"""Images per second of distilled students against their teacher (issue 21).

    .venv/bin/python benchmarks/student_speed.py MODEL [MODEL ...] [--batch 16] [--repeats 3]

Each model draws with its own settings: a distilled student (diffuse distill) with its steps,
sampler and schedule and guidance as its input (one network pass per step); any other model with
the settings pinned below, the issue's teacher settings (20 steps dpmpp_2m, guidance 2, two
passes per step). A consistency student is timed at each of --consistency-steps. Two figures per
row: the latency of one image alone (what a user of the web page waits) and images per second in
batches of --batch (what the server's batching and the evaluator get), each the best of
--repeats after one warm-up. Prompts from the shapes captions, seeds 0.. (speed does not depend
on them). Prints a Markdown table.
"""

import argparse
import time

import torch

from diffuse import Pipeline

TEACHER = dict(steps=20, sampler="dpmpp_2m", schedule="karras", guidance=2.0)  # pinned: the teacher
STUDENT_GUIDANCE = 2.0
PROMPTS = ["a red circle on a white background", "a large blue square on a black background",
           "a small yellow star on a navy background", "a green triangle on a gray background"]


def settings_of(pipe: Pipeline, steps: int | None = None) -> dict:
    if not pipe.student:
        return dict(TEACHER)
    return {**pipe.defaults, "guidance": STUDENT_GUIDANCE, **({"steps": steps} if steps else {})}


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on first use
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def row(pipe: Pipeline, settings: dict, batch: int, repeats: int) -> tuple[float, float]:
    one = pipe.request(PROMPTS[0], seed=0, **settings)
    many = [pipe.request(PROMPTS[k % len(PROMPTS)], seed=k, **settings) for k in range(batch)]
    alone = best_seconds(lambda: pipe.sample(one), repeats)
    batched = best_seconds(lambda: pipe.sample_batch(many), repeats)
    return alone, batch / batched


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--consistency-steps", type=int, nargs="+", default=[1, 2, 4])
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"| model | steps, sampler | network passes per image | one image alone (s) | images/s in batches of {a.batch} |")
    print("| --- | --- | --- | --- | --- |")
    for name in a.models:
        pipe = Pipeline.load(name, watermark=True)
        runs = ([settings_of(pipe, s) for s in a.consistency_steps] if pipe.student and pipe.student.get("any_steps")
                else [settings_of(pipe)])
        for settings in runs:
            alone, rate = row(pipe, settings, a.batch, a.repeats)
            passes = settings["steps"] * (1 if pipe.student else 2)
            print(f"| {name} | {settings['steps']} {settings['sampler']} | {passes} | {alone:.3f} | {rate:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
