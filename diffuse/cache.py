"""Where diffuse keeps what it builds once and reuses: evaluation readers, the emoji data set.

$DIFFUSE_CACHE when set, else $XDG_CACHE_HOME/diffuse, else ~/.cache/diffuse. Whatever is kept
there can be deleted at any time; it is rebuilt on next use.
"""

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("DIFFUSE_CACHE"):
        return Path(os.environ["DIFFUSE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "diffuse"
