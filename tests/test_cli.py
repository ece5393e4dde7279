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


def rows(output: str) -> list[tuple[str, ...]]:
    """The cells of every table row printed (a console wide enough that no cell folds)."""
    return [tuple(cell.strip() for cell in line.strip().strip("│").split("│")) for line in output.splitlines()
            if line.strip().startswith("│")]


def words(output: str) -> str:
    """The output with every run of whitespace one space: a title or caption rich wrapped reads whole."""
    return " ".join(output.split())


def test_groups_lists_every_search_dimension_with_its_range(known_host):
    result = runner.invoke(app, ["groups", "--model", "resnet20", "--set", "search.channel_multiple=8"])
    assert result.exit_code == 0, result.output
    found = rows(result.output)
    for row in [("inner.layer3", "inner width", "16..64 step 8"), ("width.layer1", "stream width", "8..16 step 8"),
                ("depth.layer2", "depth (blocks)", "1..3"), ("precision.other", "precision", "float, int8")]:
        assert row in found, row
    assert (("precision.float", "float precision", "f32, bf16") in found) == known_host.bf16
    assert "search dimensions on openvino:CPU (widths in multiples of 8, from the spec)" in words(result.output)
    off = runner.invoke(app, ["groups", "--model", "resnet20", "--set", "search.depth=false"])
    assert not [row for row in rows(off.output) if row[0].startswith("depth.")]


def test_groups_counts_widths_in_the_devices_granularity(known_host):
    result = runner.invoke(app, ["groups", "--model", "resnet20"])
    assert result.exit_code == 0, result.output
    block, found = known_host.channel_block, rows(result.output)
    assert f"(widths in multiples of {block}, from the device openvino:CPU)" in words(result.output)
    assert ("inner.layer3", "inner width", f"16..64 step {block}") in found
    # ResNet-20's 16-channel stage has one width at a granularity of 16: the table says how to search it anyway
    collapsed = ("inner.layer1", "inner width", "16 (fixed)") in found
    assert collapsed == (block == 16) == ("leave inner.layer1, width.layer1 one value; set search.channel_multiple = 8 "
                                          "to search finer widths anyway" in words(result.output))


def test_devices_lists_openvino_cpu_with_its_facts(known_host, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=1000))  # a long CPU or runtime name folds no cell
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    row = next(row for row in rows(result.output) if row[0] == "openvino:CPU")
    precisions = ["f32", "bf16", "int8"] if known_host.bf16 else ["f32", "int8"]
    assert row[2].startswith("openvino 20") and row[3] == ", ".join(precisions)
    assert row[4] == ", ".join(f"{p} {known_host.channel_block}" for p in precisions)
    cpu = next(row for row in rows(result.output) if row[0] == "cpu")  # plain PyTorch: no bf16 on any host
    assert cpu[3:5] == ("f32, int8", f"f32 {known_host.channel_block}, int8 {known_host.channel_block}")
    assert "channel granularity" in result.output and "as on the host" in result.output


def test_devices_of_an_unknown_host_is_one_line(monkeypatch):
    monkeypatch.setenv("EDGETUNE_HOST_CPU", "avx9")
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: $EDGETUNE_HOST_CPU='avx9': not a known host; known: avx2, avx512, "
                                     "avx512_bf16, amx (unset it to use this machine's own facts)")


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
