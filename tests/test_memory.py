"""Inference memory (``memory_bytes``, target ``memory``): real OpenVINO and torch in a child process."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from bench.common import probe_target
from edgetune.devices import DeviceError, DeviceInfo, create_device
from edgetune.devices import memory_probe
from edgetune.devices.memory_probe import probe, probe_all, supported
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
def test_a_failing_probe_is_one_device_error_forked_or_fresh(tmp_path):
    broken = tmp_path / "model.xml"
    broken.write_text("<net>not an IR")
    with pytest.raises(DeviceError) as forked:
        probe(broken, (1, 3, 32, 32))
    assert str(forked.value).startswith("memory probe of model.xml failed: ") and "\n" not in str(forked.value)
    with pytest.raises(DeviceError) as fresh:
        probe_all(broken, (1, 3, 32, 32), fresh=True)
    assert str(forked.value) == str(fresh.value)  # the same last line of the same error
    assert "openvino" not in memory_probe._retired  # the model failed, not the server


def deployed_file(kind: str, folder, width: int = 256):
    device = create_device(kind, threads=1)
    deployment = device.deploy(convnet(width), X)
    return (deployment, *probe_target(device, deployment, folder))


@linux
@pytest.mark.parametrize("kind", ["cpu", "openvino:CPU", "onnxruntime:CPU"])
def test_a_forked_probe_measures_what_a_fresh_process_does(kind, tmp_path):
    """The figure stays the fresh process's: the forked child starts with the same resident memory as a
    fresh probe after its import (the server's library pages mapped again; without that a TorchScript
    probe read 30% high), and measures the same model within the figure's own spread. This process has
    run torch (its pools are up): the server is a fresh interpreter, never a fork of this one."""
    deployment, path, config = deployed_file(kind, tmp_path)  # 4.7 MB of weights
    try:
        forked = probe_all(path, (1, 3, 32, 32), config, threads=1)
        fresh = probe_all(path, (1, 3, 32, 32), config, threads=1, fresh=True)
    finally:
        deployment.close()
    assert (forked["process"], fresh["process"], fresh["fallback"]) == ("forked", "fresh", "asked for")
    assert forked["rss_before_bytes"] == pytest.approx(fresh["rss_before_bytes"], rel=0.03), (forked, fresh)
    # torch's figure spreads by up to 10% between fresh probes of one model (ONNX Runtime's is bimodal, 12%)
    assert forked["memory_bytes"] == pytest.approx(fresh["memory_bytes"], rel=0.2), (forked, fresh)


@pytest.fixture
def own_servers(monkeypatch):
    """This test's own fork servers and fallbacks, stopped after it; the session's stay as they were."""
    monkeypatch.setattr(memory_probe, "_servers", {})
    monkeypatch.setattr(memory_probe, "_retired", {})
    yield memory_probe
    memory_probe._stop_all()


@linux
def test_one_server_per_runtime_forks_every_probe_and_a_dead_one_falls_back_once(own_servers, caplog, tmp_path):
    deployment, path, config = deployed_file("openvino:CPU", tmp_path, 8)
    try:
        first = probe_all(path, (1, 3, 32, 32), config)
        server = own_servers._servers["openvino"].process
        second = probe_all(path, (1, 3, 32, 32), config)
        assert first["process"] == second["process"] == "forked"
        assert own_servers._servers["openvino"].process is server and server.poll() is None
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        with caplog.at_level(logging.WARNING, logger=memory_probe.__name__):
            fallen = probe_all(path, (1, 3, 32, 32), config)
            after = probe_all(path, (1, 3, 32, 32), config)
    finally:
        deployment.close()
    assert fallen["process"] == after["process"] == "fresh" and fallen["memory_bytes"] > 0
    assert fallen["fallback"] == after["fallback"] == own_servers._retired["openvino"]
    assert fallen["fallback"].startswith(("it ended", "it stopped reading")), fallen["fallback"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"memory probe: the openvino fork server is retired, probing in fresh processes: {fallen['fallback']}"]
    assert "openvino" not in own_servers._servers


LINGER = """
import json, os, sys, time
from pathlib import Path
from edgetune.devices import memory_probe
found = memory_probe.probe_all(Path(sys.argv[1]), (1, 3, 32, 32), json.loads(sys.argv[2]))
assert found["process"] == "forked", found
server = memory_probe._servers["openvino"].process.pid
child = os.fork()
if child == 0:  # as a multiprocessing "fork" child would: outlives the parent, holds its copies of the pipes
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # but not the test's: it reads until the parent's end
    os.dup2(1, 2)
    time.sleep(600)
    os._exit(0)
print(json.dumps({"server": server, "child": child}), flush=True)
os._exit(0)  # no atexit: the server must still see EOF
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@linux
def test_the_server_ends_with_its_process_even_if_a_forked_child_lives_on(tmp_path):
    deployment, path, config = deployed_file("openvino:CPU", tmp_path, 8)
    try:
        done = subprocess.run([sys.executable, "-c", LINGER, str(path), json.dumps(config)], capture_output=True,
                              text=True, timeout=300)
    finally:
        deployment.close()
    assert done.returncode == 0, done.stderr[-2000:]
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        for _ in range(600):  # EOF reaches it at once; the loop only spares a loaded host a false failure
            if not _alive(pids["server"]):
                break
            time.sleep(0.1)
        assert not _alive(pids["server"])
    finally:
        os.kill(pids["child"], signal.SIGKILL)


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
