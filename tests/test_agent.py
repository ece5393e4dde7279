"""The device agent end to end on 127.0.0.1: upload, measure, predict; what it refuses."""
import io
import pickle
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from edgetune.devices import DeviceError, PrecisionPlan, create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model

TOKEN = "s3cret-token"
FAST = LatencyProtocol(warmup_runs=3, warmup_seconds=0.1, min_runs=20, max_seconds=1.0)


@pytest.fixture(scope="module")
def agent_url():
    import uvicorn

    from edgetune.devices.agent import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(create_device("openvino:CPU", threads=1, protocol=FAST), TOKEN, max_upload_bytes=8 * 2**20)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _post(url, data, token=TOKEN):
    request = urllib.request.Request(url, data=data, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_remote_device_deploys_measures_and_predicts(agent_url, digits, monkeypatch):
    monkeypatch.setenv("EDGETUNE_AGENT_TOKEN", TOKEN)
    device = create_device(f"remote:{agent_url}/openvino:CPU")
    assert device.info().name == f"remote:{agent_url}/openvino:CPU" and "int8" in device.precisions()
    model = create_model("resnet20", 10).eval()
    deployment = device.deploy(model, digits.example_input(2))
    reference = device.deploy(model, digits.example_input(2))
    try:
        logits = deployment.predict(digits.x_val[:20].numpy())
        assert np.allclose(logits, model(digits.x_val[:20]).detach().numpy(), atol=1e-4)
        stats = deployment.measure_latency(reference=reference)
        # the same model against itself: 1, within what the measurement says of its own noise (a loaded
        # host, as under pytest -n, moves it further than any fixed band)
        assert stats.runs >= 20 and abs(stats.ratio - 1.0) <= max(0.2, 2 * stats.ratio_ci95_rel)
        assert stats.threads == deployment.threads == 1
        assert deployment.precision_used == {"f32": 22} and deployment.size_bytes > 0
        assert deployment.runtime == "openvino"  # what ran it there, as the agent's adapter says
        assert device.info().measures_memory and deployment.memory_bytes() > 0  # the agent's probe, measured there
    finally:
        deployment.close()
        reference.close()
    mixed = device.deploy(model, digits.example_input(2),
                          PrecisionPlan("f32", ("layer2",), digits.calibration_subset(32).numpy()))
    try:
        assert set(mixed.precision_of(["layer2"])) == {"int8"} and set(mixed.precision_of(["layer1"])) == {"f32"}
    finally:
        mixed.close()


def test_wrong_token_is_refused(agent_url, monkeypatch):
    monkeypatch.setenv("EDGETUNE_AGENT_TOKEN", "wrong")
    with pytest.raises(DeviceError, match="answered 401: missing or wrong token"):
        create_device(f"remote:{agent_url}/openvino:CPU")


def test_oversized_upload_is_refused_before_it_is_read(agent_url):
    import http.client
    from urllib.parse import urlparse

    address = urlparse(agent_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", "/arrays")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Length", str(9 * 2**20))  # over the agent's 8 MiB limit
    connection.endheaders()
    connection.send(b"\x00" * 1024)
    response = connection.getresponse()
    assert response.status == 413 and b"over the limit" in response.read()
    connection.close()


def test_a_pickle_is_refused(agent_url):
    status, body = _post(f"{agent_url}/deployments?input_shape=3,32,32", pickle.dumps({"weights": [1, 2, 3]}))
    assert status == 400 and b"only ONNX models are accepted" in body
    buffer = io.BytesIO()
    torch.save(create_model("resnet20", 10).state_dict(), buffer)  # a torch checkpoint: a zip with a pickle
    status, body = _post(f"{agent_url}/deployments?input_shape=3,32,32", buffer.getvalue())
    assert status == 400 and b"only ONNX models are accepted" in body
    status, body = _post(f"{agent_url}/arrays", pickle.dumps(np.zeros(3)))
    assert status == 400 and b"without pickles" in body
