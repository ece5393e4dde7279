"""Where a trial's time goes, and edgetune's own overhead as a share of it.

    python -m bench.trial_cost [--trials 8] [--spec studies/default.toml] [--set key=value ...]
    python -m bench.trial_cost --study NAME [--storage URL]    # a study that already ran (make demo's)

Runs the study (default: the embedded default, ResNet-56 on digits, on the OpenVINO CPU) for a few
trials in a temporary database, then reads each trial's recorded phase times (prune, speedup,
fine_tune, deploy, evaluate, measure, store) and its wall time from start to end (the rest is the
sampler and the database). edgetune's overhead is everything but fine-tuning and evaluation: the
work a user would not do without a search tool. Times are this machine's; shares are per run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna

from edgetune.searcher import record

ROOT = Path(__file__).resolve().parents[1]
USER_WORK = ("fine_tune", "evaluate")  # what the user's own compression pipeline does anyway


def run(args, folder: Path) -> optuna.Study:
    storage = f"sqlite:///{folder}/cost.db"
    command = [sys.executable, "-m", "edgetune.searcher.cli", "start", "--storage", storage, "--study-name", "cost",
               "--trials", str(args.trials), "--set", f"study.artifacts={folder / 'artifacts'}"]
    if args.spec:
        command += ["--spec", args.spec]
    for item in args.set or []:
        command += ["--set", item]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return optuna.load_study(study_name="cost", storage=storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--spec", default=None)
    parser.add_argument("--set", action="append", help="spec override, as for tune start")
    parser.add_argument("--study", help="read this stored study's trials instead of running new ones")
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    args = parser.parse_args()
    if args.study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=args.study, storage=args.storage)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            study = run(args, Path(tmp))
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
              and "finalized_from" not in t.user_attrs]  # tune finalize's long fine-tunes are not search trials
    walls = np.array([(t.datetime_complete - t.datetime_start).total_seconds() for t in trials])
    phases = sorted({k for t in trials for k in t.user_attrs["seconds"]},
                    key=lambda k: ("prune", "speedup", "screen", "fine_tune", "deploy", "evaluate", "measure", "memory", "store").index(k))
    times = {k: np.array([t.user_attrs["seconds"].get(k, 0.0) for t in trials]) for k in phases}
    times["sampler + database"] = walls - sum(times.values())
    spec = record.spec_values(study)
    print(f"## trial cost: {spec['model.name']} on {spec['data.name']}, {spec['device.name']}, "
          f"{len(trials)} complete trials (mean {walls.mean():.1f} s a trial, this machine)\n")
    print("| phase | mean s | share of the trial |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {values.mean():.2f} | {values.sum() / walls.sum():.1%} |")
    overhead = sum(v.sum() for k, v in times.items() if k not in USER_WORK) / walls.sum()
    print(f"\nedgetune's overhead (everything but {' and '.join(USER_WORK)}): **{overhead:.1%}** of trial time")
    int8 = [i for i, t in enumerate(trials) if "int8" in t.user_attrs.get("precision_plan", {}).values()]
    if int8 and len(int8) < len(trials):
        floats = [i for i in range(len(trials)) if i not in int8]
        for label, index in (("with int8 groups", int8), ("float only", floats)):
            share = sum(times[k][index].sum() for k in times if k not in USER_WORK) / walls[index].sum()
            print(f"- trials {label}: {len(index)}, overhead {share:.1%}, deploy {times['deploy'][index].mean():.2f} s, "
                  f"measure {times['measure'][index].mean():.2f} s")
    print(f"\noverhead: {overhead:.1%} of trial time")


if __name__ == "__main__":
    main()
