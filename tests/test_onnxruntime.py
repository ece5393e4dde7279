"""The onnxruntime:CPU device: f32 as PyTorch computes it, int8 from QAT's scales and from ONNX Runtime's
static quantisation read back from the optimised graph, memory, bad input; its import path without torch."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from edgetune.devices import DeviceError, PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model
from edgetune.objectives.qdq import with_learned_int8

FAST = LatencyProtocol(warmup_runs=3, warmup_seconds=0.1, min_runs=20, max_seconds=1.0)
ROOT = Path(__file__).resolve().parents[1]


def _layers(model, prefix):
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and n.startswith(prefix)]


def test_f32_runs_as_pytorch_computes_it_at_its_fastest_thread_count(digits, tmp_path):
    device = create_device("onnxruntime:CPU", protocol=FAST)
    info = device.info()
    assert info.name == "onnxruntime:CPU" and info.runtime.startswith("onnxruntime ") and info.precisions == ("f32", "int8")
    assert info.extra["graph_optimization_level"] == "ORT_ENABLE_ALL" and info.measures_memory
    model = create_model("resnet20", 10).eval()
    deployment = device.deploy(model, digits.example_input(2))
    try:
        images = digits.x_val[:40]
        assert np.allclose(deployment.predict(images.numpy()), model(images).detach().numpy(), atol=1e-4)
        assert deployment.precision_used == {"f32": 22} and deployment.precision_of(["layer2"]) == {"f32": 7}
        assert deployment.runtime == "onnxruntime"
        options = deployment.thread_options()
        assert options[0] == device.cores and 1 in options
        stats = deployment.measure_latency()
        assert stats.threads == deployment.threads in options and set(stats.by_threads) == set(options)
        assert deployment.memory_bytes() > 0
        assert [p.name for p in deployment.save(tmp_path)] == ["model.onnx"]
        assert (tmp_path / "model.onnx").stat().st_size == deployment.size_bytes
    finally:
        deployment.close()
    pinned = create_device("onnxruntime:CPU", threads=1, protocol=FAST).deploy(model, digits.example_input(2))
    assert pinned.thread_options() == (1,) and pinned.measure_latency().threads == 1
    pinned.close()


def test_qat_scales_run_every_layer_in_int8_once_the_graph_is_completed(digits):
    # QAT's Q/DQ graph quantizes inputs and weights: alone, ONNX Runtime fuses a convolution into int8
    # (QLinearConv) only where its output is quantized again, a residual block's conv1. With calibration
    # images the device gives conv2 and the shortcut an output scale and the classifier an int32 bias
    # (devices/onnx_qdq.py): every layer of the plan then runs in int8, the rest stays f32.
    device = create_device("onnxruntime:CPU", threads=1, protocol=FAST)
    torch.manual_seed(0)  # the logits' distances below are of these weights
    model = create_model("resnet20", 10).eval()
    layers = _layers(model, "layer2") + ["fc"]
    qdq = with_learned_int8(model, {layer: {"input": 0.05, "weight": 0.01, "unsigned": True} for layer in layers})
    images = digits.x_val[:40]
    reference = qdq(images).detach().numpy()
    partial = device.deploy(qdq, digits.example_input(2), PrecisionPlan("f32", ("layer2", "fc"), int8_scales="model"))
    complete = device.deploy(qdq, digits.example_input(2), PrecisionPlan(
        "f32", ("layer2", "fc"), digits.calibration_subset(64).numpy(), int8_scales="model"))
    try:
        assert partial.precision_of(["layer2.0.conv1", "layer2.1.conv1", "layer2.2.conv1"]) == {"int8": 3}
        assert partial.precision_of(["layer2.0.conv2", "layer2.0.downsample"]) == {"f32": 2}
        assert partial.precision_of(["fc"]) == {"int8": 1}  # its bias made int32 needs no calibration
        assert complete.precision_of(["layer2", "fc"]) == {"int8": 8}
        assert complete.precision_of(["layer1", "layer3", "conv1"]) == {"f32": 14}
        assert complete.precision_used == {"f32": 14, "int8": 8}  # the graph that runs (ORT_ENABLE_ALL) agrees
        # QAT's scales are kept: the logits are PyTorch's fake-quantized ones to a fraction of what quantizing
        # moves them from f32
        moved = np.abs(model(images).detach().numpy() - reference).max()
        for deployment in (partial, complete):
            assert np.abs(deployment.predict(images.numpy()) - reference).max() < moved / 3
    finally:
        partial.close()
        complete.close()


def test_static_quantization_turns_exactly_the_plans_modules_int8(digits):
    device = create_device("onnxruntime:CPU", threads=1, protocol=FAST)
    model = create_model("resnet20", 10).eval()
    plan = PrecisionPlan("f32", ("layer2",), digits.calibration_subset(64).numpy())
    deployment = device.deploy(model, digits.example_input(2), plan)
    reference = device.deploy(model, digits.example_input(2))
    try:
        assert deployment.precision_of(["layer2"]) == {"int8": 7}
        assert deployment.precision_of(["conv1", "layer1", "layer3", "fc"]) == {"f32": 15}
        assert deployment.size_bytes < reference.size_bytes  # layer2's weights stored as int8
        logits = deployment.predict(digits.x_val[:40].numpy())
        assert logits.shape == (40, 10) and np.isfinite(logits).all()
        stats = deployment.measure_latency(reference=reference)
        assert stats.ratio > 0 and stats.threads == 1
    finally:
        deployment.close()
        reference.close()


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(DeviceError, match=r"^device 'onnxruntime:FOO' \(edgetune runs ONNX Runtime's CPU execution "
                                          r"provider\) is not available on this host; available: cpu, .*onnxruntime:CPU"):
        create_device("onnxruntime:FOO")
    # a valid ONNX file with an operator ONNX Runtime does not have
    node = helper.make_node("NoSuchOp", ["input"], ["logits"], domain="example.custom")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]),
              str(path))
    device = create_device("onnxruntime:CPU", threads=1)
    for plan in (PrecisionPlan(), PrecisionPlan("f32", ("/",), np.zeros((4, 3, 8, 8), np.float32))):
        with pytest.raises(DeviceError, match="^ONNX Runtime cannot load the model: ") as error:
            device.deploy_onnx(path, (3, 8, 8), plan, list(plan.int8_modules))
        assert "\n" not in str(error.value) and "NoSuchOp" in str(error.value)


def test_the_agents_import_path_needs_no_torch():
    # What `tune device-agent --device onnxruntime:CPU` imports on a board without PyTorch (agent/pyproject.toml).
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import edgetune.devices.agent_cli, edgetune.devices.agent, edgetune.devices.onnxruntime, edgetune.devices.remote\n"
            "from edgetune.devices import create_device\n"
            "d = create_device('onnxruntime:CPU'); i = d.info()\n"
            "print(i.name, i.granularity('f32'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "onnxruntime:CPU" and int(done.stdout.split()[1]) in (8, 16)


def test_the_slim_distribution_ships_the_device_package():
    import tomllib

    project = tomllib.loads((ROOT / "agent" / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["package-dir"] == {"edgetune.devices": "../devices"}
    assert project["project"]["scripts"]["tune"] == "edgetune.devices.agent_cli:main"
    names = {d.split(">")[0].split("=")[0].split("[")[0] for d in project["project"]["dependencies"]}
    assert not names & {"torch", "torchvision", "nni", "openvino", "nncf", "scipy"}, names


def test_the_t_quantile_constant_is_scipys():
    from scipy import stats

    from edgetune.devices.protocol import RATIO_BLOCKS, T975_BLOCKS

    assert T975_BLOCKS == pytest.approx(stats.t.ppf(0.975, RATIO_BLOCKS - 1), rel=1e-12)


@pytest.mark.slow
def test_a_study_on_onnxruntime_exports_a_front_that_plain_onnxruntime_scores_as_its_manifest_says(tmp_path, digits):
    import onnxruntime as ort
    import optuna
    from typer.testing import CliRunner

    from conftest import fresh_tiny_spec
    from edgetune.searcher.cli import app

    fresh_tiny_spec(tmp_path)
    result = CliRunner().invoke(app, ["start", "--spec", str(tmp_path / "tiny.toml"), "--trials", "2",
                                      "--device", "onnxruntime:CPU"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/tiny.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:
        a = trial.user_attrs
        assert a["device"]["name"] == "onnxruntime:CPU" and a["top1"] > 50
        for group, precision in a["precision_plan"].items():  # read back from the optimised graph
            used = a["precision_used_by_group"][group]
            assert ("int8" in used) == (precision == "int8"), (group, a["precision_used_by_group"])
            if precision == "int8":  # every layer of an int8 group, QAT's Q/DQ graph completed (devices/onnx_qdq.py)
                assert set(used) == {"int8"}, (group, a["precision_used_by_group"])
    seeded = next(t for t in complete if t.user_attrs.get("seeded") == "int8")  # the int8 recipe: QAT's scales
    # calibration images give the outputs QAT never quantized (a block's conv2, its shortcut) their scales
    assert seeded.user_attrs["quantization"] == "qat-qdq" and seeded.user_attrs["calibration_size"] > 0

    out = tmp_path / "exports"
    result = CliRunner().invoke(app, ["export", "tiny", "--storage", f"sqlite:///{tmp_path}/tiny.db", "--pareto",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    images, labels = digits.x_val.numpy(), digits.y_val.numpy()
    for folder in sorted(out.glob("trial-*")):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert "deployed/model.onnx" in manifest["files"] and manifest["libraries"]["onnxruntime"]
        device = manifest["device"]
        # plain ONNX Runtime, as the README shows
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, device["extra"]["graph_optimization_level"])
        options.intra_op_num_threads = device["threads_used"]
        session = ort.InferenceSession(str(folder / "deployed/model.onnx"), options,
                                       providers=device["extra"]["providers"].split(","))
        logits = session.run([device["extra"]["output_name"]], {device["extra"]["input_name"]: images})[0]
        assert (logits.argmax(1) == labels).mean() * 100 == pytest.approx(manifest["metrics"]["top1"], abs=0.3)
