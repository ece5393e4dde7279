"""Inference memory (``memory_bytes``, target ``memory``): real OpenVINO and torch in a child process."""
import pytest
import torch
from torch import nn

from edgetune.devices import DeviceError, DeviceInfo, create_device
from edgetune.devices.memory_probe import probe, supported
from edgetune.searcher.space import check_targets
from edgetune.searcher.spec import SpecError, load_spec, target_direction, target_unit


linux = pytest.mark.skipif(not supported(), reason="the memory probe needs Linux /proc")
X = torch.rand(2, 3, 32, 32)


def convnet(width: int) -> nn.Module:
    """Three 3x3 convolutions of ``width`` channels: 18 * width^2 weights, 4 bytes each at f32."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 10)).eval()


@linux
def test_openvino_memory_is_positive_measured_once_and_grows_with_the_weights():
    device = create_device("openvino:CPU", threads=1)
    assert device.info().measures_memory
    tiny, wide = device.deploy(convnet(8), X), device.deploy(convnet(512), X)  # 6 kB and 19 MB of weights
    try:
        small = tiny.memory_bytes()
        assert small > 0
        assert tiny.memory_bytes() == small  # cached on the deployment
        # the wide net's weights alone are ~19 MB: it must measure well above the tiny one
        assert wide.memory_bytes() > small + wide.weights_bytes / 2, (small, wide.memory_bytes(), wide.weights_bytes)
    finally:
        tiny.close()
        wide.close()


@linux
def test_plain_cpu_memory_is_measured_on_its_torchscript_file():
    device = create_device("cpu", threads=1)
    assert device.info().measures_memory
    deployment = device.deploy(convnet(256), X)  # 4.7 MB of weights
    try:
        assert deployment.memory_bytes() > deployment.size_bytes / 2
    finally:
        deployment.close()


@linux
def test_a_failing_probe_is_one_device_error(tmp_path):
    broken = tmp_path / "model.xml"
    broken.write_text("<net>not an IR")
    with pytest.raises(DeviceError) as info:
        probe(broken, (1, 3, 32, 32))
    assert str(info.value).startswith("memory probe of model.xml failed: ") and "\n" not in str(info.value)


def test_the_spec_accepts_memory_as_a_target():
    spec = load_spec(overrides={"study.targets": ["latency", "memory", "top1"]})
    assert spec.targets == ["latency", "memory", "top1"]
    assert target_unit("memory") == "memory_bytes" and target_direction("memory") == "minimize"
    assert spec.directions == ["minimize", "minimize", "maximize"]


def test_a_memory_target_on_a_device_that_cannot_measure_it_is_refused():
    spec = load_spec(overrides={"study.targets": ["latency", "memory"]})
    blind = DeviceInfo("openvino:NPU", "an NPU", "openvino", 0, ("f16",))  # measures_memory defaults to False
    with pytest.raises(SpecError, match="target 'memory': openvino:NPU cannot measure a deployed model's memory"):
        check_targets(spec, blind)
    check_targets(load_spec(overrides={"study.targets": ["latency"]}), blind)  # nothing asked of it: no error


# A study with --target latency,memory,top1 end to end: tests/test_custom_model.py (one study, both checks).
