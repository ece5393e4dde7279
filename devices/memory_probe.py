"""Peak resident memory that loading and running one deployed model adds to a fresh process.

    python -m edgetune.devices.memory_probe MODEL --shape 1,3,32,32 [--config JSON] [--threads N] [--runs 10]

MODEL is an OpenVINO IR (``model.xml``, compiled for the CPU with ``--config``, the deployment's
own compile config), an ONNX file (``model.onnx``, an ONNX Runtime CPU session with every graph
optimisation at ``--threads``, as devices/onnxruntime.py runs it) or a TorchScript file (``model.pt``,
run by ``torch.jit.load``). The probe
prints one JSON line, ``{"memory_bytes": N, ...}``, where N is exactly:

    VmHWM after [read the model, compile it (OpenVINO; ONNX Runtime: create its session), run ``runs``
                 inferences of one batch]
    - VmRSS just before reading it,

with the peak (VmHWM) reset to the current RSS at that point (``/proc/self/clear_refs``), so
nothing the process did earlier counts. "Before" is a process with the runtime imported and warmed
up on a one-convolution model of the same input channels (OpenVINO: its CPU plugin loaded and its
thread pool started; ONNX Runtime: a session run; torch: oneDNN and the intra-op pool), and the
input batch allocated: the
runtime's own code pages and threads are not attributed to the model. Everything resident the model
brings counts: the weights as read (OpenVINO memory-maps the .bin; the pages it touches are
resident), the plugin's repacked copies of them, the compiled graph, activations and scratch
buffers, the output tensors. Memory the allocator freed before and reuses is not seen (it was
already resident), so small models read slightly low; the figure depends on the thread count
(per-thread scratch), which is why the deployment's own config is passed.

Why a child process: in the process that searches, torch's and OpenVINO's allocator caches, the
baseline's deployment and every model compiled before would pollute the figure. The OpenVINO CPU
plugin exposes no memory figure of its own (its SUPPORTED_PROPERTIES, 2026.4, have none; only the
GPU plugin has GPU_MEMORY_STATISTICS); OpenVINO's benchmark_app logs the VmPeak (virtual, not
resident) growth over compile_model only. Linux only (/proc): elsewhere :func:`supported` is False
and the adapters report no figure.

The adapters run this file by its path, not as ``-m edgetune.devices.memory_probe``: the package's
``__init__`` imports torch, which an OpenVINO probe would then pay for (seconds) without needing it.
So the child side imports nothing from the package.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = 10
TIMEOUT_S = 300
_CLEAR_REFS = "/proc/self/clear_refs"


def supported() -> bool:
    """This host can reset and read a process's peak resident memory (Linux /proc)."""
    return sys.platform.startswith("linux") and os.access(_CLEAR_REFS, os.W_OK)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open(_CLEAR_REFS, "w") as refs:
        refs.write("5")  # "5": reset VmHWM to the current RSS (Linux >= 4.0)


def _openvino(path: str, shape: list[int], config: dict, runs: int) -> dict:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    core = ov.Core()
    # Warm-up on one convolution: loads the CPU plugin and starts its threads before "before".
    param = ops.parameter([1, shape[1], 8, 8], np.float32)
    conv = ops.convolution(param, ops.constant(np.zeros((4, shape[1], 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    warm = core.compile_model(ov.Model([conv], [param]), "CPU", config)
    warm.create_infer_request().infer({0: np.zeros([1, shape[1], 8, 8], np.float32)})
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    _reset_peak()
    before = _status_bytes("VmRSS")
    model = core.read_model(path)
    model.reshape(shape)
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for _ in range(runs):
        request.infer({0: x})
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS")}  # ``warm`` lives until here


def _onnxruntime(path: str, shape: list[int], threads: int, runs: int) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    def options():  # as devices/onnxruntime.py's session_options (this file imports nothing from the package)
        found = ort.SessionOptions()
        found.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        found.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        found.intra_op_num_threads, found.inter_op_num_threads = threads, 1
        return found

    # Warm-up on one convolution: loads the runtime's kernels (MLAS) before "before".
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([conv], "warm", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, shape[1], 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.zeros((4, shape[1], 3, 3), np.float32), "w")])
    warm = ort.InferenceSession(helper.make_model(graph).SerializeToString(), options(), providers=["CPUExecutionProvider"])
    warm.run(None, {"x": np.zeros([1, shape[1], 8, 8], np.float32)})
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    _reset_peak()
    before = _status_bytes("VmRSS")
    session = ort.InferenceSession(path, options(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(runs):
        session.run(None, feed)
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS")}  # ``warm`` lives until here


def _torchscript(path: str, shape: list[int], threads: int, runs: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    with torch.no_grad():  # warm-up: oneDNN and the intra-op thread pool
        torch.nn.functional.conv2d(torch.zeros(1, shape[1], 8, 8), torch.zeros(4, shape[1], 3, 3))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))

    _reset_peak()
    before = _status_bytes("VmRSS")
    module = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        for _ in range(runs):
            module(x)
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Peak resident memory a deployed model adds (see the module docstring).")
    parser.add_argument("model", help="an OpenVINO IR (.xml), an ONNX file (.onnx) or a TorchScript file (.pt)")
    parser.add_argument("--shape", required=True, help="the input batch's shape, e.g. 1,3,32,32")
    parser.add_argument("--config", default="{}", help="OpenVINO compile config as JSON (the deployment's)")
    parser.add_argument("--threads", type=int, default=0, help="torch or ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--runs", type=int, default=RUNS, help="inferences run after compiling")
    args = parser.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    start = time.perf_counter()
    if args.model.endswith(".xml"):
        found = _openvino(args.model, shape, json.loads(args.config), args.runs)
    elif args.model.endswith(".onnx"):
        found = _onnxruntime(args.model, shape, args.threads, args.runs)
    else:
        found = _torchscript(args.model, shape, args.threads, args.runs)
    # memory_bytes: the figure; settled_bytes: what is still resident once the runs are done (below
    # the peak only where memory went back to the system), for benchmarks that compare the two.
    print(json.dumps({"memory_bytes": found["peak"] - found["before"], "settled_bytes": found["after"] - found["before"],
                      "rss_before_bytes": found["before"], "seconds": round(time.perf_counter() - start, 3)}))


def probe(model: Path, shape: tuple[int, ...], config: dict | None = None, threads: int = 0, runs: int = RUNS,
          timeout: float = TIMEOUT_S) -> int:
    """Run the probe on ``model`` in a child process; its ``memory_bytes``. Raises DeviceError (one line)."""
    return int(probe_all(model, shape, config, threads, runs, timeout)["memory_bytes"])


def probe_all(model: Path, shape: tuple[int, ...], config: dict | None = None, threads: int = 0, runs: int = RUNS,
              timeout: float = TIMEOUT_S) -> dict:
    """Everything the probe prints (see :func:`main`)."""
    from .base import DeviceError

    # -P: the script's folder (devices/, whose openvino.py would shadow the runtime) stays off sys.path
    command = [sys.executable, "-P", str(Path(__file__)), str(model), "--shape", ",".join(str(v) for v in shape),
               "--config", json.dumps(config or {}), "--threads", str(threads), "--runs", str(runs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"memory probe of {model.name}: no result within {timeout:.0f} s") from None
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        raise DeviceError(f"memory probe of {model.name} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
        int(found["memory_bytes"])
        return found
    except (IndexError, ValueError, KeyError, TypeError):
        raise DeviceError(f"memory probe of {model.name} printed no result: {done.stdout.strip()[-200:]!r}") from None


if __name__ == "__main__":
    main()
