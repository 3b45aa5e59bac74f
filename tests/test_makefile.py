"""The Makefile's plans, read with `make -n` against a venv that does not exist (a fresh machine)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def plan(target: str, tmp_path) -> str:
    """What `make TARGET` would run on a fresh machine."""
    return subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, check=True).stdout


def test_demo_installs_no_browser_but_test_does(tmp_path):
    demo, test = plan("demo", tmp_path), plan("test", tmp_path)
    assert "pip install" in demo and "explain prompt" in demo and "explain styles" in demo and "--model emoji" in demo
    assert "chromium" not in demo and "apt-get" not in demo  # only the browser tests need it
    assert "apt-get install -y chromium" in test and "pip install" in test and "-m pytest" in test
    assert test.index("install -y chromium") < test.index("-m pytest")
