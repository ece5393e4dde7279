import math
import subprocess
import sys
from dataclasses import replace
import time

import numpy as np
import pytest
import torch

from edgetune.devices import DeviceError, PrecisionPlan, available_devices, create_device
from edgetune.devices.protocol import LatencyProtocol, measure, median_ci95
from edgetune.objectives.models import create_model

FAST = LatencyProtocol(warmup_runs=5, warmup_seconds=0.2, min_runs=20, max_seconds=2.0)


def test_device_strings():
    assert "openvino:CPU" in available_devices()
    with pytest.raises(DeviceError, match="unknown device .tpu:0.; device kinds: cpu, cuda, onnxruntime, openvino"):
        create_device("tpu:0")
    # every available device, as `tune devices` lists them: cpu too, not only the runtime's own
    with pytest.raises(DeviceError, match="device 'openvino:NPU' is not available on this host; available: cpu, .*openvino:CPU"):
        create_device("openvino:NPU")
    with pytest.raises(DeviceError, match=r"device 'openvino:VPU' \(the NPU today, MYRIAD on runtimes before 2023.0\) "
                                          "is not available on this host; available: cpu, .*openvino:CPU"):
        create_device("openvino:VPU")


def test_openvino_cpu_measures_a_tiny_model_at_pinned_f32():
    device = create_device("openvino:CPU", threads=1, protocol=FAST)
    info = device.info()
    assert info.runtime.startswith("openvino ") and info.full_name and info.precisions[0] == "f32"
    model = create_model("resnet20", 10).eval()
    x = torch.rand(8, 3, 32, 32)
    deployment = device.deploy(model, x[:2])
    try:
        assert np.allclose(deployment.predict(x.numpy()), model(x).detach().numpy(), atol=1e-4)
        assert deployment.inference_precision == "f32"  # pinned, not the CPU's bf16 default
        assert deployment.threads == 1 and deployment.runtime == "openvino"
        assert deployment.precision_used == {"f32": sum(deployment.precision_used.values())}
        stats = deployment.measure_latency()
        assert stats.runs >= 20 and 0 < stats.median_ms <= stats.p90_ms
        assert stats.ci95_low_ms <= stats.median_ms <= stats.ci95_high_ms
        assert stats.device_median_ms and stats.device_median_ms > 0
        assert deployment.size_bytes > 4 * sum(p.numel() for p in model.parameters()) * 0.9  # f32 on disk
    finally:
        deployment.close()


_RELEASED_OUT_OF_ORDER = """
import gc, os, signal, sys, numpy, torch
from torch import nn
from edgetune.devices import PrecisionPlan, create_device

def deployed(plan=PrecisionPlan()):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    return create_device(sys.argv[1]).deploy(model, torch.zeros(1, 3, 8, 8), plan)

calibration = numpy.random.default_rng(0).random((8, 3, 8, 8), numpy.float32)
first, second = deployed(), deployed(PrecisionPlan(int8_modules=("0",), calibration=calibration))  # int8: its quantiser runs too (NNCF opens Cores of its own)
first.close(); del first; gc.collect()  # first in, first out
second.close(); del second; gc.collect()
handled = []
signal.signal(signal.SIGUSR1, lambda *_: handled.append(True))
os.kill(os.getpid(), signal.SIGUSR1)  # delivered on the main thread's alternate signal stack, as Ctrl-C is
print("handled" if handled else "missed")
"""


@pytest.mark.parametrize("device", ["openvino:CPU", "onnxruntime:CPU", "cpu"])
def test_deployments_released_in_any_order_leave_signals_working(device):
    """Each OpenVINO Core's CPU plugin swaps the thread's alternate signal stack and unmaps its own when
    released; with a Core per device, two released first-in-first-out left the main thread on an unmapped
    stack and this process died with SIGSEGV at the next Python signal handler (devices/openvino_core.py).
    Every local runtime is held to it: an f32 and an int8 deployment released in that order."""
    result = subprocess.run([sys.executable, "-c", _RELEASED_OUT_OF_ORDER, device], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "handled"


def test_unsupported_precision_is_refused():
    device = create_device("openvino:CPU")
    with pytest.raises(DeviceError, match="precision 'f64' is not supported by openvino:CPU; supported: f32"):
        device.deploy(create_model("resnet20", 10), torch.rand(2, 3, 32, 32), PrecisionPlan("f64"))


def test_onnx_scopes_follow_the_exporters_names():
    from edgetune.devices.onnx_export import onnx_scope

    resnet = create_model("resnet20", 10)
    assert onnx_scope(resnet, "layer1") == "/layer1/"
    assert onnx_scope(resnet, "layer1.0.conv1") == "/layer1/layer1.0/conv1/"
    assert onnx_scope(resnet, "fc") == "/fc/"
    mobilenet = create_model("mobilenet_v2", 10)
    assert onnx_scope(mobilenet, "features.1.conv.0.0") == "/features/features.1/conv/conv.0/conv.0.0/"


def test_median_interval_is_distribution_free_order_statistics():
    samples = np.arange(1, 101, dtype=float)
    median, low, high = median_ci95(samples)
    assert median == 50.5 and low == 41 and high == 61  # ranks n/2 -/+ 1.96 sqrt(n)/2


def test_the_ratios_interval_widens_when_blocks_of_pairs_disagree():
    """Ratios that shift halfway through a measurement (the host changed) are not 40 independent
    draws: the interval covers the shift, where the order statistics alone would not."""
    from edgetune.devices.protocol import ratio_half_width

    rng = np.random.default_rng(0)
    steady = 1.0 + rng.normal(0, 0.01, 40)
    shifted = np.concatenate([steady[:20], steady[20:] * 1.2])
    median, low, high = median_ci95(shifted)
    assert ratio_half_width(steady) < 0.02
    assert ratio_half_width(shifted) > 0.1 > (high - low) / 2 / median


def test_protocol_stops_once_the_interval_is_tight():
    stats = measure(lambda: time.sleep(0.001), LatencyProtocol(warmup_runs=3, warmup_seconds=0.05, min_runs=20,
                                                                target_ci_rel=0.5, max_seconds=5))
    assert stats.converged and stats.runs == 20 and stats.seconds < 5


def test_protocol_stops_at_the_time_limit_when_noise_never_settles():
    rng = np.random.default_rng(0)
    stats = measure(lambda: time.sleep(rng.choice([0.0001, 0.004])),
                    LatencyProtocol(warmup_runs=1, warmup_seconds=0.0, min_runs=20, target_ci_rel=0.001, max_seconds=0.5))
    assert not stats.converged and stats.runs >= 20 and stats.seconds >= 0.5


def test_paired_measurement_gives_the_ratio_to_a_reference():
    device = create_device("openvino:CPU", threads=1, protocol=FAST)
    x = torch.rand(2, 3, 32, 32)
    small = device.deploy(create_model("resnet20", 10).eval(), x)
    large = device.deploy(create_model("resnet56", 10).eval(), x)
    try:
        stats = large.measure_latency(reference=small)
        assert stats.reference_median_ms and stats.ratio_ci95_rel is not None
        assert stats.ratio > 1  # 56 layers against 20, same widths: slower, by how much depends on the machine
        assert stats.ci95_rel == stats.ratio_ci95_rel
        same = small.measure_latency(reference=small)
        # a model against itself: 1, within what the measurement itself says of its noise
        assert abs(same.ratio - 1.0) <= max(0.1, 2 * same.ratio_ci95_rel)
    finally:
        small.close()
        large.close()


def test_paired_protocol_alternates_segments_and_converges():
    from edgetune.devices.protocol import measure_paired

    order = []
    candidate, reference, ratio, ci = measure_paired(lambda: (order.append("r"), time.sleep(0.001)),
                                                     lambda: (order.append("c"), time.sleep(0.002)),
                                                     LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, target_ci_rel=0.2,
                                                                     max_seconds=3, segment_seconds=0.02, min_segments=6))
    assert 1.5 < ratio < 2.5 and ci <= 0.2 and reference.runs > candidate.runs >= 6 * 3
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches >= 6 and len(order) > 4 * switches  # several runs per segment, not single runs


def test_paired_protocol_times_a_model_after_it_has_settled():
    """A candidate that runs slowly right after the reference (its caches evicted), as small int8
    models did next to the f32 baseline, is timed at its settled speed, not at the cold one."""
    from edgetune.devices.protocol import measure_paired

    runs_since_reference = [0]

    def reference():
        runs_since_reference[0] = 0
        time.sleep(0.002)

    def candidate():
        runs_since_reference[0] += 1
        time.sleep(0.003 if runs_since_reference[0] <= 2 else 0.001)  # cold for two runs after a switch

    _, _, ratio, _ = measure_paired(reference, candidate, LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, max_seconds=3,
                                                                          target_ci_rel=0.05, settle_seconds=0.008))
    assert 0.4 < ratio < 0.65  # settled: 1 ms against 2 ms; single alternating runs would give 1.5


def test_fastest_of_several_thread_counts_is_kept_on_the_first_ones_scale():
    from edgetune.devices.protocol import measure_fastest

    quick = LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, min_runs=10, target_ci_rel=0.1, max_seconds=2,
                            segment_seconds=0.01, min_segments=6)
    stats = measure_fastest({2: lambda: time.sleep(0.002), 1: lambda: time.sleep(0.001)}, quick)
    assert stats.threads == 1 and set(stats.by_threads) == {1, 2}
    assert 0.35 < stats.by_threads[1][0] / stats.by_threads[2][0] < 0.7  # 1 ms against 2 ms, paired
    assert stats.median_ms == stats.by_threads[1][0] and stats.ci95_low_ms < stats.median_ms < stats.ci95_high_ms
    alone = measure_fastest({4: lambda: time.sleep(0.001)}, quick)
    assert alone.threads == 4 and alone.by_threads is None


def test_a_candidate_is_paired_at_its_fastest_count_and_scaled_to_the_references_fastest():
    """The reference runs 1 ms at 2 threads and 2 ms at 1; the candidate 0.6 ms at 2 and 0.5 ms at 1:
    it is timed at 1 thread (paired with the reference at 1), and its ratio is to the reference's
    fastest, 1 ms: 0.5, not the 0.25 of the pair at one thread."""
    from edgetune.devices.protocol import measure_paired_fastest

    quick = LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, target_ci_rel=0.1, max_seconds=2, min_segments=6)
    reference = {2: lambda: time.sleep(0.001), 1: lambda: time.sleep(0.002)}
    candidate = {2: lambda: time.sleep(0.0006), 1: lambda: time.sleep(0.0005)}
    threads, cand, ref, ratio, ci = measure_paired_fastest(reference, candidate, {2: (1.0, 0.0), 1: (2.0, 0.01)}, quick)
    assert threads == 1 and 0.4 < ratio < 0.62 and ci >= 0.01
    assert 1.5 < ref.median_ms < 3  # the reference as it ran beside it: at one thread
    with pytest.raises(ValueError, match=r"measured at \[3\] threads"):
        measure_paired_fastest(reference, candidate, {3: (1.0, 0.0)}, quick)
    # the reference's own ratio between its counts known to +-30% only: no pair can tighten that, so the
    # candidate's pair stops at half of it (here at once) instead of chasing a 0.1% target to the limit
    strict = replace(quick, target_ci_rel=0.001, max_seconds=5)
    threads, cand, _, _, ci = measure_paired_fastest(reference, candidate, {2: (1.0, 0.0), 1: (2.0, 0.3)}, strict)
    assert threads == 1 and cand.converged and cand.seconds < 5 and ci >= 0.3


def test_openvino_keeps_the_fastest_thread_count_when_the_spec_leaves_it_open():
    device = create_device("openvino:CPU", protocol=FAST)
    x = torch.rand(2, 3, 32, 32)
    model = device.deploy(create_model("resnet20", 10).eval(), x)
    try:
        options = model.thread_options()
        assert options[0] == model.threads and sorted(options[1:]) == [1 << i for i in range(len(options) - 1)]
        stats = model.measure_latency()
        assert stats.threads in options and model.threads == stats.threads
        if len(options) > 1:  # a host with one core has nothing to choose
            assert set(stats.by_threads) == set(options)
            assert stats.median_ms == min(ms for ms, _ in stats.by_threads.values())
        paired = model.measure_latency(model, stats.by_threads)  # against itself, at its fastest count
        assert abs(paired.ratio - 1.0) <= max(0.1, 2 * paired.ratio_ci95_rel)
    finally:
        model.close()
    pinned = create_device("openvino:CPU", threads=1, protocol=FAST).deploy(create_model("resnet20", 10).eval(), x)
    try:
        assert pinned.thread_options() == (1,)
    finally:
        pinned.close()


def test_plain_cpu_measures_a_tiny_model_with_threads_recorded():
    device = create_device("cpu", threads=1, protocol=FAST)
    info = device.info()
    assert info.name == "cpu" and info.runtime.startswith("torch ") and info.threads == 1
    model = create_model("resnet20", 10).eval()
    x = torch.rand(4, 3, 32, 32)
    deployment = device.deploy(model, x[:2])
    try:
        assert np.allclose(deployment.predict(x.numpy()), model(x).detach().numpy(), atol=1e-5)
        assert deployment.threads == 1 and deployment.precision_used == {"f32": 22}
        stats = deployment.measure_latency()
        assert stats.runs >= 20 and stats.median_ms > 0
        assert deployment.size_bytes > 0
    finally:
        deployment.close()
    with pytest.raises(DeviceError, match="device 'cpu' takes no target"):
        create_device("cpu:1")


@pytest.mark.parametrize("int8", [False, True], ids=["f32", "int8"])
def test_plain_cpu_ships_the_model_it_evaluated(int8, tmp_path):
    """The TorchScript file a user exports computes the logits Top-1 was measured on (traced without
    check_trace, so this is the check)."""
    model = create_model("resnet20", 10).eval()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plan = PrecisionPlan("f32", ("layer2", "layer3"), x.numpy()) if int8 else PrecisionPlan()
    deployment = create_device("cpu", threads=1, protocol=FAST).deploy(model, x[:2], plan)
    try:
        [shipped] = deployment.save(tmp_path)
        with torch.no_grad():
            logits = torch.jit.load(str(shipped)).eval()(x).numpy()
        assert np.allclose(logits, deployment.predict(x.numpy()), atol=1e-5)
        assert ("int8" in deployment.precision_used) == int8
    finally:
        deployment.close()


def test_openvino_throughput_is_its_own_figure():
    device = create_device("openvino:CPU", protocol=FAST)
    deployment = device.deploy(create_model("resnet20", 10).eval(), torch.rand(2, 3, 32, 32))
    try:
        fps = deployment.measure_throughput(seconds=0.5)
        assert math.isfinite(fps) and fps > 0  # a figure of its own; how high depends on the machine
    finally:
        deployment.close()
