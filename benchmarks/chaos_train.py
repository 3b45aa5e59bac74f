"""Training under kills (issue 24): SIGKILL a `diffuse train` run at random instants, resume it
each time, and check that nothing was lost.

    .venv/bin/python benchmarks/chaos_train.py [--kills 24] [--steps 60] [--seed 0] [--workdir DIR]

The run (tiny preset, 256 shapes, batch 8, a checkpoint every step so saves are frequent) is
started as `python -m diffuse train`, killed with SIGKILL, and started again with --resume
(or afresh when the kill came before its first checkpoint) until it has been killed --kills
times; the last start runs to the end. An uninterrupted run with the same seed and settings
trains beside it. Each kill is aimed one of three ways, in a shuffled plan drawn from --seed:
- startup:  a random instant in the first seconds (imports, data, the resume's roll-forward);
- training: a random instant once the run has saved a checkpoint since it started;
- save:     a random instant within 0.1 s of a save starting (a temporary file appearing in the
            run directory, or in either it or best/), so that kills land inside save_checkpoint.
Where a kill landed is read off the directory afterwards: a kill inside a save leaves new
temporary files or a journal behind (a save makes its first temporary file before writing
anything and removes its journal last), one elsewhere does not.

Checks (the script exits 1 when one fails): the run ends at --steps with a checkpoint that
loads (load_checkpoint and load_training_state, best/ too); no kill took a checkpoint back
(the step a resume starts from is never below the one seen just before the kill) and no resume
lost more than one checkpoint interval; model.safetensors and training_state.safetensors equal
the uninterrupted run's tensor for tensor, bit for bit, and so does best/ (the checkpoint of the
lowest probe loss); no temporary file or journal is left. Steps lost by a resume: the newest
finished step the files show (a checkpoint, or a save in flight) minus the step resumed from;
the step being computed at the kill shows nowhere and is not counted.
Prints a Markdown summary. Kill instants depend on the machine's speed, so a rerun with the
same seed aims the same way but lands elsewhere.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the diffuse next to this script, as the children use
from diffuse.checkpoint import (JOURNAL, MODEL_FILE, STATE_FILE, STATE_JSON,  # noqa: E402
                                load_checkpoint, load_training_state)

MODES = ("startup", "training", "save", "save")  # half the kills aimed at saves


@dataclass
class Chaos:
    workdir: Path                    # holds chaos/ (the killed run), straight/ (the uninterrupted one), logs/
    kills: int = 24
    steps: int = 60
    checkpoint_every: int = 1
    seed: int = 0                    # the kill plan's and the training run's
    data_size: int = 256
    batch_size: int = 8
    modes: tuple[str, ...] = MODES   # cycled over the kills, then shuffled
    startup_s: float = 5.0           # startup kills: uniform in [0, this) seconds after the process starts
    training_s: float = 2.0          # training kills: uniform in [0, this) after its first new checkpoint
    save_s: float = 0.1              # save kills: uniform in [0, this) after a save's first temporary
                                     # file (a tiny-preset save takes about 0.09 s here: most land inside)
    life_timeout_s: float = 600.0    # longest any one process may take before the run counts as hung


@dataclass
class Kill:
    mode: str                # how it was aimed (MODES)
    at_s: float              # seconds from the process's start
    before: int | None       # checkpoint step seen just before the kill (None: no checkpoint yet)
    after: int | None        # step the next start resumes from (a committed journal counts as done)
    reached: int             # newest step the files show the run had reached (the step in flight is
                             # invisible, so it is not counted)
    in_save: str             # "", "run" or "best/": where the kill left a save's temporaries or journal

    @property
    def lost(self) -> int:
        return self.reached - (self.after or 0)


@dataclass
class Outcome:
    kills: list[Kill] = field(default_factory=list)
    fresh_restarts: int = 0          # kills before the first checkpoint: started again without --resume
    final_step: int | None = None
    loads: bool = False
    equal: bool = False
    best_equal: bool = False         # best/ (the lowest probe loss) equals the uninterrupted run's too
    tensors: int = 0                 # tensors compared
    leftovers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0


# ------------------------------------------------------------------ the child processes
def train_command(out: Path, c: Chaos, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "diffuse", "train", "--data", "shapes", "--out", str(out), "--preset", "tiny",
           "--steps", str(c.steps), "--batch-size", str(c.batch_size), "--data-size", str(c.data_size),
           "--seed", str(c.seed), "--checkpoint-every", str(c.checkpoint_every), "--preview-every", "0", "--quiet"]
    return cmd + ["--resume"] * resume


def child_env() -> dict[str, str]:
    # One thread: the results must not depend on how many cores are free, and the machine is shared.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def start(out: Path, c: Chaos, resume: bool, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(train_command(out, c, resume), env=child_env(), stdout=f, stderr=subprocess.STDOUT)


def sigkill(proc: subprocess.Popen) -> bool:
    """SIGKILL our own child; False when it had already ended by itself."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)  # a no-op once Popen has reaped it
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a start to end by itself; one that hangs is killed and reported."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        sigkill(proc)
        raise TimeoutError(f"a start ran over {timeout:.0f} s") from None


def last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# ------------------------------------------------------------------ reading the run directory
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # gone (renamed under us) or still being written


def checkpoint_step(d: Path) -> int | None:
    """The step of the checkpoint the next start in `d` resumes from, read without changing
    anything: a journal means a save past its commit point, which the next reader rolls forward."""
    journal = _read_json(d / JOURNAL)
    if journal is not None:
        staged = {name: tmp for tmp, name in journal["renames"]}
        info = _read_json(d / staged[STATE_JSON]) if STATE_JSON in staged else None
        if info is not None:
            return info["step"]
    info = _read_json(d / STATE_JSON)  # also when the staged file was renamed in the meantime
    return None if info is None else info["step"]


def save_traces(out: Path) -> dict[Path, int]:
    """What a save in progress leaves in the run directory and best/ (temporary files, a journal),
    with their modification times, so that traces left by an earlier process can be told apart."""
    found = {}
    for d in (out, out / "best"):
        if d.is_dir():
            for p in d.iterdir():
                if p.name == JOURNAL or (p.name.startswith(".") and p.name.endswith(".tmp")):
                    with_time = _mtime(p)
                    if with_time is not None:
                        found[p] = with_time
    return found


def _mtime(p: Path) -> int | None:
    try:
        return p.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def new_traces(out: Path, old: dict[Path, int]) -> list[Path]:
    return sorted(p for p, t in save_traces(out).items() if old.get(p) != t)


def staged_steps(traces: list[Path]) -> list[int]:
    """Steps named by staged (not yet committed) training_state.json files."""
    infos = [_read_json(p) for p in traces if p.name.startswith(f".{STATE_JSON}.")]
    return [i["step"] for i in infos if i is not None and "step" in i]


def saving(traces: list[Path], out: Path, after: int | None, c: Chaos) -> list[int]:
    """The step a save killed before its commit point was writing into the run directory: the
    trainer saves only once it has finished a step at a checkpoint interval, or the last step."""
    if not any(p.parent == out for p in traces) or (out / JOURNAL).exists():
        return []
    return [min((after or 0) + c.checkpoint_every, c.steps)]


def where(traces: list[Path], out: Path) -> str:
    if not traces:
        return ""
    return "best/" if all(p.parent.name == "best" and p.parent.parent == out for p in traces) else "run"


# ------------------------------------------------------------------ aiming a kill
def wait_until(cond, proc: subprocess.Popen, timeout: float, poll: float) -> bool:
    """Poll `cond` until it holds; False when the process ended first. A hang is an error."""
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            return False
        if time.monotonic() > end:
            raise TimeoutError(f"no progress within {timeout:.0f} s")
        time.sleep(poll)
    return True


def sleep_alive(seconds: float, proc: subprocess.Popen) -> bool:
    end = time.monotonic() + seconds
    return wait_until(lambda: time.monotonic() >= end, proc, seconds + 60, 0.001)


def aim(mode: str, proc: subprocess.Popen, out: Path, step0: int | None, rng: random.Random, c: Chaos) -> bool:
    """Wait for the instant to kill at; False when the process ended by itself first."""
    if mode == "startup":
        return sleep_alive(rng.uniform(0, c.startup_s), proc)
    progressed = lambda: (checkpoint_step(out) or 0) > (step0 or 0)  # training, not just starting
    if not wait_until(progressed, proc, c.life_timeout_s, 0.02):
        return False
    if mode == "training":
        return sleep_alive(rng.uniform(0, c.training_s), proc)
    # The next save to start after a checkpoint is best/'s when the probe loss improved, else the
    # next checkpoint's: aiming at "any" hits best/ mostly, aiming at the run directory never does.
    dirs = (out, out / "best") if rng.random() < 0.5 else (out,)
    delay, seen = rng.uniform(0, c.save_s), set(save_traces(out))
    starts = lambda: any(p.parent in dirs and p not in seen for p in save_traces(out))
    return wait_until(starts, proc, c.life_timeout_s, 0.001) and sleep_alive(delay, proc)


# ------------------------------------------------------------------ one life and the whole run
def life(out: Path, c: Chaos, mode: str, rng: random.Random, log: Path) -> tuple[subprocess.Popen, Kill | None, bool]:
    """Start the run (resuming when there is a checkpoint), aim and kill it. Returns the process,
    the kill (None when the process ended by itself) and whether it started afresh."""
    step0, traces0 = checkpoint_step(out), save_traces(out)
    proc = start(out, c, resume=step0 is not None, log=log)
    t0 = time.monotonic()
    try:
        aimed = aim(mode, proc, out, step0, rng, c)
    except BaseException:
        sigkill(proc)  # a hung or interrupted harness leaves no child behind
        raise
    if not aimed:
        proc.wait()
        return proc, None, step0 is None
    before, at = checkpoint_step(out), time.monotonic() - t0
    if not sigkill(proc):
        return proc, None, step0 is None
    traces = new_traces(out, traces0)
    after = checkpoint_step(out)
    reached = max([s for s in (before, after) if s is not None] + staged_steps(traces) + saving(traces, out, after, c),
                  default=0)
    return proc, Kill(mode, at, before, after, reached, where(traces, out)), step0 is None


def kill_plan(c: Chaos, rng: random.Random) -> list[str]:
    plan = [c.modes[i % len(c.modes)] for i in range(c.kills)]
    rng.shuffle(plan)
    return plan


def killed_run(c: Chaos, o: Outcome, out: Path, logs: Path) -> None:
    """Kill and resume the run c.kills times, then let the last start finish."""
    rng = random.Random(c.seed)
    for i, mode in enumerate(kill_plan(c, rng)):
        log = logs / f"life-{i:02d}.txt"
        proc, kill, fresh = life(out, c, mode, rng, log)
        o.fresh_restarts += fresh and i > 0
        if kill is None:
            if proc.returncode != 0:
                o.failures.append(f"start {i} ended with exit code {proc.returncode}: {last_line(log)}")
            else:
                o.failures.append(f"the run finished after {i} of {c.kills} kills: give more --steps")
            return
        o.kills.append(kill)
        print(f"kill {i + 1}/{c.kills} ({mode}) at {kill.at_s:.2f} s: checkpoint {kill.before} -> {kill.after}, "
              f"lost {kill.lost}{', inside a save in ' + kill.in_save if kill.in_save else ''}", file=sys.stderr)
    log = logs / "life-last.txt"
    step0 = checkpoint_step(out)
    o.fresh_restarts += step0 is None
    proc = start(out, c, resume=step0 is not None, log=log)
    if finish(proc, c.life_timeout_s) != 0:
        o.failures.append(f"the last start ended with exit code {proc.returncode}: {last_line(log)}")


# ------------------------------------------------------------------ checks
def check_kills(c: Chaos, o: Outcome) -> None:
    for i, k in enumerate(o.kills, 1):
        if k.before is not None and (k.after is None or k.after < k.before):
            o.failures.append(f"kill {i} took the checkpoint back from step {k.before} to {k.after}")
        if k.lost > c.checkpoint_every:
            o.failures.append(f"kill {i} lost {k.lost} steps, more than the checkpoint interval ({c.checkpoint_every})")


def check_final(c: Chaos, o: Outcome, out: Path, straight: Path) -> None:
    # Leftovers first: loading rolls a journal forward and would hide it.
    o.leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                         if p.name == JOURNAL or p.name.endswith(".tmp"))
    if o.leftovers:
        o.failures.append(f"temporary files left: {', '.join(o.leftovers)}")
    try:
        for d in (out, out / "best"):
            if d.exists():
                load_checkpoint(d)
                load_training_state(d)
        o.final_step = load_training_state(out)[1]["step"]
        o.loads = True
    except Exception as e:  # any way of not loading is a failed check, reported in one line
        o.failures.append(f"the checkpoint does not load: {type(e).__name__}: {e}")
        return
    if o.final_step != c.steps:
        o.failures.append(f"the run ended at step {o.final_step}, not {c.steps}")
    mismatched = compare(out, straight, o)
    o.equal = not mismatched
    if mismatched:
        o.failures.append(f"{len(mismatched)} tensors differ from the uninterrupted run's, e.g. {mismatched[0]}")
    best = compare(out / "best", straight / "best", o) if (straight / "best").exists() else ["best/ missing"]
    o.best_equal = not best
    if best:
        o.failures.append(f"best/ differs from the uninterrupted run's best/ ({len(best)} tensors, e.g. {best[0]})")


def compare(a: Path, b: Path, o: Outcome) -> list[str]:
    """Names of the tensors that differ (in value, dtype, shape or presence), bit for bit."""
    bad = []
    for name in (MODEL_FILE, STATE_FILE):
        x, y = load_file(a / name), load_file(b / name)
        bad += [f"{name}:{k}" for k in sorted(x.keys() ^ y.keys())]
        for k in sorted(x.keys() & y.keys()):
            o.tensors += 1
            same = x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
            if not (same and x[k].view(-1).view(dtype=_bits(x[k])).equal(y[k].view(-1).view(dtype=_bits(y[k])))):
                bad.append(f"{name}:{k}")
    return bad


def _bits(t: torch.Tensor) -> torch.dtype:
    """An integer dtype of the same width, so equal means equal bits (nan == nan, -0 != +0)."""
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


# ------------------------------------------------------------------ the run and its report
def run(c: Chaos) -> Outcome:
    o, t0 = Outcome(), time.monotonic()
    out, straight, logs = c.workdir / "chaos", c.workdir / "straight", c.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reference = start(straight, c, resume=False, log=logs / "straight.txt")  # trains beside the killed run
    try:
        killed_run(c, o, out, logs)
    except TimeoutError as e:
        o.failures.append(f"a start hung: {e}")
    except BaseException:
        sigkill(reference)
        raise
    try:
        if finish(reference, c.life_timeout_s) != 0:
            o.failures.append(f"the uninterrupted run failed: {last_line(logs / 'straight.txt')}")
    except TimeoutError as e:
        o.failures.append(f"the uninterrupted run hung: {e}")
    broke_down = bool(o.failures)  # then its directory is not the end of a run
    check_kills(c, o)
    if not broke_down:
        check_final(c, o, out, straight)
    o.wall_s = time.monotonic() - t0
    return o


def yes(b: bool) -> str:
    return "yes" if b else "no"


def summary(c: Chaos, o: Outcome) -> str:
    inside = [k for k in o.kills if k.in_save]
    in_best = sum(k.in_save == "best/" for k in inside)
    aimed = sum(k.mode == "save" for k in o.kills)
    rows = [
        ("kills (SIGKILL)", f"{len(o.kills)} ({', '.join(f'{m} {sum(k.mode == m for k in o.kills)}' for m in dict.fromkeys(c.modes))})"),
        ("kills inside a save", f"{len(inside)} ({len(inside) - in_best} in the run's save, {in_best} in best/'s; "
                                f"{sum(k.mode == 'save' and bool(k.in_save) for k in o.kills)} of {aimed} aimed at one)"),
        ("kills before the first checkpoint (started afresh)", str(o.fresh_restarts)),
        ("max steps lost by a resume", f"{max((k.lost for k in o.kills), default=0)} "
                                       f"(checkpoint every {c.checkpoint_every} step(s))"),
        ("final step", f"{o.final_step} of {c.steps}"),
        ("checkpoint loads (run and best/)", yes(o.loads)),
        ("equal to uninterrupted, bit for bit", f"{yes(o.equal)} (best/ too: {yes(o.best_equal)}; {o.tensors} tensors)"),
        ("temporary files left", str(len(o.leftovers))),
        ("wall time", f"{o.wall_s:.0f} s"),
    ]
    lines = ["| | |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    verdict = "all checks passed" if not o.failures else "FAILED:\n" + "\n".join(f"- {f}" for f in o.failures)
    return "\n".join(lines) + "\n\n" + verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=Chaos.kills, help="SIGKILLs before the run may finish (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=Chaos.steps, help="training steps of the run (default: %(default)s)")
    ap.add_argument("--checkpoint-every", type=int, default=Chaos.checkpoint_every, help="default: %(default)s")
    ap.add_argument("--seed", type=int, default=Chaos.seed, help="kill plan and training seed (default: %(default)s)")
    ap.add_argument("--workdir", help="keep the runs and logs here (default: a temporary folder, removed if all passed)")
    a = ap.parse_args()
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="chaos-train-"))
    if (workdir / "chaos").exists() or (workdir / "straight").exists():
        ap.error(f"{workdir} already holds a chaos run: give an empty --workdir")
    c = Chaos(workdir, kills=a.kills, steps=a.steps, checkpoint_every=a.checkpoint_every, seed=a.seed)
    o = run(c)
    print(summary(c, o))
    if o.failures or a.workdir:
        print(f"\nruns and logs: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir)
    return 1 if o.failures else 0


if __name__ == "__main__":
    sys.exit(main())
