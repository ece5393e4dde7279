"""The small read-only commands, through typer's runner."""
import optuna
import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgetune.searcher import cli
from edgetune.searcher.cli import app
from edgetune.searcher.spec import load_spec
from edgetune.searcher.study import make_sampler

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables 200 columns wide, whatever terminal (or none) the tests run in: rich fixes the console's
    width when the module is imported, so a COLUMNS passed to one command would not reach it."""
    monkeypatch.setattr(cli, "console", Console(width=200))


def test_groups_lists_layers_and_shares():
    result = runner.invoke(app, ["groups", "--model", "resnet20"])
    assert result.exit_code == 0, result.output
    for text in ("layer1", "layer1.0.conv1", "layer3.2.conv1", "%"):
        assert text in result.output


def test_groups_with_an_override():
    result = runner.invoke(app, ["groups", "--model", "resnet20", "--set", r"search.groups={early=['layer1\..*conv1']}"])
    assert result.exit_code == 0, result.output
    groups_table = result.output.split("search dimensions")[0]
    assert "early" in groups_table and "layer2" not in groups_table
    assert "inner.early" in result.output


def test_groups_lists_every_search_dimension_with_its_range():
    result = runner.invoke(app, ["groups", "--model", "resnet20", "--set", "search.channel_multiple=8"])
    assert result.exit_code == 0, result.output
    for text in ("inner.layer3", "width.layer1", "depth.layer2", "precision.other", "16..64 step 8", "1..3",
                 "multiples of 8, from the spec"):
        assert text in result.output, text
    off = runner.invoke(app, ["groups", "--model", "resnet20", "--set", "search.depth=false"])
    assert "depth.layer2" not in off.output


def test_devices_lists_openvino_cpu_with_its_facts():
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    assert "openvino:CPU" in result.output and "openvino 20" in result.output and "f32" in result.output
    assert "channel granularity" in result.output


def test_models_lists_cifar_resnets_and_torchvision():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("resnet20", "resnet56", "resnet18", "mobilenet_v2", "vgg11_bn"):
        assert name in result.output.split()


def test_samplers_follow_the_targets():
    assert isinstance(make_sampler(load_spec(overrides={"study.targets": ["latency"]})), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(load_spec()), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(load_spec(overrides={"study.sampler": "random"})), optuna.samplers.RandomSampler)
    nsga = make_sampler(load_spec(overrides={"study.targets": ["latency", "top1", "size"], "study.sampler": "nsga2"}))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
