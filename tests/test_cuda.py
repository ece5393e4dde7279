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
@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_cuda_measures_and_predicts_a_tiny_model(precision):
    device = create_device("cuda:0", protocol=FAST)
    info = device.info()
    assert info.precisions == ("f32", "f16") and "CUDA" in info.runtime
    model = create_model("resnet20", 10).eval()
    x = torch.rand(8, 3, 32, 32)
    deployment = device.deploy(model, x[:2], PrecisionPlan(precision))
    try:
        tolerance = 1e-3 if precision == "f32" else 5e-2
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
