"""The device agent's slim install (agent/pyproject.toml) in a fresh virtual environment: no PyTorch there,
and a study in this process measures on its onnxruntime:CPU over loopback. Needs PyPI (pip install)."""
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import fresh_tiny_spec, wait_for

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "slim-s3cret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    request = urllib.request.Request(f"{url}/info", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_slim_agent_serves_onnxruntime_without_torch_to_a_study(tmp_path):
    import optuna
    from typer.testing import CliRunner

    from edgetune.searcher.cli import app

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT / "agent")],
                               capture_output=True, text=True, timeout=1200)
    assert installed.returncode == 0, installed.stderr[-2000:]
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    for heavy in ("nni", "openvino", "scipy", "optuna"):
        assert subprocess.run([str(python), "-c", f"import {heavy}"], capture_output=True, cwd=tmp_path).returncode != 0

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    agent = subprocess.Popen([str(venv / "bin" / "tune"), "device-agent", "--device", "onnxruntime:CPU", "--port", str(port),
                              "--threads", "1", "--latency-max-seconds", "1"], cwd=tmp_path,
                             env={**env, "EDGETUNE_AGENT_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: _answers(url) or agent.poll() is not None, seconds=120) and agent.poll() is None, \
            agent.stdout.read() if agent.poll() is not None else "agent did not answer"
        os.environ["EDGETUNE_AGENT_TOKEN"] = TOKEN
        fresh_tiny_spec(tmp_path)
        device = f"remote:{url}/onnxruntime:CPU"
        result = CliRunner().invoke(app, ["start", "--spec", str(tmp_path / "tiny.toml"), "--trials", "1", "--device", device],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/tiny.db")
        (trial,) = study.trials
        a = trial.user_attrs
        assert trial.state == optuna.trial.TrialState.COMPLETE, a.get("failure")
        assert a["device"]["name"] == device and a["device"]["runtime"].startswith("onnxruntime ")
        assert a["runtime"] == "onnxruntime"
        assert a["latency_ms"] > 0 and a["top1"] > 50 and a["memory_bytes"] > 0
        assert any("int8" in used for used in a["precision_used_by_group"].values())  # the int8 recipe, read back there
    finally:
        os.environ.pop("EDGETUNE_AGENT_TOKEN", None)
        agent.terminate()
        agent.wait(timeout=30)
