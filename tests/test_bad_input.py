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
from edgetune.searcher import cli
from edgetune.searcher.cli import app
from edgetune.searcher.params import INNER, WIDTH, param_name
from edgetune.searcher.spec import load_spec

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
    (["start", "--spec", "{dir}/typo.toml"], "error: unknown spec key 'study.nmae'; did you mean 'study.name'?"),
    (["start", "--spec", "{dir}/words.toml"], "error: spec key 'study.trials': must be an integer >= 1, got 'ten'"),
    # command-line values
    (["start", "--spec", S, "--trials", "0"], "error: --trials (spec key study.trials): must be an integer >= 1, got 0"),
    (["start", "--spec", S, "--target", "latency,speed"],
     "error: --target (spec key study.targets): must be a non-empty list of distinct targets from: latency, top1, size, params, "
     "flops, memory, energy (or latency@DEVICE for a device of device.also), got ['latency', 'speed']"),
    (["start", "--spec", S, "--sampler", "grid"],
     "error: --sampler (spec key study.sampler): must be one of: auto, tpe, nsga2, random, got 'grid'"),
    (["start", "--spec", S, "--trials", "3", "--set", "study.trials=0"],  # the key the user set is the one named
     "error: spec key 'study.trials': must be an integer >= 1, got 0"),
    (["start", "--spec", S, "--set", "finetune.epochs"], "error: override 'finetune.epochs': expected key=value"),
    (["start", "--spec", S, "--set", "finetune.epoch=3"],
     "error: unknown spec key 'finetune.epoch'; did you mean 'finetune.epochs'?"),
    (["start", "--spec", S, "--set", "finetune.speed=3"],
     "error: unknown spec key 'finetune.speed'; keys of [finetune]: epochs, lr, batch_size, distill, temperature, "
     "max_epochs"),
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
     "error: model '{dir}/mynet.py:missing': {dir}/mynet.py has no factory 'missing'; it has {dir}/mynet.py:build, "
     "{dir}/mynet.py:not_a_module, {dir}/mynet.py:two_classes_only"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/mynet.py"],
     "error: model '{dir}/mynet.py': name its factory, e.g. --model {dir}/mynet.py:build (`tune models {dir}/mynet.py` "
     "lists them)"),
    (["start", "--spec", S, "--study-name", "other", "--model", "{dir}/nosuch.py"],
     "error: model '{dir}/nosuch.py': file {dir}/nosuch.py does not exist"),
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
    # search spaces
    (["start", "--spec", S, "--study-name", "other", "--set", "search.inner_width=false", "--set", "search.stream_width=false",
      "--set", "search.depth=false", "--set", 'search.precisions=["f32"]'],
     "error: nothing to search: no width or depth of resnet20 has two values (search.inner_width, search.stream_width, "
     "search.depth off), nor the precision (precisions: f32); every trial would be the same model: turn a dimension "
     "on or allow int8 in search.precisions"),
    # data directories
    (["start", "--spec", S, "--study-name", "other", "--data", "cifar10", "--data-dir", "{dir}/nowhere"],
     "error: no CIFAR-10 python batches in {dir}/nowhere (expected data_batch_1..5 and test_batch)"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder"],
     "error: spec key 'data.dir' is missing: data set 'imagefolder' needs a directory with train/ and val/"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder", "--data-dir", "{dir}/empty-images"],
     "error: data directory {dir}/empty-images has no val/ folder (imagefolder needs train/ and val/)"),
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder", "--data-dir", "{dir}/corrupt-images"],
     "error: image {dir}/corrupt-images/train/cat/broken.jpg cannot be read: not an image file Pillow can read"),
    # streamed: the image is read in one of the DataLoader's worker processes
    (["start", "--spec", S, "--study-name", "other", "--data", "imagefolder", "--data-dir", "{dir}/corrupt-images",
      "--set", "data.in_memory=false", "--set", "data.workers=2"],
     "error: image {dir}/corrupt-images/train/cat/broken.jpg cannot be read: not an image file Pillow can read"),
    (["start", "--spec", S, "--study-name", "other", "--set", "data.in_memory=false"],
     "error: spec key 'data.in_memory': only an image folder streams; 'digits' is always held in memory "
     '(set it to "auto" or true)'),
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
     "error: --storage (spec key study.storage): must be an SQLAlchemy URL, e.g. sqlite:///edgetune.db, got 'edgetune.db'"),
    (["start", "--spec", S, "--storage", "nosuchdb://u:pw@host/db"],
     "error: cannot open storage nosuchdb://u:***@host/db: Can't load plugin: sqlalchemy.dialects:nosuchdb"),
    (["start", "--spec", S, "--storage", "postgresql://u:secret@127.0.0.1:1/db"],
     "error: cannot open storage postgresql://u:***@127.0.0.1:1/db: "),
    (["pareto", "tiny", "--storage", "sqlite:///{dir}/nowhere/none.db"],  # reading creates no database
     "error: no study database at {dir}/nowhere/none.db; name the study's database with --storage sqlite:///PATH "
     "(or $EDGETUNE_STORAGE), or run `tune start` first"),
    (["export", "tiny", "--pareto", "--storage", "sqlite:///{dir}/tiny.db", "--artifacts", "{dir}/nowhere",
      "--out", "{dir}/nowhere"], "error: --artifacts {dir}/nowhere: no such folder"),
    (["worker", "nosuch", "--storage", "sqlite:///{dir}/tiny.db"], "error: no study 'nosuch' in the storage; studies: tiny"),
    (["export", "tiny", "--trial", "99", "--storage", "sqlite:///{dir}/tiny.db"], "error: study 'tiny' has no trial 99"),
    (["groups", "--model", "resnet20", "--image-size", "0"], "error: --image-size (spec key data.image_size): must be an integer >= 8, got 0"),
    (["groups", "--model", "resnet20", "--num-classes", "-3"], "error: --num-classes: must be an integer >= 2, got -3"),
    # device strings
    (["start", "--spec", S, "--device", "quantum"],
     "error: unknown device 'quantum'; device kinds: cpu, cuda, onnxruntime, openvino, remote (e.g. openvino:CPU)"),
    (["start", "--spec", S, "--device", "openvino:NPU"],   # every device `tune devices` lists
     "error: device 'openvino:NPU' is not available on this host; available: cpu, "),
    (["start", "--spec", S, "--device", "onnxruntime:FOO"],
     "error: device 'onnxruntime:FOO' (edgetune runs ONNX Runtime's CPU execution provider) is not available on this host; "
     "available: cpu, "),
    (["start", "--spec", S, "--device", "cpu:1"], "error: device 'cpu' takes no target, got 'cpu:1'"),
    (["start", "--spec", S, "--device", "cuda:x"], "error: device 'cuda:x': the target is a GPU index, e.g. cuda:0"),
    (["start", "--spec", S, "--device", "remote:nohost"],
     "error: remote device 'nohost': expected remote:http://host:port/DEVICE, e.g. "),
    # where PyTorch trains
    (["start", "--spec", S, "--set", "train.device=tpu"],
     "error: spec key 'train.device': must be one of: auto, cpu, cuda, cuda:N (where PyTorch trains; auto: the first "
     "CUDA GPU, else the CPU), got 'tpu'"),
    (["start", "--spec", S, "--set", "train.amp=fp8"],
     "error: spec key 'train.amp': must be one of: auto, bf16, f16, off (autocast while training; auto: bf16 or f16 "
     "on a GPU, off on the CPU), got 'fp8'"),
    (["start", "--spec", S, "--set", "train.device=cpu", "--set", "train.amp=f16"],
     'error: spec key \'train.amp\': "f16" trains on a GPU only (the CPU has no gain from it); use "off" or "bf16" on the CPU'),
    (["worker", "tiny", "--storage", "sqlite:///{dir}/tiny.db", "--set", "study.trials=9"],
     "error: --set study.trials: a process joining study 'tiny' may set only where it trains (train.device, train.amp); "
     "the rest is the study's spec"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[3:5]) or a[0] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_the_study_is_unchanged(stored, args, message):
    _refused(stored, args, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("args, message", [
    (["start", "--spec", S, "--set", "train.device=cuda"],
     "error: spec key 'train.device': 'cuda' is not available on this host (it has no CUDA GPU); use \"auto\" or \"cpu\""),
    (["worker", "tiny", "--storage", "sqlite:///{dir}/tiny.db", "--set", "train.device=cuda:1"],
     "error: spec key 'train.device': 'cuda:1' is not available on this host (it has no CUDA GPU); use \"auto\" or \"cpu\""),
])
def test_training_on_cuda_without_a_gpu_is_one_line_before_any_work(stored, args, message):
    assert _refused(stored, args, message).stdout == ""  # not even the study's header


def _refused(stored, args, message):
    before = _snapshot(stored)
    fill = lambda text: text.replace(S, str(stored / "tiny.toml")).replace("{dir}", str(stored))  # noqa: E731
    result = CliRunner().invoke(app, [fill(a) for a in args], catch_exceptions=False,
                                env={"EDGETUNE_STORAGE": None, "EDGETUNE_AGENT_TOKEN": None})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    expected = fill(message)
    assert lines[0] == expected if not expected.endswith(" ") else lines[0].startswith(expected), lines[0]
    assert "study " not in result.stdout, result.stdout  # found before the study's header and progress bar
    assert _snapshot(stored) == before
    assert not (stored / "nowhere").exists()  # nothing made where nothing was
    assert not (stored / "pwned").exists()  # the malicious checkpoint did not run
    return result


def test_a_space_the_granularity_left_one_point_stops_before_the_study_exists(stored, known_host):
    """mynet.py:build has 8-channel layers: one width each in multiples of 8 or 16, two in multiples of 4.
    With one float precision there is nothing left to search, on every known host."""
    before = _snapshot(stored)
    block = known_host.channel_block
    result = CliRunner().invoke(app, ["start", "--spec", str(stored / "tiny.toml"), "--study-name", "narrow",
                                      "--model", f"{stored}/mynet.py:build", "--set", 'search.precisions=["f32"]'],
                                catch_exceptions=False, env={"EDGETUNE_STORAGE": None})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == [
        f"error: nothing to search: widths in multiples of {block} (from the device openvino:CPU) leave {param_name(INNER, '0')} one value, "
        "and nothing else has two (precisions: f32); set search.channel_multiple = 4 to search finer widths anyway "
        f"(a width between two multiples of {block} runs about as fast as the next one up)"], result.output
    assert "narrow" not in optuna.get_all_study_names(f"sqlite:///{stored}/tiny.db")  # nothing created, nothing trained
    assert _snapshot(stored) == before


def test_a_dimension_the_granularity_collapsed_is_named_before_the_first_trial(tmp_path, known_host):
    """ResNet-20's 16-channel stage has one width at a granularity of 16 (two at 8): the header says so."""
    from conftest import fresh_tiny_spec

    folder = fresh_tiny_spec(tmp_path)
    result = CliRunner().invoke(app, ["start", "--spec", str(folder / "tiny.toml"), "--study-name", "collapsed",
                                      "--trials", "1", "--max-latency", "0.0001"],  # the trial stops at its first timing
                                catch_exceptions=False, env={"EDGETUNE_STORAGE": None})
    assert result.exit_code == 0, result.output
    header = " ".join(result.output.split("trial ")[0].split())  # rich wraps it at the console's width
    block = known_host.channel_block
    note = (f"widths in multiples of 16 (from the device openvino:CPU) leave {param_name(INNER, 'layer1')}, {param_name(WIDTH, 'layer1')} "
            "one value; set search.channel_multiple = 8 to search finer widths anyway")
    plain = f"widths in multiples of {block} (device openvino:CPU)"  # the multiple said once: by the note if it collapsed
    assert (note in header, plain in header) == (block == 16, block != 16), header
    study = optuna.load_study(study_name="collapsed", storage=f"sqlite:///{folder}/tiny.db")
    assert study.user_attrs["channel_multiple"] == block and len(study.trials) == 1


def _tune(args, cwd):
    """``tune ARGS`` as its own process with no storage or agent token from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGETUNE_AGENT_TOKEN", "EDGETUNE_STORAGE")}
    return subprocess.run([sys.executable, "-m", "edgetune.searcher.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**env, "PYTHONPATH": str(Path(__file__).parents[1])})


@pytest.mark.parametrize("args, message", [
    (["start", "--set", "finetune.epochs=-1"], "error: spec key 'finetune.epochs': must be an integer >= 0, got -1"),
    (["device-agent"], "error: set $EDGETUNE_AGENT_TOKEN to the token clients must present"),
])
def test_the_installed_command_prints_only_the_line(tmp_path, args, message):
    result = _tune(args, cwd=tmp_path)
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


def test_results_of_an_older_study_are_found_from_another_folder(tiny_study, tmp_path, monkeypatch):
    """Older studies stored their artifact store relative to the folder `tune start` ran in: it is
    looked up beside the database too, and a store found nowhere is one line naming --artifacts, with
    nothing written where the command ran."""
    (tmp_path / "project").mkdir()
    folder = copy_of_study(tiny_study, tmp_path / "project")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
    study.set_user_attr("spec", {**study.user_attrs["spec"], "study.artifacts": "artifacts"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    storage = ["--storage", f"sqlite:///{folder}/tiny.db"]
    exported = CliRunner().invoke(app, ["export", "--pareto", *storage])
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["exports"] and list((elsewhere / "exports").glob("trial-*"))
    reported = CliRunner().invoke(app, ["report", *storage])
    assert reported.exit_code == 0, reported.output
    assert "## Class-level harm" in (elsewhere / "reports" / "tiny" / "report.md").read_text()

    (folder / "artifacts").rename(folder / "moved")
    for args in (["export", "--pareto", *storage, "--out", "again"], ["report", *storage, "--out", "again"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: study 'tiny': its artifact store artifacts is neither in {elsewhere} nor "
                                        f"beside its database in {folder}; name it with --artifacts DIR"), result.stderr
        assert sorted(p.name for p in elsewhere.iterdir()) == ["exports", "reports"]  # no empty store, no again/
    moved = CliRunner().invoke(app, ["export", "--trial", "0", *storage, "--artifacts", str(folder / "moved")])
    assert moved.exit_code == 0, moved.output


def test_an_out_that_cannot_be_a_folder_is_one_line(tiny_study, tmp_path):
    (tmp_path / "project").mkdir()
    storage = ["--storage", f"sqlite:///{copy_of_study(tiny_study, tmp_path / 'project')}/tiny.db"]
    (tmp_path / "a-file").write_text("mine")
    for out, why in (("a-file", "a file, not a folder"), ("a-file/sub", "a part of the path is a file, not a folder")):
        for args in (["export", "--pareto", *storage], ["report", "--no-classes", *storage]):
            result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / out)])
            assert result.exit_code == 2 and result.stderr == f"error: --out {tmp_path / out}: {why}\n", result.output
    assert (tmp_path / "a-file").read_text() == "mine"


def test_a_missing_artifact_store_names_the_option_each_command_has(tiny_study, tmp_path):
    """finalize, worker and (resuming) start all take --artifacts: the line names it, with the store's absolute path."""
    (tmp_path / "project").mkdir()
    folder = copy_of_study(tiny_study, tmp_path / "project")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
    study.set_user_attr("spec", {**study.user_attrs["spec"], "study.artifacts": str(folder / "gone")})
    storage = ["--storage", f"sqlite:///{folder}/tiny.db"]
    for args in (["finalize", "--trial", "0", *storage], ["start", "--spec", str(folder / "tiny.toml"), *storage,
                                                          "--set", f"study.artifacts={folder / 'gone'}"]):
        result = CliRunner().invoke(app, args, env={"EDGETUNE_STORAGE": None})
        assert result.exit_code == 2, result.output
        assert result.stderr.endswith(f"artifact store {folder / 'gone'} is not there; name it with --artifacts DIR\n"), result.stderr
    spec = load_spec(None, cli._overrides(artifacts=str(folder / "artifacts")))
    assert spec["study.artifacts"] == str(folder / "artifacts")
