"""How repeatable a trial's paired latency ratio is, at one thread, at the latency hint's choice, and
at the fastest count as a study with ``device.threads = 0`` measures it.

    python -m bench.thread_repeatability --study NAME [--storage URL] [--artifacts DIR] --trials 4 16 0
        [--repeats 4] [--threads 1 0 fastest] [--max-seconds 5 ...]

The baseline's and each named trial's deployed IR, from the study's artifact store, deployed in this
process by the OpenVINO adapter (LATENCY hint, f32 pinned, batch 1; one device per thread count, with
``INFERENCE_NUM_THREADS`` where a count is given, 0 = the hint's choice), then the paired protocol
(devices.protocol.measure_paired, 5 s limit, ±2% target) repeated back to back. Prints each trial's
ratios, their spread ((max - min) / median) against the interval each measurement reported, and
the baseline's median. The spread is what a trial's single measurement can be off by; pairing
cancels only drift that scales both models alike.

``fastest``: the adapter's own deployments of the same IRs. The baseline is measured once at every
count (``Deployment.measure_latency``, as a study's baseline is), then each trial again and again
against it, each time at the count where it runs fastest (which the table shows per repeat); its
ratio is to the baseline at the baseline's fastest count. Several ``--max-seconds`` (the protocol's
limit; ``fastest`` only) are interleaved repeat by repeat, so that whether a shorter limit repeats
worse is seen under the same host.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.benchmark_app_agreement import adapter_deployment, deployed_ir
from bench.common import parser as make_parser


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    parser.add_argument("--artifacts", help="the study's artifact store (default: its spec's)")
    parser.add_argument("--trials", type=int, nargs="+", required=True)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, nargs="+", default=[5.0],
                        help="the protocol's time limit per measurement (several: fastest only, interleaved)")
    parser.add_argument("--threads", nargs="+", default=["1", "0", "fastest"],
                        help="a count, 0: the latency hint's choice, fastest: the adapter's choice per model")
    args = parser.parse_args()

    import optuna

    from edgetune.devices import create_device
    from edgetune.devices.protocol import LatencyProtocol, measure_paired
    from edgetune.searcher import record
    from edgetune.searcher.storage import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.storage, args.study)
    store = record.artifacts_dir(study, args.artifacts)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    protocol = LatencyProtocol(max_seconds=args.max_seconds[0], target_ci_rel=0.02)
    print("| threads | trial | recorded | ratios, repeated | spread | intervals reported | baseline median ms |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        baseline_xml = deployed_ir(store, record.baseline(study)["artifact_id"], Path(tmp) / "baseline")
        irs = {n: deployed_ir(store, trials[n].user_attrs["artifact_id"], Path(tmp) / f"trial-{n}") for n in args.trials}
        for threads in args.threads:
            if threads == "fastest":
                fastest(create_device("openvino:CPU", protocol=protocol), baseline_xml, irs, trials, args.repeats,
                        args.max_seconds)
                continue
            threads = int(threads)
            device = create_device("openvino:CPU", threads=threads)
            reference = adapter_deployment(device, baseline_xml).runner()
            for number, xml in irs.items():
                candidate = adapter_deployment(device, xml).runner()
                ratios, intervals, medians = [], [], []
                for _ in range(args.repeats):
                    _, ref, ratio, ci = measure_paired(reference, candidate, protocol)
                    ratios.append(ratio)
                    intervals.append(ci)
                    medians.append(ref.median_ms)
                spread = (max(ratios) - min(ratios)) / statistics.median(ratios)
                print(f"| {threads or 'hint'} | {number} | {trials[number].user_attrs.get('latency_vs_baseline', float('nan')):.3f} "
                      f"| {' '.join(f'{r:.3f}' for r in ratios)} | {spread:.0%} | "
                      f"±{min(intervals):.1%}–±{max(intervals):.1%} | {min(medians):.2f}–{max(medians):.2f} |", flush=True)


def fastest(device, baseline_xml: Path, irs: dict[int, Path], trials: dict, repeats: int, limits: list[float]) -> None:
    """The adapter's thread choice: the baseline once at every count, each trial paired at its own."""
    from dataclasses import replace

    baseline = adapter_deployment(device, baseline_xml)
    base = baseline.measure_latency()
    print(f"| fastest | baseline | | {base.threads} thread(s) fastest; by count: "
          + ", ".join(f"{t}: {ms:.2f} ms ±{ci:.1%}" for t, (ms, ci) in sorted((base.by_threads or {}).items())) + " | | | |")
    for number, xml in irs.items():
        candidate = adapter_deployment(device, xml)
        results: dict[float, list] = {limit: [] for limit in limits}
        for _ in range(repeats):
            for limit in limits:
                candidate.protocol = replace(device.protocol, max_seconds=limit)
                results[limit].append(candidate.measure_latency(baseline, base.by_threads))
        for limit, rows in results.items():
            ratios = [r.ratio for r in rows]
            spread = (max(ratios) - min(ratios)) / statistics.median(ratios)
            label = "fastest" + (f", {limit:g} s" if len(limits) > 1 else "")
            print(f"| {label} | {number} | {trials[number].user_attrs.get('latency_vs_baseline', float('nan')):.3f} "
                  f"| {' '.join(f'{r.ratio:.3f} ({r.threads})' for r in rows)} | {spread:.0%} "
                  f"(sd of logs {np.std(np.log(ratios), ddof=1):.1%}) | "
                  f"±{min(r.ci95_rel for r in rows):.1%}–±{max(r.ci95_rel for r in rows):.1%} | "
                  f"{min(r.reference_median_ms for r in rows):.2f}–{max(r.reference_median_ms for r in rows):.2f} |", flush=True)


if __name__ == "__main__":
    main()
