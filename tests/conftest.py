import os
import shutil
import sys

import pytest


#: The hosts the suite runs as (devices.host.KNOWN_HOSTS): AVX2 (granularity 8; OpenVINO f32, int8),
#: AVX-512 with bf16 and AMX (granularity 16; f32, bf16, int8).
HOSTS = ["avx2", "avx512_bf16", "amx"]


@pytest.fixture(params=HOSTS)
def known_host(request, monkeypatch):
    """Run the test as on each known host, whatever this machine is: ``$EDGETUNE_HOST_CPU`` pins the
    channel granularity and precisions the CPU devices declare (devices/host.py); the study, its space
    and the CLI run for real on them. The whole suite runs as one host with ``EDGETUNE_HOST_CPU=avx2
    make test``. Returns the host's facts (``channel_block``, ``bf16``)."""
    from edgetune.devices.host import HOST_CPU_ENV, KNOWN_HOSTS

    monkeypatch.setenv(HOST_CPU_ENV, request.param)
    return KNOWN_HOSTS[request.param]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Baselines trained by tests go to a throwaway cache, never the user's."""
    os.environ["EDGETUNE_CACHE"] = str(tmp_path_factory.mktemp("edgetune-cache"))
    yield


@pytest.fixture(scope="session")
def digits():
    from edgetune.objectives.data import load_data

    return load_data("digits")


TINY_STUDY = """
[study]
name = "tiny"
storage = "sqlite:///{folder}/tiny.db"
artifacts = "{folder}/artifacts"
trials = 3
[model]
name = "resnet20"
[baseline]
epochs = 2
[finetune]
epochs = 1
[device]
threads = 1
latency_max_seconds = 1
[search]
sparsity_max = 0.6
pruners = ["l1", "fpgm"]
"""


def start_tiny(folder, *args):
    """``tune start`` on the tiny study (ResNet-20 on digits) in ``folder``; returns the output."""
    from typer.testing import CliRunner

    from edgetune.searcher.cli import app

    result = CliRunner().invoke(app, ["start", "--spec", str(folder / "tiny.toml"), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory):
    """A folder with the tiny study's spec; the first test that runs it creates the study."""
    folder = tmp_path_factory.mktemp("study")
    (folder / "tiny.toml").write_text(TINY_STUDY.format(folder=folder))
    return folder


def copy_of_study(source, folder):
    """A copy of the study in ``source`` (database, artifacts, spec with its paths moved) that a test may change:
    the shared tiny study is read by many tests, and one that adds trials or studies would change what the
    others see, depending on the order they run in."""
    shutil.copy(source / "tiny.db", folder / "tiny.db")
    shutil.copytree(source / "artifacts", folder / "artifacts")
    (folder / "tiny.toml").write_text((source / "tiny.toml").read_text().replace(str(source), str(folder)))
    return folder


def fresh_tiny_spec(folder):
    """The tiny study's spec in its own folder (its own database and artifacts), for a test's own studies."""
    (folder / "tiny.toml").write_text(TINY_STUDY.format(folder=folder))
    return folder


@pytest.fixture(scope="session")
def tiny_study(study_dir):
    """The tiny study with at least its first 3 trials run."""
    import optuna

    storage = f"sqlite:///{study_dir}/tiny.db"
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
        if len(study.trials) >= 3:
            return study_dir
    except KeyError:
        pass
    start_tiny(study_dir)
    return study_dir


def tune_process(*args, cwd, env):
    """``tune ARGS`` as its own process, as a user would start it; stdout and stderr together."""
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "edgetune.searcher.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(predicate, seconds=300, every=0.5) -> bool:
    """Poll ``predicate`` until it holds (True) or ``seconds`` pass (False)."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
