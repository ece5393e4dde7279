"""Per-group quantization: search space from the device, NNI QAT, real int8 on OpenVINO CPU."""
import numpy as np
import optuna
import pytest
import torch

from edgetune.devices import DeviceError, DeviceInfo, PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.finetune import TrainSettings, train
from edgetune.objectives.groups import OTHER, compute_layers, derive_groups
from edgetune.objectives.models import create_model
from edgetune.objectives.pipeline import int8_modules
from edgetune.objectives.qdq import with_learned_int8
from edgetune.objectives.quantize import qat_finetune
from edgetune.searcher.params import FLOAT, PRECISION, kind_of, param_name
from edgetune.searcher.space import (SearchSpace, allowed_precisions, check_fixed_precisions, quantization_route,
                                     suggest_plan)
from edgetune.searcher.spec import SpecError, load_spec

FAST = LatencyProtocol(warmup_runs=3, warmup_seconds=0.1, min_runs=20, max_seconds=1.0)


def _info(*precisions):
    return DeviceInfo("test:dev", "a device", "none", 1, tuple(precisions))


def _space(spec, precisions, groups=("layer1", "layer2")):
    from edgetune.objectives.groups import LayerGroup

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    layer_groups = [LayerGroup(g, [f"{g}.0.conv1"], scopes=[g]) for g in groups]
    plans = []
    for _ in range(20):
        trial = study.ask()
        plans.append(suggest_plan(trial, spec, layer_groups, SearchSpace(precisions)))
        study.tell(trial, 0.0)
    return study, plans


def test_the_devices_precision_list_shapes_the_search_space():
    spec = load_spec(overrides={"study.targets": ["latency"]})
    study, plans = _space(spec, allowed_precisions(spec, _info("f32", "bf16", "int8")))
    distributions = study.trials[0].distributions
    assert distributions[param_name(PRECISION, FLOAT)].choices == ("f32", "bf16")
    assert distributions[param_name(PRECISION, "layer1")].choices == ("float", "int8")
    assert distributions[param_name(PRECISION, OTHER)].choices == ("float", "int8")
    assert {p.float_precision for p in plans} == {"f32", "bf16"}
    assert any(p.int8_groups for p in plans) and any(not p.int8_groups for p in plans)

    study, plans = _space(spec, allowed_precisions(spec, _info("f32")))
    assert not any(kind_of(k) == PRECISION for k in study.trials[0].distributions)
    assert all(p.float_precision == "f32" and not p.int8_groups for p in plans)


def test_the_spec_narrows_or_fixes_precisions():
    spec = load_spec(overrides={"search.precisions": ["f32", "int8"], "search.fixed_precisions": {"other": "f32"}})
    study, plans = _space(spec, allowed_precisions(spec, _info("f32", "bf16", "int8")))
    assert param_name(PRECISION, FLOAT) not in study.trials[0].distributions
    assert param_name(PRECISION, OTHER) not in study.trials[0].distributions
    assert all(OTHER not in p.int8_groups and p.float_precision == "f32" for p in plans)


def test_a_precision_the_device_cannot_run_is_a_clear_error():
    spec = load_spec(overrides={"search.precisions": ["f16", "int8"]})
    with pytest.raises(SpecError, match="spec key 'search.precisions': precision 'f16' is not supported by "
                                        "test:dev; supported: f32, bf16, int8"):
        allowed_precisions(spec, _info("f32", "bf16", "int8"))
    spec = load_spec(overrides={"search.fixed_precisions": {"layer1": "int8"}})
    with pytest.raises(SpecError, match="'search.fixed_precisions': precision 'int8' is not supported by test:dev"):
        allowed_precisions(spec, _info("f32"))
    with pytest.raises(SpecError, match="'search.fixed_precisions.stage9': no such group"):
        check_fixed_precisions(load_spec(overrides={"search.fixed_precisions": {"stage9": "f32"}}),
                               derive_groups(create_model("resnet20", 10)))


def test_nni_qat_fine_tune_runs_on_a_tiny_model(digits):
    model = create_model("resnet20", 10)
    layers = compute_layers(model, ["layer2", "layer3"])
    losses, scales = qat_finetune(model, layers, digits.x_train[:128], digits.y_train[:128], TrainSettings(1, 0.01, 64))
    assert len(losses) == 1 and np.isfinite(losses[0])
    assert type(model.layer2[0].conv1) is torch.nn.Conv2d  # NNI's wrappers are gone
    assert model(digits.x_val[:2]).shape == (2, 10)
    assert sorted(scales) == sorted(layers) and all(s["input"] > 0 and s["weight"] > 0 for s in scales.values())

    # the learned scales deployed as they are: OpenVINO runs exactly those layers in int8, calibrating nothing
    quantized = with_learned_int8(model, scales)
    assert "layer2.0.conv1" in dict(quantized.named_modules()) and isinstance(quantized.layer2[0].bn1, torch.nn.Identity)
    device = create_device("openvino:CPU", threads=1)
    deployment = device.deploy(quantized, digits.x_val[:2], PrecisionPlan("f32", ("layer2", "layer3"), None, "model"))
    try:
        assert deployment.precision_used.get("int8") == len(layers)
        x = digits.x_val[:64]
        with torch.no_grad():
            expected, plain = quantized(x).numpy(), model(x).numpy()
        deployed = deployment.predict(x.numpy())
        # OpenVINO's int8 kernels compute what QAT's fake quantization computed, far closer than the float model
        # does (not exactly on the AVX2 machine: docs/ARCHITECTURE.md)
        to_qat, to_float = np.abs(deployed - expected).mean(), np.abs(deployed - plain).mean()
        assert to_qat < to_float / 2 and (deployed.argmax(1) == expected.argmax(1)).mean() >= 0.95
        assert deployment.precision_of(["layer2"]) == {"int8": 7} and deployment.precision_of(["layer1"]) == {"f32": 6}
    finally:
        deployment.close()
    with pytest.raises(DeviceError, match="cpu cannot run a model's own int8 quantize/dequantize ops"):
        create_device("cpu").deploy(quantized, digits.x_val[:2], PrecisionPlan("f32", ("layer2",), None, "model"))


def test_inputs_qat_never_saw_below_zero_are_deployed_as_uint8(digits, tmp_path):
    # as NNCF does: a post-ReLU activation in u8 with zero point 0 (a signed one costs OpenVINO a zero-point
    # compensation, BENCHMARKS.md); the stem's input, the normalized image, stays int8
    import onnx

    model = create_model("resnet20", 10)
    layers = ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    _, scales = qat_finetune(model, layers, digits.x_train[:64], digits.y_train[:64], TrainSettings(1, 0.01, 32))
    assert {layer: s["unsigned"] for layer, s in scales.items()} == {"conv1": False, "layer1.0.conv1": True,
                                                                   "layer1.0.conv2": True}
    path = tmp_path / "qdq.onnx"
    torch.onnx.export(with_learned_int8(model, scales), digits.x_val[:1], path, opset_version=13, dynamo=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(path)).graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    quantized = [onnx.helper.tensor_dtype_to_np_dtype(types[n.output[0]]).name
                 for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantized.count("uint8") == 2 and quantized.count("int8") >= 1  # the two inputs; int8: the stem's, weights


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    train(model, digits.x_train, digits.y_train, TrainSettings(epochs=3, lr=0.05, batch_size=32))
    return model.eval()


def _deploy(model, digits, plan):
    device = create_device("openvino:CPU", threads=1, protocol=FAST)
    return device.deploy(model, digits.example_input(2), plan)


@pytest.mark.slow
def test_int8_on_openvino_cpu_is_real_smaller_and_as_accurate(trained, digits):
    calibration = digits.calibration_subset(200).numpy()
    f32 = _deploy(trained, digits, PrecisionPlan("f32"))
    everything = int8_modules(trained, derive_groups(trained), frozenset(["layer1", "layer2", "layer3", OTHER]))
    int8 = _deploy(trained, digits, PrecisionPlan("f32", tuple(everything), calibration))
    try:
        assert set(f32.precision_used) == {"f32"}
        assert set(int8.precision_used) == {"int8"}, int8.precision_used  # read back from the compiled model
        assert int8.weights_bytes < f32.weights_bytes / 3.8  # int8 weights: ~4x smaller on disk
        assert int8.size_bytes < f32.size_bytes / 2  # the graph (.xml) grows with the quantize nodes
        labels = digits.y_val.numpy()
        top1_f32 = (f32.predict(digits.x_val.numpy()).argmax(1) == labels).mean() * 100
        top1_int8 = (int8.predict(digits.x_val.numpy()).argmax(1) == labels).mean() * 100
        assert top1_f32 > 80
        assert abs(top1_f32 - top1_int8) <= 1.0
        assert int8.measure_latency().median_ms > 0
    finally:
        f32.close()
        int8.close()


@pytest.mark.slow
def test_mixed_plans_keep_the_float_groups_float(trained, digits):
    groups = derive_groups(trained)
    modules = int8_modules(trained, groups, frozenset(["layer2"]))
    assert modules == ["layer2"]
    deployment = _deploy(trained, digits, PrecisionPlan("f32", tuple(modules), digits.calibration_subset(100).numpy()))
    try:
        assert set(deployment.precision_of(["layer2"])) == {"int8"}
        assert set(deployment.precision_of(["layer1"])) == {"f32"}
        assert set(deployment.precision_of(["layer3"])) == {"f32"}
        assert set(deployment.precision_of(["conv1", "fc"])) == {"f32"}
    finally:
        deployment.close()


@pytest.mark.slow
def test_plain_cpu_int8_uses_pytorch_quantized_kernels_for_the_int8_groups_only(trained, digits):
    groups = derive_groups(trained)
    device = create_device("cpu", threads=1, protocol=FAST)
    assert "int8" in device.precisions()
    calibration = digits.calibration_subset(100).numpy()
    mixed = device.deploy(trained, digits.example_input(2),
                          PrecisionPlan("f32", tuple(int8_modules(trained, groups, frozenset(["layer3"]))), calibration))
    try:
        assert set(mixed.precision_of(["layer3"])) == {"int8"}
        assert set(mixed.precision_of(["layer1", "layer2"])) == {"f32"}
        labels = digits.y_val.numpy()
        top1 = (mixed.predict(digits.x_val.numpy()).argmax(1) == labels).mean() * 100
        reference = (trained(digits.x_val).argmax(1).numpy() == labels).mean() * 100
        assert abs(top1 - reference) <= 1.5
    finally:
        mixed.close()


def test_auto_deploys_the_learned_scales_where_the_device_runs_them():
    spec = load_spec()
    assert spec["search.quantization"] == "auto"  # the default
    assert quantization_route(spec, create_device("openvino:CPU").runs_model_int8_scales) == "qat-qdq"
    assert quantization_route(spec, create_device("cpu").runs_model_int8_scales) == "qat"
    assert quantization_route(load_spec(overrides={"search.quantization": "qat"}), True) == "qat"  # named: as named


@pytest.mark.slow
def test_a_qat_qdq_study_deploys_the_learned_scales(tmp_path):
    # quantization = "qat-qdq": the int8 recipe (trial 0) runs every group in int8 on OpenVINO with the scales its
    # QAT learned, calibrating nothing; a device that cannot run them stops the study before it starts
    import optuna
    from typer.testing import CliRunner

    from conftest import fresh_tiny_spec
    from edgetune.searcher import record
    from edgetune.searcher.cli import app

    fresh_tiny_spec(tmp_path)
    args = ["start", "--spec", str(tmp_path / "tiny.toml"), "--trials", "1", "--set", "search.quantization=qat-qdq"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/tiny.db")
    (trial,) = study.trials
    a = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE and a["seeded"] == "int8"
    assert a["quantization"] == "qat-qdq" and a["calibration_size"] == 0 and a["top1"] > 50
    baseline = record.baseline(study)  # the recipe prunes nothing: counted on the model, not its Q/DQ copy
    assert (a["flops"], a["params"]) == (baseline["flops"], baseline["params"])
    assert a["size_bytes"] < baseline["size_bytes"] / 2  # int8 weights on disk, not f32 ones beside their scales
    assert set(a["precision_plan"].values()) == {"int8"}
    for group, precision in a["precision_plan"].items():  # read back from the deployed model
        assert set(a["precision_used_by_group"][group]) == {"int8"}, (group, a["precision_used_by_group"])

    refused = CliRunner().invoke(app, [*args, "--device", "cpu", "--study-name", "on-cpu"])
    assert refused.exit_code == 2
    assert refused.output.strip().endswith('search.quantization = "qat-qdq": cpu cannot run a model\'s own int8 '
                                           'quantize/dequantize ops (the OpenVINO and ONNX Runtime devices can); use "qat" or "auto"')
