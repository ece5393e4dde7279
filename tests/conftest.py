import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Baselines trained by tests go to a throwaway cache, never the user's."""
    os.environ["EDGETUNE_CACHE"] = str(tmp_path_factory.mktemp("edgetune-cache"))
    yield


@pytest.fixture(scope="session")
def digits():
    from objectives.data import load_data

    return load_data("digits")
