"""A user's own model by reference: built, searched, exported and rebuilt from its file."""
import optuna
import pytest
import torch
from typer.testing import CliRunner

from edgetune.objectives.models import ModelError, create_model, source_sha256
from edgetune.searcher.cli import app

MYNET = """
from torch import nn


class Block(nn.Module):  # a depthwise-separable residual block
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return nn.functional.relu(x + self.body(x))


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                         Block(64), Block(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def no_arguments():
    return build(10)
"""


def test_a_reference_builds_the_users_model(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(MYNET)
    model = create_model(f"{tmp_path}/mynet.py:build", 4)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert create_model(f"{tmp_path}/mynet.py:no_arguments", 4)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    monkeypatch.chdir(tmp_path)  # package.module:factory, found from the current folder
    assert create_model("mynet:build", 3)(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert source_sha256("mynet:build") == source_sha256(f"{tmp_path}/mynet.py:build") and source_sha256("resnet20") is None
    with pytest.raises(ModelError, match="has no factory 'nope'"):
        create_model("mynet:nope", 3)


def test_tune_models_and_groups_take_a_reference(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(MYNET)
    monkeypatch.chdir(tmp_path)
    listed = CliRunner().invoke(app, ["models", "mynet.py"])
    assert listed.exit_code == 0, listed.output
    # not nn, not imports, not Block(c): a building block, not a model
    assert listed.output.split() == ["mynet.py:build", "mynet.py:no_arguments"]
    assert CliRunner().invoke(app, ["models", "mynet:"]).output.split() == listed.output.replace("mynet.py", "mynet").split()
    groups = CliRunner().invoke(app, ["groups", "--model", "mynet.py:build", "--set", "device.name=cpu"])
    assert groups.exit_code == 0, groups.output
    assert "layer groups of mynet.py:build" in groups.output and "body" in groups.output
    missing = CliRunner().invoke(app, ["models", "nowhere.py"])
    assert missing.exit_code == 2 and missing.output.startswith("error: model 'nowhere.py': file nowhere.py does not exist")


@pytest.mark.slow
def test_a_study_of_a_custom_model_runs_and_exports(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(MYNET)
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/custom.db"
    result = CliRunner().invoke(app, ["start", "--model", "mynet.py:build", "--trials", "3", "--storage", storage,
                                      "--target", "latency,memory,top1",
                                      "--study-name", "mine", "--set", "baseline.epochs=2", "--set", "finetune.epochs=1",
                                      "--set", f"study.artifacts={tmp_path}/artifacts", "--set", "device.latency_max_seconds=1",
                                      "--set", "search.recipes=false"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mine", storage=storage)
    assert study.user_attrs["model_sha256"] == source_sha256("mynet.py:build")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("failure") for t in study.trials]
    base = study.user_attrs
    assert any(t.user_attrs["params"] < base["baseline_params"] and t.user_attrs["flops"] < base["baseline_flops"]
               for t in complete)
    # memory as a third objective (devices/memory_probe.py), measured on every trial and on the baseline
    assert study.metric_names == ["latency_ms", "memory_bytes", "top1"] and base["baseline_memory_bytes"] > 0
    assert all(len(t.values) == 3 and t.values[1] == t.user_attrs["memory_bytes"] > 0 for t in complete)
    assert "memory" in result.output  # the printed front has its column
    report = CliRunner().invoke(app, ["report", "mine", "--storage", storage, "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "| memory bytes |" in (tmp_path / "report" / "mine" / "report.md").read_text()
    exported = CliRunner().invoke(app, ["export", "mine", "--pareto", "--storage", storage, "--out", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    from edgetune.objectives.model_files import load_pruned

    for folder in (tmp_path / "out").iterdir():
        assert load_pruned(folder)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


UNTRACEABLE = """
from torch import nn


class Block(nn.Module):  # residual: its channels are coupled, so pruning it needs NNI's tracer
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        scale = float(x.detach().abs().amax().numpy())  # through NumPy: NNI's tracer cannot follow, ONNX can
        return x + self.conv(x) * min(scale, 1.0)


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Block(16), Block(16), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))
"""


@pytest.mark.slow
def test_a_model_that_cannot_be_pruned_stops_the_study_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "untraceable.py").write_text(UNTRACEABLE)
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/stuck.db"
    result = CliRunner().invoke(app, [
        "start", "--model", "untraceable.py:build", "--trials", "8", "--storage", storage, "--study-name", "stuck",
        "--set", "baseline.epochs=3", "--set", "finetune.epochs=1", "--set", f"study.artifacts={tmp_path}/artifacts",
        "--set", "device.latency_max_seconds=1", "--set", "search.recipes=false", "--set", "search.precisions=[\"f32\"]",
        "--set", "search.depth=false",  # removing a block needs no tracer: every trial must need it
        "--set", "search.channel_multiple=8"])  # two widths for its 16-channel layers on any host (16 at AVX-512's 16: one)
    assert result.exit_code == 2, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: 3 trials failed pruning untraceable.py:build the same way")
    assert "search.exclude" in line
    trials = optuna.load_study(study_name="stuck", storage=storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 3 and len(trials) < 8  # stopped at the third failure, not at the budget
    base = optuna.load_study(study_name="stuck", storage=storage).user_attrs["baseline_params"]
    # the complete ones kept every channel (nothing to prune, so no tracer): none shows the model prunable
    assert all(t.user_attrs["params"] == base for t in trials if t not in failed)
