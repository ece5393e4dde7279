"""The small read-only commands, through typer's runner."""
import importlib.util

import optuna
import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgetune.objectives.groups import OTHER
from edgetune.searcher import cli
from edgetune.searcher.cli import app
from edgetune.searcher.params import DEPTH, FLOAT, INNER, PRECISION, PRUNER, WIDTH, kind_of, param_name
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
    assert param_name(INNER, "early") in result.output


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
    for row in [(param_name(INNER, "layer3"), "inner width", "16..64 step 8"), (param_name(WIDTH, "layer1"), "stream width", "8..16 step 8"),
                (param_name(DEPTH, "layer2"), "depth (blocks)", "1..3"), (param_name(PRECISION, OTHER), "precision", "float, int8")]:
        assert row in found, row
    assert ((param_name(PRECISION, FLOAT), "float precision", "f32, bf16") in found) == known_host.bf16
    assert (PRUNER, "channel criterion", "l1, l2, fpgm") in found
    assert "search dimensions on openvino:CPU (widths in multiples of 8, from the spec)" in words(result.output)
    off = runner.invoke(app, ["groups", "--model", "resnet20", "--set", "search.depth=false", "--set", "search.pruners=l1",
                              "--set", 'search.fixed_precisions={layer1 = "int8"}'])
    assert not [row for row in rows(off.output) if kind_of(row[0]) in (DEPTH, PRUNER)]
    assert (param_name(PRECISION, "layer1"), "precision", "int8 (fixed)") in rows(off.output)


def test_groups_counts_widths_in_the_devices_granularity(known_host):
    result = runner.invoke(app, ["groups", "--model", "resnet20"])
    assert result.exit_code == 0, result.output
    block, found = known_host.channel_block, rows(result.output)
    assert f"(widths in multiples of {block}, from the device openvino:CPU)" in words(result.output)
    assert (param_name(INNER, "layer3"), "inner width", f"16..64 step {block}") in found
    # ResNet-20's 16-channel stage has one width at a granularity of 16: the table says how to search it anyway
    collapsed = (param_name(INNER, "layer1"), "inner width", "16 (fixed)") in found
    assert collapsed == (block == 16) == (f"leave {param_name(INNER, 'layer1')}, {param_name(WIDTH, 'layer1')} one value; "
                                          "set search.channel_multiple = 8 to search finer widths anyway" in words(result.output))


def test_devices_lists_openvino_cpu_with_its_facts(known_host, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=1000))  # a long CPU or runtime name folds no cell
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    row = next(row for row in rows(result.output) if row[0] == "openvino:CPU")
    precisions = ["f32", "bf16", "int8"] if known_host.bf16 else ["f32", "int8"]
    assert row[2].startswith("openvino 20") and row[3] == f"{', '.join(precisions)} (×{known_host.channel_block})"
    cpu = next(row for row in rows(result.output) if row[0] == "cpu")  # plain PyTorch: no bf16 on any host
    assert cpu[3] == f"f32, int8 (×{known_host.channel_block})"
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
    # attention models with nothing to prune (vit, swin) or no 32 px input (maxvit) are not offered
    assert not [n for n in result.output.split() if n.startswith(("vit_", "swin_", "maxvit_"))]


def test_samplers_follow_the_targets():
    assert isinstance(make_sampler(load_spec(overrides={"study.targets": ["latency"]})), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(load_spec()), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(load_spec(overrides={"study.sampler": "random"})), optuna.samplers.RandomSampler)
    nsga = make_sampler(load_spec(overrides={"study.targets": ["latency", "top1", "size"], "study.sampler": "nsga2"}))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)


@pytest.mark.parametrize("args", [["pareto"], ["status", "tiny"], ["report"], ["export", "--pareto"], ["dashboard"],
                                  ["worker", "tiny"], ["finalize"],
                                  ["pareto", "--storage", "sqlite:///nowhere/nothere.db"]])
def test_reading_where_there_is_no_database_creates_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, env={"EDGETUNE_STORAGE": None})
    assert result.exit_code == 2, result.output
    missing = tmp_path / ("nowhere/nothere.db" if "--storage" in args else "edgetune.db")
    assert result.stderr.strip() == (f"error: no study database at {missing}; name the study's database with --storage "
                                     "sqlite:///PATH (or $EDGETUNE_STORAGE), or run `tune start` first")
    assert list(tmp_path.iterdir()) == []  # no empty database, no artifact store, no report or export folder


def test_a_storage_without_studies_or_with_several_says_what_to_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/two.db"
    optuna.create_study(study_name="x", storage=url)
    optuna.delete_study(study_name="x", storage=url)  # a database with no study in it
    empty = runner.invoke(app, ["pareto", "--storage", url])
    assert empty.stderr.strip() == f"error: {url} holds no study yet; run `tune start` first"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=url)
    several = runner.invoke(app, ["pareto", "--storage", url])
    assert several.exit_code == 2
    assert several.stderr.strip() == f"error: {url} holds 2 studies (a, b); name one (the command's STUDY argument)"


def test_the_default_study_name_follows_the_model_and_the_data():
    from edgetune.searcher.spec import default_study_name

    assert load_spec()["study.name"] == "resnet56-digits"  # the demo's study keeps its name
    assert load_spec(overrides={"model.name": "resnet20"})["study.name"] == "resnet20-digits"
    assert load_spec(overrides={"data.name": "cifar10"})["study.name"] == "resnet56-cifar10"
    assert load_spec(overrides={"model.name": "resnet20", "study.name": "mine"})["study.name"] == "mine"
    assert default_study_name("nets/mynet.py:build", "imagefolder", "/data/parts/") == "mynet.build-parts"
    assert default_study_name("pkg.nets:make", "digits") == "nets.make-digits"


def test_a_new_study_stores_its_artifact_store_as_an_absolute_path(tmp_path, monkeypatch):
    from edgetune.searcher.study import stored_values

    monkeypatch.chdir(tmp_path)  # `tune report` from another folder finds it
    assert stored_values(load_spec())["study.artifacts"] == str(tmp_path / "edgetune-artifacts")


def test_the_storage_variable_wins_over_a_spec_files_storage(tmp_path):
    from conftest import fresh_tiny_spec

    spec = fresh_tiny_spec(tmp_path) / "tiny.toml"  # sets study.storage = sqlite:///...
    args = ["start", "--spec", str(spec), "--workers", "2"]
    result = runner.invoke(app, args, env={"EDGETUNE_STORAGE": "postgresql://u:secret@127.0.0.1:1/db"})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot open storage postgresql://u:***@127.0.0.1:1/db: "), result.stderr
    assert runner.invoke(app, args, env={"EDGETUNE_STORAGE": None}).stderr.startswith(
        "error: --workers 2: SQLite takes one worker")
    flag = runner.invoke(app, [*args, "--storage", "sqlite:///x.db"], env={"EDGETUNE_STORAGE": "postgresql://u@h/db"})
    assert flag.stderr.startswith("error: --workers 2: SQLite takes one worker")  # the flag wins over both
    bad = runner.invoke(app, ["start", "--spec", str(spec)], env={"EDGETUNE_STORAGE": "edgetune.db"})
    assert bad.stderr.startswith("error: $EDGETUNE_STORAGE (spec key study.storage): must be an SQLAlchemy URL"), bad.stderr


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"edgetune {version('edgetune')}\n"


def test_the_readme_key_table_names_every_spec_key():
    import re
    from pathlib import Path

    from edgetune.searcher.spec import KEYS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme[readme.index("| section | keys |"):].split("\n\n", 1)[0]
    named = {}
    for row in table.splitlines()[2:]:
        _, sections, keys, _ = row.split("|")
        for section in re.findall(r"`(\w+)`", sections):
            named.setdefault(section, set()).update(re.findall(r"`(?:\w+\.)?(\w+)`", keys))
    assert [k for k in KEYS if k.partition(".")[2] not in named.get(k.partition(".")[0], set())] == []


def test_pareto_leaves_out_what_export_leaves_out_and_says_when_nothing_is_complete(tmp_path):
    from test_report import study_with_a_front_model_far_below_the_baseline

    url = f"sqlite:///{tmp_path}/far.db"
    study_with_a_front_model_far_below_the_baseline(url)
    shown = runner.invoke(app, ["pareto", "--storage", url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    front = lambda output: [line.split()[0] for line in output.splitlines() if line.split()[:1] and line.split()[0].isdigit()]  # noqa: E731
    assert front(shown.output) == ["2", "1", "0"]
    assert "not shown: front trial 3 (-38.60) loses more than 5 Top-1 points (--max-top1-drop)" in shown.output
    everything = runner.invoke(app, ["pareto", "--storage", url, "--max-top1-drop", "40"], env={"COLUMNS": "200"})
    assert front(everything.output) == ["3", "2", "1", "0"]
    waiting = optuna.create_study(study_name="new", storage=f"sqlite:///{tmp_path}/new.db")
    waiting.enqueue_trial({})
    result = runner.invoke(app, ["pareto", "--storage", f"sqlite:///{tmp_path}/new.db"])
    assert result.exit_code == 0 and result.stdout == ("study 'new': no complete trial yet (1 waiting); "
                                                       "the same `tune start` resumes it\n")


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("pymysql", "MySQLdb")), reason="a MySQL driver is installed")
def test_a_mysql_url_without_its_driver_says_what_to_install():
    result = runner.invoke(app, ["pareto", "--storage", "mysql://u:secret@127.0.0.1:1/db"])
    assert result.exit_code == 2
    assert result.stderr == ("error: cannot open storage mysql://u:***@127.0.0.1:1/db: no Python driver for mysql is "
                             "installed (pip install 'edgetune[mysql]')\n")


def test_a_mysql_url_uses_pymysql_where_only_it_is_installed(monkeypatch):
    from edgetune.searcher import storage

    installed = {"pymysql"}
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert storage.sqlalchemy_url("mysql://u:p@h/db") == "mysql+pymysql://u:p@h/db"
    installed.add("MySQLdb")  # mysqlclient, SQLAlchemy's own choice for mysql://, when it is there
    assert storage.sqlalchemy_url("mysql://u:p@h/db") == "mysql://u:p@h/db"
