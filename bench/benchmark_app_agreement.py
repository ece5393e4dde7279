"""edgetune's latency against OpenVINO's own benchmark_app, on the same IR and device.

    python -m bench.benchmark_app_agreement --study NAME [--storage URL] [--artifacts DIR] [--remeasure]
        [--seconds 2] [--min-pairs 8] [--max-pairs 60] [--target-ci 0.025]
    python -m bench.benchmark_app_agreement [--model resnet56] [--rounds 5] [--seconds 10]

With ``--study``: each model of the study's Pareto front (the one ``tune pareto`` prints), as stored
in its artifact, against the baseline's IR from the same store, both timed by benchmark_app as a user
would (``-api sync -infer_precision f32``, one stream, ``-nthreads`` = the thread count each model
ran at in the study, ``device.threads_used``), alternating short runs: B M B M ... B. Each
pair's ratio is the model's median over the geometric mean of the baseline runs either side of it,
so a drift of the host that is linear over a pair cancels. Pairs are added until the 95% interval
of the mean log-ratio (Student's t) is within ``--target-ci`` (or ``--max-pairs``). Prints each
model's recorded ``latency_vs_baseline`` (edgetune's paired protocol, measured during the trial)
beside the reference ratio and its interval; the last line is the largest disagreement.
``--remeasure``: each model is first timed again by today's adapter, in this process (the baseline
at every thread count, then the model paired with it at its fastest count, as a trial of a study
with ``device.threads = 0`` is), and benchmark_app runs each at the count that measurement kept:
today's protocol against benchmark_app on the study's IRs, without running the study again.

Without it: exports the model (random weights: latency does not depend on them) to OpenVINO IR at batch 1,
then alternates, round by round, edgetune's measurement (`OpenVINODevice`, LATENCY hint, f32
pinned, synchronous) and `benchmark_app -hint latency -api sync -infer_precision f32` on that
file. Reports each round's two medians and their ratio, and the spread of edgetune's medians
across rounds (repeatability within one process).
"""
from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetune.devices import create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.models import create_model

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*(ms|us)")  # it prints microseconds below 1 ms


def batch_one_shape(model) -> list[int]:
    """An OpenVINO model's input shape with its dynamic dimensions (the batch) at 1: what edgetune times."""
    return [d.get_length() if d.is_static else 1 for d in model.inputs[0].get_partial_shape()]


def benchmark_app_on(xml: Path, seconds: float, threads: int = 0) -> float:
    """benchmark_app's median latency (ms) of one IR as a user would run it; a dynamic input becomes batch 1
    (the shape edgetune times); ``threads``: its ``-nthreads`` (0: the latency hint's choice)."""
    from edgetune.devices.openvino_core import openvino_core

    shape = batch_one_shape(openvino_core().read_model(xml))
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    # benchmark_app takes -nthreads only without a hint: then one stream and those threads, as the latency hint
    # with INFERENCE_NUM_THREADS compiles edgetune's deployment
    tuning = ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)] if threads else ["-hint", "latency"]
    done = subprocess.run([tool, "-m", str(xml), "-d", "CPU", *tuning, "-api", "sync", "-infer_precision",
                           "f32", "-shape", str(shape).replace(" ", ""), "-t", f"{seconds:g}"],
                          capture_output=True, text=True)
    match = MEDIAN.search(done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(f"benchmark_app failed on {xml}:\n" + (done.stdout + done.stderr)[-2000:])
    return float(match.group(1)) / (1000.0 if match.group(2) == "us" else 1.0)


def adapter_deployment(device, xml: Path):
    """An IR deployed by the OpenVINO adapter as a trial's would be (f32 pinned, batch 1)."""
    from edgetune.devices.openvino import OpenVINODeployment

    return OpenVINODeployment(xml, device, tuple(batch_one_shape(device.core.read_model(str(xml)))[1:]), "f32", {})


def t_interval(logs: np.ndarray) -> tuple[float, float]:
    """The geometric-mean ratio and the relative half-width of its 95% interval (Student's t on the logs)."""
    from scipy.stats import t

    mean = float(np.mean(logs))
    half = float(t.ppf(0.975, len(logs) - 1) * np.std(logs, ddof=1) / np.sqrt(len(logs)))
    return math.exp(mean), math.expm1(half)


def paired_reference(model: Path, baseline: Path, seconds: float, min_pairs: int, max_pairs: int,
                     target_ci: float, threads: int = 0, baseline_threads: int = 0) -> tuple[float, float, int]:
    """benchmark_app's ratio model/baseline by alternated runs: (ratio, its 95% half-width, pairs)."""
    before = benchmark_app_on(baseline, seconds, baseline_threads)
    logs: list[float] = []
    while True:
        ours = benchmark_app_on(model, seconds, threads)
        after = benchmark_app_on(baseline, seconds, baseline_threads)
        logs.append(math.log(ours) - (math.log(before) + math.log(after)) / 2)
        before = after
        if len(logs) >= min_pairs:
            ratio, half = t_interval(np.array(logs))
            if half <= target_ci or len(logs) >= max_pairs:
                return ratio, half, len(logs)


def deployed_ir(store: str, artifact_id: str, folder: Path) -> Path:
    """The deployed OpenVINO IR of a stored trial (or baseline) artifact, unpacked into ``folder``."""
    from edgetune.searcher import artifacts

    return next((artifacts.fetch(store, artifact_id, folder) / "deployed").glob("*.xml"))


def agreement_on_study(args) -> None:
    import optuna

    from edgetune.searcher import pareto, record
    from edgetune.searcher.storage import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.storage, args.study)
    store = record.artifacts_dir(study, args.artifacts)
    base = record.baseline(study)
    rows = pareto.front(study)
    print(f"study {study.study_name}: {len(rows)} front models against the baseline ({base['latency_ms']:.3f} ms "
          f"recorded); benchmark_app runs of {args.seconds:g} s at each model's thread count, pairs until the 95% "
          f"interval is within ±{args.target_ci:.1%} (at least {args.min_pairs}, at most {args.max_pairs})"
          f"{'; each model re-measured by the adapter first' if args.remeasure else ''}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = deployed_ir(store, base["artifact_id"], Path(tmp) / "baseline")
        base_threads, by_threads, device = base["device"]["threads_used"], None, None
        if args.remeasure:
            device = create_device("openvino:CPU", protocol=LatencyProtocol(max_seconds=5.0))
            reference = adapter_deployment(device, baseline)
            stats = reference.measure_latency()
            base_threads, by_threads = stats.threads, stats.by_threads
            print("baseline re-measured: " + ", ".join(f"{t} thread(s) {ms:.3f} ms" for t, (ms, _) in sorted((by_threads or {}).items())))
        table = []
        for row in rows:
            model = deployed_ir(store, row.attrs["artifact_id"], Path(tmp) / f"trial-{row.number}")
            recorded, ci, threads = row.attrs["latency_vs_baseline"], row.attrs.get("latency_ci95_rel"), row.attrs["device"]["threads_used"]
            if args.remeasure:
                stats = adapter_deployment(device, model).measure_latency(reference, by_threads)
                recorded, ci, threads = stats.ratio, stats.ci95_rel, stats.threads
            ratio, half, pairs = paired_reference(model, baseline, args.seconds, args.min_pairs, args.max_pairs,
                                                  args.target_ci, threads, base_threads)
            table.append((row, recorded, ci, threads, ratio, half, pairs))
            print(f"trial {row.number}: {'re-measured' if args.remeasure else 'recorded'} {recorded:.3f} at {threads} "
                  f"thread(s), benchmark_app {ratio:.3f} ±{half:.1%} ({pairs} pairs)", flush=True)
    groups = record.group_names(study)
    ours = "re-measured" if args.remeasure else "recorded"
    print(f"\n| trial | settings | threads (baseline: {base_threads}) | {ours} ratio (±95%) | benchmark_app paired ratio (±95%) "
          f"| pairs | {ours} / reference |")
    print("|---|---|---|---|---|---|---|")
    for row, recorded, ci, threads, ratio, half, pairs in table:
        print(f"| {row.number} | {pareto.settings_short(row.params, row.attrs, groups)} | {threads} | {recorded:.3f} "
              f"(±{ci if ci is not None else float('nan'):.1%}) | {ratio:.3f} (±{half:.1%}) | {pairs} | "
              f"{recorded / ratio - 1:+.1%} |")
    worst = max(table, key=lambda r: abs(r[1] / r[4] - 1))
    print(f"\nagreement: largest |{ours} / benchmark_app - 1| {abs(worst[1] / worst[4] - 1):.1%} (trial {worst[0].number}) "
          f"over {len(table)} models; reference intervals up to ±{max(r[5] for r in table):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", help="a stored study: its front against benchmark_app (else one random model)")
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    parser.add_argument("--artifacts", help="the study's artifact store (default: its spec's)")
    parser.add_argument("--remeasure", action="store_true", help="time each model again by today's adapter first")
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=60)
    parser.add_argument("--target-ci", type=float, default=0.025)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=None, help="per run (default: 2 with --study, else 10)")
    args = parser.parse_args()
    if args.study:
        args.seconds = args.seconds or 2.0
        return agreement_on_study(args)
    args.seconds = int(args.seconds or 10)
    device = create_device("openvino:CPU", protocol=LatencyProtocol(max_seconds=args.seconds, target_ci_rel=0.0))
    deployment = device.deploy(create_model(args.model, 10).eval(), torch.rand(2, 3, 32, 32))
    with tempfile.TemporaryDirectory() as tmp:
        xml = deployment.save(Path(tmp))[0]
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(deployment.measure_latency().median_ms)
            theirs.append(benchmark_app_on(xml, args.seconds))
    deployment.close()
    info = device.info()
    print(f"{args.model}, batch 1, f32 pinned, {info.full_name}, {info.runtime}; {args.seconds} s per measurement\n")
    print("| round | edgetune median ms | benchmark_app median ms | ratio |\n|---|---|---|---|")
    for i, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"| {i} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
    ratios = np.array(ours) / np.array(theirs)
    print(f"\nmedian ratio edgetune/benchmark_app: {np.median(ratios):.3f}; "
          f"edgetune's medians across rounds: min {min(ours):.3f}, max {max(ours):.3f} ms, "
          f"spread (max-min)/median {(max(ours) - min(ours)) / np.median(ours):.1%}")


if __name__ == "__main__":
    main()
