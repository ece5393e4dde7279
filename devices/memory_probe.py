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
baseline's deployment and every model compiled before would pollute the figure. Importing the runtime
is most of a fresh process's time (torch: 2 s on an idle host, 6-20 s on a loaded one), so the child
is forked from a server that has imported the runtime and done nothing else (:func:`probe_all`); it
starts where a fresh process stands after that import, its resident pages included (``_map_again``),
then warms up and measures as above. A fresh process remains the fallback. The OpenVINO CPU
plugin exposes no memory figure of its own (its SUPPORTED_PROPERTIES, 2026.4, have none; only the
GPU plugin has GPU_MEMORY_STATISTICS); OpenVINO's benchmark_app logs the VmPeak (virtual, not
resident) growth over compile_model only. Linux only (/proc): elsewhere :func:`supported` is False
and the adapters report no figure.

The fresh probe and the server run this file by its path, not as ``-m edgetune.devices.memory_probe``:
the package's ``__init__`` imports torch, which an OpenVINO probe would then pay for (seconds) without
needing it. So the child side imports nothing from the package.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
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
    before, before_file = _status_bytes("VmRSS"), _status_bytes("RssFile")
    model = core.read_model(path)
    model.reshape(shape)
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for _ in range(runs):
        request.infer({0: x})
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS"),
            "file": _status_bytes("RssFile") - before_file}  # ``warm`` lives until here


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
    before, before_file = _status_bytes("VmRSS"), _status_bytes("RssFile")
    session = ort.InferenceSession(path, options(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(runs):
        session.run(None, feed)
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS"),
            "file": _status_bytes("RssFile") - before_file}  # ``warm`` lives until here


def _torchscript(path: str, shape: list[int], threads: int, runs: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    with torch.no_grad():  # warm-up: oneDNN and the intra-op thread pool
        torch.nn.functional.conv2d(torch.zeros(1, shape[1], 8, 8), torch.zeros(4, shape[1], 3, 3))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))

    _reset_peak()
    before, before_file = _status_bytes("VmRSS"), _status_bytes("RssFile")
    module = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        for _ in range(runs):
            module(x)
    return {"before": before, "peak": _status_bytes("VmHWM"), "after": _status_bytes("VmRSS"),
            "file": _status_bytes("RssFile") - before_file}


def _runtime_of(model: Path) -> str:
    """The runtime a model file is for, by its suffix: IR, ONNX, else TorchScript."""
    return {".xml": "openvino", ".onnx": "onnxruntime"}.get(model.suffix, "torch")


def _measure(model: str, shape: list[int], config: dict, threads: int, runs: int) -> dict:
    start = time.perf_counter()
    runtime = _runtime_of(Path(model))
    if runtime == "openvino":
        found = _openvino(model, shape, config, runs)
    elif runtime == "onnxruntime":
        found = _onnxruntime(model, shape, threads, runs)
    else:
        found = _torchscript(model, shape, threads, runs)
    # memory_bytes: the figure; settled_bytes: what is still resident once the runs are done (below
    # the peak only where memory went back to the system), for benchmarks that compare the two, and
    # settled_file_bytes its file-backed part (code, mapped weights); rss_before_bytes: where it starts.
    return {"memory_bytes": found["peak"] - found["before"], "settled_bytes": found["after"] - found["before"],
            "settled_file_bytes": found["file"], "rss_before_bytes": found["before"],
            "seconds": round(time.perf_counter() - start, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Peak resident memory a deployed model adds (see the module docstring).")
    parser.add_argument("model", help="an OpenVINO IR (.xml), an ONNX file (.onnx) or a TorchScript file (.pt)")
    parser.add_argument("--shape", required=True, help="the input batch's shape, e.g. 1,3,32,32")
    parser.add_argument("--config", default="{}", help="OpenVINO compile config as JSON (the deployment's)")
    parser.add_argument("--threads", type=int, default=0, help="torch or ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--runs", type=int, default=RUNS, help="inferences run after compiling")
    args = parser.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    print(json.dumps(_measure(args.model, shape, json.loads(args.config), args.threads, args.runs)))


# The fork server: one per runtime and searching process, the same file run with ``--serve RUNTIME``.
# It imports the runtime (what a fresh probe spends most of its time on) and nothing else: no model
# is read or run in it, so each child it forks is what a fresh process is just after that import.

_PRELOAD = {"openvino": ["numpy", "openvino", "openvino.opset13"], "onnxruntime": ["numpy", "onnx", "onnxruntime"],
            "torch": ["torch"]}


def _resident_runs() -> list[tuple[int, int]]:
    """(address, bytes) of each run of pages resident in this process's readable mappings (bit 63 of
    /proc/self/pagemap, readable without privileges)."""
    import re

    page = os.sysconf("SC_PAGE_SIZE")
    present = bytes.maketrans(bytes(range(256)), bytes(0x31 if b & 0x80 else 0x30 for b in range(256)))
    runs = []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if fields[1][0] != "r" or fields[-1] in ("[vvar]", "[vvar_vclock]", "[vsyscall]", "[vdso]"):
                continue
            start, end = (int(v, 16) for v in fields[0].split("-"))
            for at in range(start, end, page << 20):  # 8 MB of pagemap at a time
                pagemap.seek(at // page * 8)
                flags = pagemap.read((min(end, at + (page << 20)) - at) // page * 8)[7::8].translate(present)  # top bytes
                runs += [(at + m.start() * page, (m.end() - m.start()) * page) for m in re.finditer(b"1+", flags)]
    return runs


def _map_again(runs: list[tuple[int, int]]) -> None:
    """Map the server's resident pages into this forked child. A fork copies the page tables of memory
    that was written (anonymous, copy-on-write) but not of file mappings never written: the runtime's
    code and read-only data that the import touched are resident in the server and in a fresh process,
    yet not in the child until touched again, so the model's first use of them would count (+12 MB
    on a TorchScript probe). Mapping them here (page cache already read; nothing allocated) makes the
    child's RSS before its warm-up the server's, i.e. a fresh probe's at that point."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = os.sysconf("SC_PAGE_SIZE")
    for address, length in runs:
        if libc.madvise(address, length, 22) != 0 and ctypes.get_errno() == errno.EINVAL:  # 22: MADV_POPULATE_READ
            for at in range(address, address + length, page):  # Linux < 5.14: read a byte of each page
                ctypes.string_at(at, 1)


def _last_line(error: BaseException) -> str:
    """What a fresh probe's failure shows: the last line of its traceback."""
    import traceback

    lines = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def _fork_one(request: dict) -> dict:
    """Fork a child that measures the request's model; its result, {"error": line} or {"crashed": why}."""
    import select
    import signal

    runs = _resident_runs()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        code = 0
        try:
            _map_again(runs)
            out = _measure(request["model"], request["shape"], request["config"], request["threads"], request["runs"])
        except BaseException as error:  # noqa: BLE001 - reported as a fresh probe's stderr would be
            out, code = {"error": _last_line(error)}, 1
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(write, data):]
        os._exit(code)
    os.close(write)
    chunks, deadline = [], time.monotonic() + request["timeout"]
    with os.fdopen(read, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"crashed": f"no result within {request['timeout']:.0f} s"}
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        ended = f"signal {-status}" if status < 0 else f"exit status {status}"
        return {"crashed": f"a forked probe ended without a result ({ended})"}


def _serve(runtime: str) -> None:
    """Import ``runtime``, say so, then answer one JSON request a line on stdin until it closes."""
    import ctypes  # noqa: F401 - for _map_again, imported here so that its pages are the server's
    import importlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the searching process's to handle; EOF ends us
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a runtime prints goes to stderr, never into the replies
    for name in _PRELOAD[runtime]:
        importlib.import_module(name)
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            reply = _fork_one(json.loads(line))
        except Exception as error:  # noqa: BLE001 - e.g. no /proc/self/pagemap, or no memory to fork
            reply = {"crashed": f"it could not fork a probe: {_last_line(error)}"}
        replies.write(json.dumps(reply) + "\n")


class _ServerFailed(Exception):
    """The fork server, not the model, failed: probe in a fresh process instead."""


class _Server:
    def __init__(self, runtime: str):
        import subprocess

        self.runtime, self.lock, self._buffer, self.ready = runtime, threading.Lock(), b"", False
        # -P: as for a fresh probe; stderr: the runtime's own logs, which a fresh probe's caller drops too;
        # unbuffered, so that a process forked from this one holds no half-sent request to flush
        self.process = subprocess.Popen([sys.executable, "-P", str(Path(__file__)), "--serve", runtime], bufsize=0,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def _line(self, timeout: float) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                raise _ServerFailed(f"it gave no answer within {timeout:.0f} s")
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise _ServerFailed(f"it ended, exit status {self.process.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def ask(self, request: dict, timeout: float) -> dict:
        with self.lock:
            if not self.ready:
                self._line(TIMEOUT_S)  # the runtime's import
                self.ready = True
            data = (json.dumps(request) + "\n").encode()
            try:
                while data:
                    data = data[self.process.stdin.write(data):]
            except OSError as error:
                raise _ServerFailed(f"it stopped reading: {error}") from None
            return self._line(timeout + 30)  # the server enforces ``timeout`` on its child itself

    def stop(self) -> None:
        import subprocess

        try:
            self.process.stdin.close()  # EOF: it exits after the probe in flight, if any
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


_servers: dict[str, _Server] = {}
_retired: dict[str, str] = {}  # runtime -> why this process probes it in fresh processes
_hooked = False
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A process forked from this one (multiprocessing's "fork") starts its own servers: it closes its
    copies of our pipes, so ours still see EOF when we exit, and never writes into them."""
    global _lock
    _lock = threading.Lock()  # another thread may have held ours at the fork
    for server in _servers.values():
        server.process.stdin.close()
        server.process.stdout.close()
    _servers.clear()


def _stop_all() -> None:
    for server in _servers.values():
        server.stop()
    _servers.clear()


def _server(runtime: str) -> _Server:
    global _hooked
    with _lock:
        if not _hooked:
            import atexit

            os.register_at_fork(after_in_child=_forget_in_child)
            atexit.register(_stop_all)
            _hooked = True
        if runtime not in _servers:
            _servers[runtime] = _Server(runtime)
        return _servers[runtime]


def _retire(runtime: str, why: str) -> None:
    import logging

    with _lock:
        _retired[runtime] = why
        server = _servers.pop(runtime, None)
    if server:
        server.process.kill()
        server.stop()
    logging.getLogger(__name__).warning("memory probe: the %s fork server is retired, probing in fresh processes: %s",
                                        runtime, why)


def probe(model: Path, shape: tuple[int, ...], config: dict | None = None, threads: int = 0, runs: int = RUNS,
          timeout: float = TIMEOUT_S) -> int:
    """Run the probe on ``model`` in a child process; its ``memory_bytes``. Raises DeviceError (one line)."""
    return int(probe_all(model, shape, config, threads, runs, timeout)["memory_bytes"])


def probe_all(model: Path, shape: tuple[int, ...], config: dict | None = None, threads: int = 0, runs: int = RUNS,
              timeout: float = TIMEOUT_S, fresh: bool = False) -> dict:
    """Everything the probe prints (see :func:`main`), and ``process``: "forked" (from this runtime's fork
    server) or "fresh" (``fresh`` asked for it, or ``fallback`` says why the server was not used).

    The child is forked from a server process that has imported the runtime and done nothing else, so it
    starts where a fresh probe stands after that import; it then warms up, resets its peak and measures
    exactly as a fresh one. The server is never this process (a fork of which would copy one thread of
    torch's or OpenVINO's running pools): it is started here, once per runtime, on the first probe, and
    ends when this process does (its stdin closes). The idle threads the runtime's import leaves in it
    (numpy's OpenBLAS pool, which OpenBLAS stops at a fork and restarts on use; an idle Python executor of
    OpenVINO's; an idle ONNX Runtime thread) are those a forkserver preloading the runtime would have. Should the server fail (not
    start, not answer, or a forked child die without a result) it is retired for this process with one
    warning giving the reason, and the probe runs in a fresh process."""
    from .base import DeviceError

    request = {"model": str(model), "shape": list(shape), "config": config or {}, "threads": threads, "runs": runs,
               "timeout": timeout}
    runtime = _runtime_of(Path(model))
    why = "asked for" if fresh else _retired.get(runtime) or (None if hasattr(os, "fork") else "no os.fork here")
    if why is None:
        try:
            found = _server(runtime).ask(request, timeout)
            if "crashed" in found:
                raise _ServerFailed(found["crashed"])
        except (_ServerFailed, OSError, ValueError) as error:
            why = str(error)
            _retire(runtime, why)
        else:
            if "error" in found:
                raise DeviceError(f"memory probe of {Path(model).name} failed: {found['error']}")
            return {**found, "process": "forked"}
    return {**_fresh(model, shape, config, threads, runs, timeout), "process": "fresh", "fallback": why}


def _fresh(model: Path, shape: tuple[int, ...], config: dict | None, threads: int, runs: int, timeout: float) -> dict:
    import subprocess

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
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2])
    else:
        main()
