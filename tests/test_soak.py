"""The soak benchmark's short version: mixed traffic, every bad request a 4xx, no 5xx, and the
resource table with its verdicts (the 30-minute run and its plot are in benchmarks/RESULTS.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_soak_gets_no_5xx_and_a_4xx_for_every_bad_request(tiny_model_dir, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_soak.py"), "--minutes", "0.3", "--clients", "2",
                          "--sample-s", "4", "--model", str(tiny_model_dir), "--out", str(tmp_path / "soak")],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "5xx answers: 0; every bad request got a 4xx: True" in out.stdout
    for resource in ("rss_mib", "fds", "threads", "folder_files"):
        assert f"| {resource} |" in out.stdout
    assert (tmp_path / "soak" / "soak.png").stat().st_size > 0
    assert len((tmp_path / "soak" / "samples.jsonl").read_text().splitlines()) >= 4
