"""`tune dashboard` serves optuna-dashboard on 127.0.0.1 and its API lists the study."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_starts_on_loopback_and_lists_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/d.db"
    optuna.create_study(study_name="watched", storage=storage, directions=["minimize", "maximize"])
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    server = subprocess.Popen([sys.executable, "-m", "edgetune.searcher.cli", "dashboard", "--storage", storage, "--port", str(port),
                               "--artifacts", str(tmp_path / "artifacts")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        body = None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, server.stdout.read1().decode() if server.poll() is not None else "no answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["watched"]
    finally:
        server.terminate()
        server.wait(timeout=10)
