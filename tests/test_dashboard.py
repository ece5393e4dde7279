"""`tune dashboard` serves optuna-dashboard on 127.0.0.1 and its API lists the study."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
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


def _study_with_a_model(folder, name="watched", store=None):
    """A study as `tune start` leaves it: its artifact store stored absolute in its spec, and a trial with a
    file in that store. Returns the storage URL, the trial's artifact id and the file's bytes."""
    from edgetune.searcher.storage import artifact_store

    storage, store = f"sqlite:///{folder}/d.db", store or folder / "artifacts"
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "maximize"])
    study.set_user_attr("spec", {"study.artifacts": str(store)})
    trial = study.ask()
    model = folder / f"{name}-model.zip"
    model.write_bytes(b"the trial's model " + name.encode())
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=artifact_store(str(store)), file_path=str(model),
                                                   study_or_trial=trial)
    study.tell(trial, [1.0, 90.0])
    return storage, artifact_id, model.read_bytes()


def test_from_another_folder_the_dashboard_serves_the_studys_own_models(tmp_path):
    from conftest import tune_process

    (tmp_path / "project").mkdir()
    storage, artifact_id, model = _study_with_a_model(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    server = tune_process("dashboard", "--storage", storage, "--port", str(port), cwd=elsewhere, env=env)
    try:
        study = optuna.load_study(study_name="watched", storage=storage)
        trial = study.trials[0]
        url = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{trial._trial_id}/{artifact_id}"
        deadline, served = time.time() + 60, None
        while time.time() < deadline and served is None and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    served = response.read()
            except urllib.error.HTTPError as error:  # 400: the dashboard has no artifact store
                served = error
            except OSError:
                time.sleep(0.5)
        assert served == model, server.stdout.read() if server.poll() is not None else served
    finally:
        server.terminate()
        server.wait(timeout=10)
    first = server.stdout.read().splitlines()[0]
    assert first == (f"optuna-dashboard on http://127.0.0.1:{port} for {storage}, models from "
                     f"{tmp_path / 'project' / 'artifacts'} (Ctrl-C stops it)")
    assert list(elsewhere.iterdir()) == []  # no store made where it ran


def test_the_dashboard_says_in_one_line_which_models_it_cannot_attach(tmp_path, monkeypatch):
    import optuna_dashboard
    from typer.testing import CliRunner

    from edgetune.searcher.cli import app

    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kwargs: served.append(kwargs["artifact_store"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def dashboard(*args):
        served.clear()
        result = CliRunner().invoke(app, ["dashboard", "--storage", storage, *args])
        assert result.exit_code == 0, result.output
        store = served[0]
        return result.output.splitlines()[1:], None if store is None else Path(store._base_path)

    storage, _, _ = _study_with_a_model(tmp_path, "older", tmp_path / "older-artifacts")
    _study_with_a_model(tmp_path, "newer", tmp_path / "newer-artifacts")
    # the studies' stores differ: the newest study's is served, the others named
    assert dashboard() == ([f"some models not attached: study 'older' keeps its models in {tmp_path}/older-artifacts; "
                            f"one store is served, {tmp_path}/newer-artifacts (study 'newer'); --artifacts DIR chooses "
                            "another"], tmp_path / "newer-artifacts")
    assert dashboard("--artifacts", str(tmp_path / "older-artifacts")) == ([], tmp_path / "older-artifacts")  # it wins
    assert dashboard("--artifacts", str(tmp_path / "nowhere")) == (
        [f"models not attached: --artifacts {tmp_path}/nowhere: no such folder (none is created)"], None)
    (tmp_path / "newer-artifacts").rename(tmp_path / "moved")
    (tmp_path / "older-artifacts").rename(tmp_path / "gone")
    assert dashboard() == ([f"models not attached: study 'older': its artifact store {tmp_path}/older-artifacts is not "
                            f"there; study 'newer': its artifact store {tmp_path}/newer-artifacts is not there; name "
                            "one with --artifacts DIR"], None)
    optuna.delete_study(study_name="older", storage=storage)
    assert dashboard()[0] == [f"models not attached: study 'newer': its artifact store {tmp_path}/newer-artifacts is "
                              "not there; name it with --artifacts DIR"]
    optuna.delete_study(study_name="newer", storage=storage)
    assert dashboard()[0] == [f"models not attached: {storage} holds no study yet; start the dashboard again once one "
                              "has run, or name a store with --artifacts DIR"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.db", "elsewhere", "gone", "moved", "newer-model.zip",
                                                          "older-model.zip"]  # no store was made
    assert list(elsewhere.iterdir()) == []
