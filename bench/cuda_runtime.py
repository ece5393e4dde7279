"""Is edgetune's cuda latency what a PyTorch user ships? (issue 31)

On one GPU, in one run, for a model at batch 1 (ResNet-56 by default; its weights do not change the
time): the latency edgetune records for the baseline (`cuda` adapter: frozen TorchScript replayed
as a CUDA graph, its latency protocol), a hand-written CUDA-graph replay of the eager module (the
recipe of PyTorch's CUDA-graph documentation), and the eager module, each timed as the median of
``--runs`` synchronised runs after warm-ups; then the adapter's energy per inference, three times.

    python -m bench.cuda_runtime --model resnet56 --precisions f32 f16 --json $OUT/cuda_runtime.json

Prints a table and writes the figures as JSON. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from edgetune.devices import PrecisionPlan, create_device
from edgetune.objectives.models import create_model

_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def median_ms(run, runs: int, warm_up: int) -> float:
    for _ in range(warm_up):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def hand_written(model: torch.nn.Module, x: torch.Tensor):
    """The eager module and its CUDA-graph replay, as PyTorch's documentation writes them."""
    sync = torch.cuda.synchronize

    def eager() -> None:
        with torch.no_grad():
            model(x)
        sync()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        model(x)

    def replay() -> None:
        graph.replay()
        sync()

    return eager, replay


def measure(name: str, precision: str, runs: int, warm_up: int) -> dict:
    device = create_device("cuda:0")
    model = create_model(name, 10).eval()
    example = torch.rand(2, 3, 32, 32)
    deployment = device.deploy(model, example, PrecisionPlan(precision))
    try:
        recorded = deployment.measure_latency()
        module = model.to("cuda:0", _DTYPES[precision]).to(memory_format=torch.channels_last)
        x = torch.rand(1, 3, 32, 32, device="cuda:0", dtype=_DTYPES[precision]).contiguous(memory_format=torch.channels_last)
        eager, replay = hand_written(module, x)
        row = {"model": name, "precision": precision, "runtime": deployment.runtime,
               "runtime_fallback": deployment.runtime_fallback,
               "edgetune_ms": recorded.median_ms, "edgetune_ci95_rel": recorded.ci95_rel, "edgetune_runs": recorded.runs,
               "hand_graph_ms": median_ms(replay, runs, warm_up), "eager_ms": median_ms(eager, runs, warm_up),
               "edgetune_again_ms": deployment.measure_latency().median_ms}  # drift check: the same, after the others
        if device.info().measures_energy:
            row["energy"] = [deployment.measure_energy().to_dict() for _ in range(3)]
        return row
    finally:
        deployment.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--precisions", nargs="+", default=["f32", "f16"])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=30)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"{'precision':9} {'runtime':11} {'edgetune ms':>11} {'again':>7} {'hand graph':>10} {'eager':>7} "
          f"{'vs graph':>8} {'eager/edgetune':>14}  energy mJ (3x), idle W", flush=True)
    rows = []
    for precision in args.precisions:  # each row printed and kept as it is measured: a timeout loses the rest only
        rows.append(r := measure(args.model, precision, args.runs, args.warm_up))
        energy = r.get("energy") or []
        joules = ", ".join(f"{e['energy_mj']:.3f}" for e in energy)
        spread = (max(e["energy_mj"] for e in energy) / min(e["energy_mj"] for e in energy) - 1) if energy else None
        print(f"{r['precision']:9} {r['runtime']:11} {r['edgetune_ms']:11.3f} {r['edgetune_again_ms']:7.3f} "
              f"{r['hand_graph_ms']:10.3f} {r['eager_ms']:7.3f} {r['edgetune_ms'] / r['hand_graph_ms'] - 1:+8.1%} "
              f"{r['eager_ms'] / r['edgetune_ms']:13.2f}x  {joules or 'no counter'}"
              + (f" (spread {spread:.1%}), idle {energy[0]['idle_power_w']:.1f} W" if energy else ""), flush=True)
        if r["runtime_fallback"]:
            print(f"  fell back: {r['runtime_fallback']}", flush=True)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
