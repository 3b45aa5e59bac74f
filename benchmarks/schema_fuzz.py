"""Fuzz the HTTP API from its own OpenAPI schema with Schemathesis (issue 24, item 3).

    OMP_NUM_THREADS=1 python benchmarks/schema_fuzz.py                    # the full run: >= 2,000 requests
    OMP_NUM_THREADS=1 python benchmarks/schema_fuzz.py --examples 3 --phases coverage,fuzzing   # the tests' one

Serves `diffuse serve`'s app on a loopback port with an API key and two models (--model, else the
tests' tiny model, trained here in seconds; and a copy of it under another name, so requests choose
between models), then runs `schemathesis run` on its /openapi.json: every
operation (the multipart ones too), schema-valid and schema-breaking data, Schemathesis' coverage,
fuzzing and stateful phases, and every check below. The server's limits are small (2 images, 3
steps), so its schema allows only cheap jobs and the run spends its time on requests, not on
drawing; schema_fuzz_hooks.py makes half the uploads real PNGs. Prints Schemathesis' summary (or
its failures) and the figures: requests sent, per operation and status; exits 1 on any failure.

Checks: no 5xx; every status, content type, header and JSON body as the schema states; data the
schema forbids refused with a 4xx; undocumented methods answered 405; the API key not ignored;
the images an answer names can be fetched. Left out: positive_data_acceptance, since a schema
cannot say "a decodable image" or "a size the model can draw" (random bytes are schema-valid
uploads and get a 400), and object_level_authorization, which needs two users.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import live_server, tiny_config  # noqa: E402
from diffuse.pipeline import Pipeline  # noqa: E402
from diffuse.server import Limits, create_app  # noqa: E402

KEY = "fuzz-key"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,unsupported_method,missing_required_header,"
          "ignored_auth,use_after_free,ensure_resource_availability")


def tiny_model(folder: Path) -> Path:
    from diffuse.training import Trainer
    out = folder / "tiny"
    Trainer(tiny_config(out)).run()
    return out


def schemathesis(base: str, report: Path, examples: int, seed: int, phases: str) -> subprocess.CompletedProcess:
    """The Schemathesis CLI, as anyone would run it (the command is printed)."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    cmd = [exe, "run", f"{base}/openapi.json", "--checks", CHECKS, "--mode", "all", "--phases", phases,
           "--max-examples", str(examples), "--seed", str(seed), "--workers", "1", "--request-timeout", "60",
           "-H", f"Authorization: Bearer {KEY}", "--suppress-health-check", "too_slow,filter_too_much",
           "--report", "har,junit", "--report-dir", str(report), "--output-truncate", "false", "--no-color"]
    print("$", " ".join(cmd[:1] + ["run", "URL"] + cmd[3:]), file=sys.stderr)
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "schema_fuzz_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    # Run in the temporary folder: Schemathesis keeps a cache of past crashes in its working
    # directory, which would make each run depend on the runs before it.
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=report.parent)


def figures(report: Path, templates: list[str]) -> dict:
    """Requests, per operation and status, from the HAR of every request Schemathesis sent."""
    entries = json.loads(next(report.glob("har-*.json")).read_text())["log"]["entries"]
    statuses, operations = collections.Counter(), collections.defaultdict(collections.Counter)
    for e in entries:
        status, method = str(e["response"]["status"]), e["request"]["method"]
        statuses[status] += 1
        if method in ("GET", "POST"):  # the others are Schemathesis' checks that they get 405
            operations[f"{method} {operation(e['request']['url'], templates)}"][status] += 1
    return {"requests": len(entries), "server_errors": sum(n for s, n in statuses.items() if s.startswith("5")),
            "statuses": dict(sorted(statuses.items())),
            "operations": {op: dict(sorted(c.items())) for op, c in sorted(operations.items())}}


def operation(url: str, templates: list[str]) -> str:
    """The schema's path a URL is sent to (literal paths before templated ones: /v1/images/edits
    is not /v1/images/{name}), or the URL's own path."""
    path = urllib.parse.urlsplit(url).path
    for t in sorted(templates, key=lambda t: "{" in t):
        if re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(t)), path):
            return t
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="a checkpoint to serve, once per model (default: a tiny model "
                                                   "trained here)")
    p.add_argument("--examples", type=int, default=150, help="Schemathesis' --max-examples (default: 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipes = [Pipeline.load(m) for m in a.model or [tiny_model(tmp)]]
        first = pipes[0]
        pipes.append(Pipeline(first.model, first.model_hash, f"{first.name}-copy", first.config))
        limits = Limits(n=2, steps=3, keep=200)  # cheap jobs: the run's time goes to requests
        app = create_app(pipes, output_dir=tmp / "served", api_key=KEY, limits=limits)
        start = time.monotonic()
        with live_server(app) as base:
            run = schemathesis(base, tmp / "report", a.examples, a.seed, a.phases)
        seconds = time.monotonic() - start
        out = run.stdout if run.returncode else run.stdout[run.stdout.rfind("SUMMARY") - 40:]
        print(out[-30000:], run.stderr[-4000:], sep="\n", file=sys.stderr)  # the failures, else the summary
        result = {**figures(tmp / "report", list(app.openapi()["paths"])), "failed": run.returncode != 0,
                  "seconds": round(seconds, 1), "examples": a.examples, "phases": a.phases, "seed": a.seed,
                  "schemathesis": version("schemathesis"), "date": datetime.date.today().isoformat(),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "models": [p.name for p in pipes],
                  "limits": {"n": limits.n, "steps": limits.steps}}
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 1 if result["failed"] or result["server_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
