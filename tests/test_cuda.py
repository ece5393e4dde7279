"""The CUDA adapter. These run where a GPU is present and skip cleanly elsewhere."""
import numpy as np
import pytest
import torch

from edgetune.devices import DeviceError, PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this host")
FAST = LatencyProtocol(warmup_runs=5, warmup_seconds=0.2, min_runs=20, max_seconds=2.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(DeviceError, match=r"device 'cuda:0' is not available on this host \(no such CUDA GPU\); "
                                          "available: cpu, openvino:CPU"):
        create_device("cuda")
    with pytest.raises(DeviceError, match="the target is a GPU index"):
        create_device("cuda:first")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["f32", "f16", "bf16"])
def test_cuda_measures_and_predicts_a_tiny_model(precision):
    device = create_device("cuda:0", protocol=FAST)
    info = device.info()
    assert info.precisions[:2] == ("f32", "f16") and "CUDA" in info.runtime
    if precision not in info.precisions:
        pytest.skip(f"{info.full_name} has no {precision}")
    model = create_model("resnet20", 10).eval()
    x = torch.rand(8, 3, 32, 32)
    deployment = device.deploy(model, x[:2], PrecisionPlan(precision))
    try:
        assert deployment.runtime == "cuda-graph" and deployment.runtime_fallback is None
        tolerance = {"f32": 1e-3, "f16": 5e-2, "bf16": 2e-1}[precision]  # bf16 keeps 8 bits of mantissa
        assert np.allclose(deployment.predict(x.numpy()), model(x).detach().numpy(), atol=tolerance)
        assert deployment.precision_used == {precision: 22}
        stats = deployment.measure_latency()
        assert stats.runs >= 20 and 0 < stats.median_ms and stats.device_median_ms > 0
        assert deployment.size_bytes > 0
        weights = sum(p.numel() * p.element_size() for p in model.parameters())  # f32 on the host
        assert info.measures_memory and deployment.memory_bytes() >= weights * (1 if precision == "f32" else 0.5)
    finally:
        deployment.close()


@gpu
@pytest.mark.gpu
def test_cuda_refuses_int8():
    with pytest.raises(DeviceError, match="precision 'int8' is not supported by cuda:0"):
        create_device("cuda:0").deploy(create_model("resnet20", 10), torch.rand(2, 3, 32, 32),
                                       PrecisionPlan("f32", ("layer1",), np.zeros((2, 3, 32, 32), np.float32)))


class HostSync(torch.nn.Module):
    """``nonzero`` must ask the host how large its output is: a CUDA graph cannot hold it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) + torch.nonzero(x > 2).shape[0] * 0.0


@gpu
@pytest.mark.gpu
def test_a_model_a_cuda_graph_cannot_hold_runs_as_torchscript_and_says_why():
    model = HostSync().eval()
    x = torch.rand(4, 3, 32, 32)
    deployment = create_device("cuda:0", protocol=FAST).deploy(model, x[:2], PrecisionPlan("f32"))
    try:
        assert deployment.runtime == "torchscript"
        assert deployment.runtime_fallback.startswith("CUDA graph capture failed: "), deployment.runtime_fallback
        assert np.allclose(deployment.predict(x.numpy()), model(x).detach().numpy(), atol=1e-4)
        assert deployment.measure_latency().median_ms > 0
    finally:
        deployment.close()


@gpu
@pytest.mark.gpu
def test_cuda_measures_energy_per_inference_with_nvml():
    device = create_device("cuda:0", protocol=FAST, batch=8)
    if torch.cuda.get_device_capability(0) < (7, 0):
        pytest.skip("this GPU's NVML has no total-energy counter (before Volta)")
    assert device.info().measures_energy, "no NVML energy counter: is nvidia-ml-py (pynvml) installed?"
    deployment = device.deploy(create_model("resnet20", 10).eval(), torch.rand(2, 3, 32, 32), PrecisionPlan("f16"))
    try:
        energy = deployment.measure_energy()
        assert energy.counter.startswith("nvml:") and energy.energy_mj > 0 and energy.idle_power_w > 0
        # a window of at least 100 of the counter's steps (capped at 20 s): one step is under 1% of the reading
        assert energy.window_s >= min(100 * energy.update_period_s, 20.0) and energy.runs > 100
        assert deployment.measure_throughput(seconds=0.5) > 0  # images/s at batch 8
    finally:
        deployment.close()
