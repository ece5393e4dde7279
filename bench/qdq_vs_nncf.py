"""int8 from QAT's own scales (Q/DQ) against NNCF's second calibration, on the same trials.

    python bench/qdq_vs_nncf.py [--trials 8] [--seed 0] [--db FILE] [--set key=value ...]

Two studies of the same spec (default: the embedded default, ResNet-56 on digits, OpenVINO CPU)
that differ only in ``search.quantization``: ``qat`` (QAT while fine-tuning, then NNCF calibrates the
deployed model again: today's default) and ``qat-qdq`` (the scales QAT learned, exported as
quantize/dequantize ops). Both use the random sampler with one seed, so trial n proposes the same
model in both (the recipes first); fine-tuning is seeded alike, so up to deployment the two are the
same computation. The studies advance one trial at a time, alternately, so both see the same
machine load. Trials without int8 are the control: the routes are identical there. Printed: per
trial, Top-1 on the deployed model, latency × baseline and deployment seconds of both routes; the
last line is the median difference over the int8 trials. ``--db`` keeps the studies (a rerun resumes).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"nncf": "qat", "qdq": "qat-qdq"}


def advance(storage: str, route: str, trials: int, args) -> None:
    command = [sys.executable, "-m", "edgetune.searcher.cli", "start", "--storage", storage,
               "--study-name", f"{args.name}-{route}", "--trials", str(trials), "--sampler", "random",
               "--seed", str(args.seed), "--set", f"search.quantization={ROUTES[route]}",
               "--set", f"study.artifacts={args.artifacts}"]
    for item in args.set or []:
        command += ["--set", item]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def int8_groups(attrs: dict) -> str:
    groups = [g for g, p in attrs.get("precision_plan", {}).items() if p == "int8"]
    return ", ".join(groups) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="SQLite file to keep the two studies in (a rerun resumes them)")
    parser.add_argument("--name", default="route", help="study name prefix")
    parser.add_argument("--set", action="append", help="spec override for both studies, e.g. device.threads=1")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db).resolve() if args.db else Path(tmp) / "routes.db"
        args.artifacts = db.parent / f"{db.stem}-artifacts"
        storage = f"sqlite:///{db}"
        for n in range(1, args.trials + 1):
            for route in ROUTES:
                advance(storage, route, n, args)
                print(f"trial {n - 1}: {route} done", file=sys.stderr, flush=True)
        studies = {route: optuna.load_study(study_name=f"{args.name}-{route}", storage=storage) for route in ROUTES}
    trials = {route: [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
              for route, study in studies.items()}
    base = studies["nncf"].user_attrs
    print(f"## {base.get('spec', {}).get('model.name', 'model')}: int8 by NNCF calibration (nncf) or QAT's scales (qdq), "
          f"{args.trials} trials, seed {args.seed}; baseline Top-1 {base.get('baseline_top1', float('nan')):.2f}%\n")
    print("| trial | int8 groups | Top-1 nncf | Top-1 qdq | latency × base nncf | qdq | deploy s nncf | qdq |")
    print("|---|---|---|---|---|---|---|---|")
    by_number = {route: {t.number: t.user_attrs for t in ts} for route, ts in trials.items()}
    differences = {"top1": [], "latency": [], "deploy": []}
    for number in sorted(set(by_number["nncf"]) & set(by_number["qdq"])):
        a, b = by_number["nncf"][number], by_number["qdq"][number]
        if a.get("precision_plan") != b.get("precision_plan"):
            raise SystemExit(f"trial {number} proposed different models in the two studies: not comparable")
        groups = int8_groups(a)
        print(f"| {number} | {groups} | {a['top1']:.2f} | {b['top1']:.2f} | {a['latency_vs_baseline']:.3f} | "
              f"{b['latency_vs_baseline']:.3f} | {a['seconds']['deploy']:.1f} | {b['seconds']['deploy']:.1f} |")
        if groups != "none":
            differences["top1"].append(b["top1"] - a["top1"])
            differences["latency"].append(b["latency_vs_baseline"] / a["latency_vs_baseline"])
            differences["deploy"].append(b["seconds"]["deploy"] - a["seconds"]["deploy"])
    if not differences["top1"]:
        raise SystemExit("no trial ran int8 in both studies")
    print(f"\nqdq - nncf over {len(differences['top1'])} int8 trials (median): Top-1 "
          f"{statistics.median(differences['top1']):+.2f} points, latency ×{statistics.median(differences['latency']):.3f}, "
          f"deploy {statistics.median(differences['deploy']):+.1f} s")


if __name__ == "__main__":
    main()
