"""ONNX export of what the exporter cannot write by itself: adaptive pooling to a size that does not
divide the input (VGG's 7x7 head on a 32-px image, whose features end at 1x1)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgetune.devices import create_device
from edgetune.devices.onnx_export import WindowedAdaptiveAvgPool2d, export_onnx


@pytest.mark.parametrize("size, output", [((1, 1), (7, 7)), ((5, 3), (2, 4)), ((8, 8), (3, 3)), ((7, 9), (7, None))])
def test_windowed_pooling_is_adaptive_average_pooling(size, output):
    x = torch.rand(2, 4, *size)
    expected = nn.AdaptiveAvgPool2d(output)(x)
    got = WindowedAdaptiveAvgPool2d(output)(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6)


def _vgg_shaped():
    """torchvision's VGG head at small scale: features down to 1x1, then adaptive pooling to 7x7."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
                         nn.Linear(8 * 49, 10)).eval()


def test_a_vgg_head_at_32_px_exports_runs_and_is_left_as_it_was(tmp_path):
    model, x = _vgg_shaped(), torch.rand(3, 3, 32, 32)
    path = export_onnx(model, x[:2], tmp_path / "vgg.onnx")
    logits = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]  # another batch size: dynamic
    np.testing.assert_allclose(logits, model(x).detach().numpy(), atol=1e-5)
    assert isinstance(model[6], nn.AdaptiveAvgPool2d)  # swapped for the export only
    deployment = create_device("openvino:CPU").deploy(model, x[:2])
    try:
        np.testing.assert_allclose(deployment.predict(x.numpy()), model(x).detach().numpy(), atol=1e-4)
    finally:
        deployment.close()
