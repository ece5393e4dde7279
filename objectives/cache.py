"""edgetune's cache folder (``$EDGETUNE_CACHE``, else ~/.cache/edgetune): trained baselines and the
statistics of streamed image folders, kept between runs and shared by a study's workers."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("EDGETUNE_CACHE", Path.home() / ".cache" / "edgetune"))
