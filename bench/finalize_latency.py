"""Does `tune finalize` leave a model's latency where it was? Each finalized model against its original.

    python -m bench.finalize_latency [--study NAME] [--storage URL] [--artifacts DIR] [--max-seconds 10]

A finalized trial is its original's structure and precisions with longer-trained weights, so it
should run exactly as fast. The study records each one's latency from its own measurement against
the baseline (minutes apart, on a host that drifts); this benchmark times the two deployed IRs from
the artifact store directly against each other, by edgetune's paired protocol (alternating short
segments, the ratio's 95% interval), at each thread count either of them ran at in the study.
Printed per pair: the recorded ratios to the baseline, the change they record, and the paired ratio
finalized / original with its interval; the last line says whether every interval holds 1.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from bench.benchmark_app_agreement import adapter_deployment, deployed_ir
from bench.common import parser as make_parser
from edgetune.devices import create_device
from edgetune.devices.protocol import LatencyProtocol, measure_paired, warm_up


def main() -> None:
    import optuna

    from edgetune.searcher import record
    from edgetune.searcher.storage import load_study

    parser = make_parser(__doc__)
    parser.add_argument("--study", default=None, help="the study (default: the storage's only one)")
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    parser.add_argument("--artifacts", default=None, help="this host's view of the study's artifact store")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="the paired protocol's limit per pair")
    parser.add_argument("--target-ci", type=float, default=0.01, help="stop once the ratio's 95%% half-width is this")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.storage, args.study)
    store = record.artifacts_dir(study, args.artifacts)
    trials = {t.number: t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE}
    pairs = [(trials[t.user_attrs["finalized_from"]], t) for t in trials.values()
             if t.user_attrs.get("finalized_from") in trials]
    if not pairs:
        raise SystemExit(f"study {study.study_name}: no finalized trial with a complete original (run tune finalize)")
    device = create_device("openvino:CPU")
    protocol = replace(LatencyProtocol(), max_seconds=args.max_seconds, target_ci_rel=args.target_ci)
    print(f"study {study.study_name}: {len(pairs)} finalized models, each paired with its original "
          f"(at most {args.max_seconds:g} s a pair, target ±{args.target_ci:.1%})\n")
    print("| original → finalized | threads | recorded × baseline, original | finalized | recorded change | "
          "paired finalized / original (95% interval) |")
    print("|---|---|---|---|---|---|")
    held = []
    with tempfile.TemporaryDirectory() as tmp:
        for original, final in pairs:
            irs = [deployed_ir(store, t.user_attrs["artifact_id"], Path(tmp) / str(t.number)) for t in (original, final)]
            before, after = (adapter_deployment(device, xml) for xml in irs)
            recorded = [t.user_attrs["latency_vs_baseline"] for t in (original, final)]
            counts = sorted({t.user_attrs["device"]["threads_used"] for t in (original, final)})
            try:
                for threads in counts:
                    run_before, run_after = before.runner(threads), after.runner(threads)
                    # measure_paired takes its reference as warm (in a study it is); this one is fresh.
                    warm_up(run_before, replace(protocol, warmup_seconds=1.0))
                    _, _, ratio, ci = measure_paired(run_before, run_after, protocol)
                    held.append(abs(ratio - 1.0) <= ci)
                    print(f"| {original.number} → {final.number} | {threads} | {recorded[0]:.3f} | {recorded[1]:.3f} | "
                          f"{recorded[1] / recorded[0] - 1:+.1%} | {ratio:.3f} (±{ci:.1%}) |", flush=True)
            finally:
                before.close()
                after.close()
    print(f"\nthe paired interval holds 1 (latency unchanged) for {sum(held)} of {len(held)} pairs")


if __name__ == "__main__":
    main()
