"""The bad-input catalogue: each malformed input ends the command with one exact line on stderr,
exit code 2, no traceback, and leaves the stored study exactly as it was.

The cases run in-process (typer's runner) against a copy of the tiny study; two of them also run
the real ``tune`` entry point in a subprocess.
"""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from conftest import copy_of_study
from edgetune.searcher.cli import app

pytestmark = pytest.mark.slow  # needs the tiny study


class Exploit:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def stored(tiny_study, tmp_path_factory):
    """A copy of the tiny study (database, artifacts, spec) and files holding bad inputs."""
    folder = copy_of_study(tiny_study, tmp_path_factory.mktemp("bad-input"))
    (folder / "broken.toml").write_text("[study\nname = 'x'\n")
    (folder / "typo.toml").write_text("[study]\nnmae = 'x'\n")
    (folder / "words.toml").write_text("[study]\ntrials = 'ten'\n")
    (folder / "binary.toml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    (folder / "empty-images" / "train").mkdir(parents=True)
    from PIL import Image

    for split in ("train", "val"):
        (folder / "corrupt-images" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "corrupt-images" / split / "cat" / "ok.png")
    (folder / "corrupt-images" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    torch.save(Exploit(folder / "pwned"), folder / "exploit.pt")
    from edgetune.objectives.models import create_model

    torch.save(create_model("resnet32", 10).state_dict(), folder / "resnet32.pt")
    (folder / "garbage.pt").write_bytes(b"not a checkpoint at all")
    (folder / "broken_model.py").write_text("import no_such_package\n")
    (folder / "mynet.py").write_text(MYNET)
    # a study of the custom model whose file then changes: resuming it must refuse
    study = optuna.create_study(study_name="custom", storage=f"sqlite:///{folder}/custom.db",
                                directions=["minimize", "maximize"])
    study.set_user_attr("model_sha256", "0" * 64)
    return folder


MYNET = """
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


def not_a_module(num_classes=10):
    return {"classes": num_classes}


def two_classes_only(num_classes):
    if num_classes != 2:
        raise ValueError("this model has 2 classes")
    return build(2)
"""


def _snapshot(folder: Path):
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
    trials = [(t.number, t.state, t.values, t.params, t.user_attrs, t.system_attrs) for t in study.get_trials()]
    return trials, study.user_attrs


S = "{spec}"  # the stored study's spec file; "{dir}": its folder
CASES = [
    # spec files
    (["start", "--spec", "{dir}/missing.toml"], "error: spec file {dir}/missing.toml does not exist"),
    (["start", "--spec", "{dir}/broken.toml"], "error: spec file {dir}/broken.toml is not valid TOML: "),
    (["start", "--spec", "{dir}/binary.toml"], "error: spec file {dir}/binary.toml is not a text file"),
    (["start", "--spec", "{dir}/typo.toml"], "error: unknown spec key 'study.nmae'; allowed keys: study.name, "),
    (["start", "--spec", "{dir}/words.toml"], "error: spec key 'study.trials': must be an integer >= 1, got 'ten'"),
    # command-line values
    (["start", "--spec", S, "--trials", "0"], "error: spec key 'study.trials': must be an integer >= 1, got 0"),
    (["start", "--spec", S, "--target", "latency,speed"],
     "error: spec key 'study.targets': must be a non-empty list of distinct targets from: latency, top1, size, params, "
     "flops, memory (or latency@DEVICE for a device of device.also), got ['latency', 'speed']"),
    (["start", "--spec", S, "--sampler", "grid"],
     "error: spec key 'study.sampler': must be one of: auto, tpe, nsga2, random, got 'grid'"),
    (["start", "--spec", S, "--set", "finetune.epochs"], "error: override 'finetune.epochs': expected key=value"),
    (["start", "--spec", S, "--set", "finetune.epochs=-1"],
     "error: spec key 'finetune.epochs': must be an integer >= 0, got -1"),
    (["start", "--spec", S, "--set", "study.grace_period=5", "--set", "study.heartbeat_interval=10"],
     "error: spec key 'study.grace_period': must be longer than study.heartbeat_interval (10 s), got 5"),
    (["start", "--spec", S, "--workers", "2"],
     "error: --workers 2: SQLite takes one worker; for several, store the study in PostgreSQL "
     "(--storage postgresql://user@host/db or $EDGETUNE_STORAGE)"),
    (["start", "--spec", S, "--model", "resnet57"],
     "error: unknown model 'resnet57'; CIFAR ResNets: resnet20, resnet32, resnet44, resnet56; or any torchvision "
     "classifier (`tune models` lists them); or your own, as package.module:factory or path/to/file.py:factory"),
    # custom models
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/nofile.py:build"],
     "error: model '{dir}/nofile.py:build': file {dir}/nofile.py does not exist"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/broken_model.py:build"],
     "error: model '{dir}/broken_model.py:build': {dir}/broken_model.py does not import: "
     "ModuleNotFoundError: No module named 'no_such_package'"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/mynet.py:missing"],
     "error: model '{dir}/mynet.py:missing': {dir}/mynet.py has no factory 'missing'"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/mynet.py:not_a_module"],
     "error: model '{dir}/mynet.py:not_a_module': not_a_module returned dict, not a torch nn.Module"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/mynet.py:two_classes_only"],
     "error: model '{dir}/mynet.py:two_classes_only': two_classes_only(num_classes=10) failed: "
     "ValueError: this model has 2 classes"),
    (["start", "--spec", S, "--study-name", "custom", "--model", "{dir}/mynet.py:build", "--storage", "sqlite:///{dir}/custom.db"],
     "error: study 'custom': the file behind model '{dir}/mynet.py:build' changed since the study started "
     "(SHA-256 "),
    (["start", "--spec", S, "--model", "resnet32"],
     "error: study 'tiny' exists with model.name = 'resnet20', not 'resnet32'; resume it with the same settings or "
     "choose another --study-name"),
    (["start", "--spec", S, "--target", "latency,latency@cpu"],
     "error: target 'latency@cpu': device 'cpu' is not in device.also (empty); add it there"),
    (["start", "--spec", S, "--set", 'device.also=["openvino:CPU"]'],
     "error: spec key 'device.also': lists the main device 'openvino:CPU'; name the others only"),
    (["start", "--spec", S, "--study-name", "other", "--set", 'device.also=["openvino:NPU"]'],
     "error: device 'openvino:NPU' is not available on this host; available: "),
    # data directories
    (["start", "--spec", S, "--study-name", "other", "--data", "cifar10", "--data-dir", "{dir}/nowhere"],
     "error: no CIFAR-10 python batches in {dir}/nowhere (expected data_batch_1..5 and test_batch)"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder"],
     "error: spec key 'data.dir' is missing: data set 'imagefolder' needs a directory with train/ and val/"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder", "--data-dir", "{dir}/empty-images"],
     "error: data directory {dir}/empty-images has no val/ folder (imagefolder needs train/ and val/)"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder", "--data-dir", "{dir}/corrupt-images"],
     "error: image {dir}/corrupt-images/train/cat/broken.jpg cannot be read: not an image file Pillow can read"),
    # checkpoints
    (["start", "--spec", S, "--study-name", "other", "--checkpoint", "{dir}/exploit.pt"],
     "error: checkpoint {dir}/exploit.pt cannot be loaded safely (weights only): "),
    (["start", "--spec", S, "--study-name", "other", "--checkpoint", "{dir}/resnet32.pt"],
     "error: checkpoint {dir}/resnet32.pt does not fit the model: "),
    (["start", "--spec", S, "--study-name", "other", "--checkpoint", "{dir}/garbage.pt"],
     "error: checkpoint {dir}/garbage.pt cannot be loaded safely (weights only): "),
    (["start", "--spec", S, "--study-name", "other", "--checkpoint", "{dir}/none.pt"],
     "error: checkpoint {dir}/none.pt does not exist"),
    # storage URLs
    (["start", "--spec", S, "--storage", "edgetune.db"],
     "error: spec key 'study.storage': must be an SQLAlchemy URL, e.g. sqlite:///edgetune.db, got 'edgetune.db'"),
    (["start", "--spec", S, "--storage", "nosuchdb://u:pw@host/db"],
     "error: cannot open storage nosuchdb://u:***@host/db: Can't load plugin: sqlalchemy.dialects:nosuchdb"),
    (["start", "--spec", S, "--storage", "postgresql://u:secret@127.0.0.1:1/db"],
     "error: cannot open storage postgresql://u:***@127.0.0.1:1/db: "),
    (["pareto", "tiny", "--storage", "sqlite:///{dir}/nowhere/none.db"], "error: no study 'tiny' in the storage; studies: none"),
    (["worker", "nosuch", "--storage", "sqlite:///{dir}/tiny.db"], "error: no study 'nosuch' in the storage; studies: tiny"),
    (["export", "tiny", "--trial", "99", "--storage", "sqlite:///{dir}/tiny.db"], "error: study 'tiny' has no trial 99"),
    # device strings
    (["start", "--spec", S, "--device", "quantum"],
     "error: unknown device 'quantum'; device kinds: cpu, cuda, onnxruntime, openvino, remote (e.g. openvino:CPU)"),
    (["start", "--spec", S, "--device", "openvino:NPU"], "error: device 'openvino:NPU' is not available on this host; available: "),
    (["start", "--spec", S, "--device", "onnxruntime:FOO"],
     "error: device 'onnxruntime:FOO' (edgetune runs ONNX Runtime's CPU execution provider) is not available on this host; "
     "available: onnxruntime:CPU"),
    (["start", "--spec", S, "--device", "cpu:1"], "error: device 'cpu' takes no target, got 'cpu:1'"),
    (["start", "--spec", S, "--device", "cuda:x"], "error: device 'cuda:x': the target is a GPU index, e.g. cuda:0"),
    (["start", "--spec", S, "--device", "remote:nohost"],
     "error: remote device 'nohost': expected remote:http://host:port/DEVICE, e.g. "),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[3:5]) or a[0] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_the_study_is_unchanged(stored, args, message):
    before = _snapshot(stored)
    fill = lambda text: text.replace(S, str(stored / "tiny.toml")).replace("{dir}", str(stored))  # noqa: E731
    result = CliRunner().invoke(app, [fill(a) for a in args], catch_exceptions=False,
                                env={"EDGETUNE_STORAGE": None, "EDGETUNE_AGENT_TOKEN": None})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    expected = fill(message)
    assert lines[0] == expected if not expected.endswith(" ") else lines[0].startswith(expected), lines[0]
    assert _snapshot(stored) == before
    assert not (stored / "pwned").exists()  # the malicious checkpoint did not run


@pytest.mark.parametrize("args, message", [
    (["start", "--set", "finetune.epochs=-1"], "error: spec key 'finetune.epochs': must be an integer >= 0, got -1"),
    (["device-agent"], "error: set $EDGETUNE_AGENT_TOKEN to the token clients must present"),
])
def test_the_installed_command_prints_only_the_line(tmp_path, args, message):
    env = {k: v for k, v in os.environ.items() if k not in ("EDGETUNE_AGENT_TOKEN", "EDGETUNE_STORAGE")}
    result = subprocess.run([sys.executable, "-m", "edgetune.searcher.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300, env={**env, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stdout


@pytest.mark.slow
def test_a_baseline_at_chance_level_stops_the_study(tmp_path):
    from conftest import fresh_tiny_spec

    folder = fresh_tiny_spec(tmp_path)  # ResNet-20 on digits, left untrained: it guesses
    result = CliRunner().invoke(app, ["start", "--spec", str(folder / "tiny.toml"), "--study-name", "untrained",
                                      "--set", "baseline.epochs=0"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the baseline learned nothing: Top-1 "), result.stderr
    assert "chance is 10.0%; train it longer (--set baseline.epochs=N, now 0)" in lines[0]
    study = optuna.load_study(study_name="untrained", storage=f"sqlite:///{folder}/tiny.db")
    assert all(t.state == optuna.trial.TrialState.WAITING for t in study.trials)  # queued recipes at most: none ran
