"""Where a trial's time goes, and edgetune's own overhead as a share of it.

    python -m bench.trial_cost [--trials 8] [--spec studies/default.toml] [--set key=value ...]
    python -m bench.trial_cost --study NAME [--storage URL]    # a study that already ran (make demo's)
    python -m bench.trial_cost ... --json cpu.json             # also keep the figures (for --compare)
    python -m bench.trial_cost ... --folder DIR                # keep the study in DIR/cost.db (read it back
                                                               # with --study cost --storage sqlite:///DIR/cost.db)
    python -m bench.trial_cost --compare cpu.json gpu.json     # the same study trained on two devices

Runs the study (default: the embedded default, ResNet-56 on digits, on the OpenVINO CPU) for a few
trials in a temporary database, then reads each trial's recorded phase times (``seconds``, keyed
by objectives/trial_record.py's PHASES) and its wall time from start to end (the rest is the
sampler and the database). edgetune's overhead is everything but fine-tuning and evaluation: the
work a user would not do without a search tool. Times are this machine's; shares are per run.

Where the trials trained (``train_device``) is printed with the table; the fixed costs (everything
but fine-tuning and evaluation: tracing and speedup, deployment with its calibration, measurement,
storing) are also given as a share of the median trial, the figure that matters once training is
fast. ``--compare`` puts two runs side by side (e.g. one with ``--set train.device=cpu``, one on
``cuda:0``): the ratio of their median trial wall times and the Top-1 of each recipe seed both ways.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna

from edgetune.objectives.trial_record import PHASES
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


def summary(study: optuna.Study, trials, walls: np.ndarray, times: dict[str, np.ndarray]) -> dict:
    """The figures --compare reads: median wall time, mean seconds per phase, where it trained, and
    each recipe seed's Top-1."""
    fixed = sum(v for k, v in times.items() if k not in USER_WORK)
    return {"study": study.study_name, "trials": len(trials), "median_wall_s": float(np.median(walls)),
            "phases_mean_s": {k: float(v.mean()) for k, v in times.items()},
            "fixed_median_s": float(np.median(fixed)),
            "train_device": sorted({str(t.user_attrs.get("train_device", "cpu")) for t in trials}),
            "train_amp": sorted({str(t.user_attrs.get("train_amp", "off")) for t in trials}),
            "recipe_top1": {t.user_attrs["seeded"]: t.user_attrs["top1"] for t in trials if t.user_attrs.get("seeded")},
            "recipe_wall_s": {t.user_attrs["seeded"]: float(w) for t, w in zip(trials, walls) if t.user_attrs.get("seeded")}}


def compare(first: str, second: str) -> None:
    a, b = (json.loads(Path(f).read_text()) for f in (first, second))
    print(f"## {a['study']} ({'/'.join(a['train_device'])}) against {b['study']} ({'/'.join(b['train_device'])})\n")
    print(f"- median trial wall time: {a['median_wall_s']:.2f} s against {b['median_wall_s']:.2f} s: "
          f"**{b['median_wall_s'] / a['median_wall_s']:.2f}x** ({a['trials']} and {b['trials']} trials)")
    print(f"- fine-tuning, mean: {a['phases_mean_s'].get('fine_tune', 0):.2f} s against {b['phases_mean_s'].get('fine_tune', 0):.2f} s; "
          f"fixed costs, median: {a['fixed_median_s']:.2f} s against {b['fixed_median_s']:.2f} s "
          f"({b['fixed_median_s'] / b['median_wall_s']:.0%} of the second's median trial)")
    common = sorted(set(a["recipe_top1"]) & set(b["recipe_top1"]))
    if common:  # the same trials both ways: the recipe seeds
        x, y = (np.median([run["recipe_wall_s"][n] for n in common]) for run in (a, b))
        print(f"- the {len(common)} recipe seeds, median wall time: {x:.2f} s against {y:.2f} s: **{y / x:.2f}x**")
    print("\n| recipe seed | Top-1 first | Top-1 second | difference | wall s first | wall s second |\n|---|---|---|---|---|---|")
    for name in common:
        x, y = a["recipe_top1"][name], b["recipe_top1"][name]
        print(f"| {name} | {x:.2f} | {y:.2f} | {y - x:+.2f} | {a['recipe_wall_s'][name]:.1f} | {b['recipe_wall_s'][name]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--spec", default=None)
    parser.add_argument("--set", action="append", help="spec override, as for tune start")
    parser.add_argument("--study", help="read this stored study's trials instead of running new ones")
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    parser.add_argument("--json", help="also write the figures --compare reads to this file")
    parser.add_argument("--folder", help="run the study in this folder and keep it (default: a temporary one): "
                        "a run stopped by a timeout can still be read with --study cost")
    parser.add_argument("--compare", nargs=2, metavar=("FIRST.json", "SECOND.json"), help="compare two --json runs")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=args.study, storage=args.storage)
    elif args.folder:
        Path(args.folder).mkdir(parents=True, exist_ok=True)
        study = run(args, Path(args.folder).resolve())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            study = run(args, Path(tmp))
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
              and "finalized_from" not in t.user_attrs]  # tune finalize's long fine-tunes are not search trials
    walls = np.array([(t.datetime_complete - t.datetime_start).total_seconds() for t in trials])
    phases = sorted({k for t in trials for k in t.user_attrs["seconds"]}, key=PHASES.index)
    times = {k: np.array([t.user_attrs["seconds"].get(k, 0.0) for t in trials]) for k in phases}
    times["sampler + database"] = walls - sum(times.values())
    spec = record.spec_values(study)
    figures = summary(study, trials, walls, times)
    print(f"## trial cost: {spec['model.name']} on {spec['data.name']}, {spec['device.name']}, "
          f"{len(trials)} complete trials (mean {walls.mean():.1f} s, median {np.median(walls):.1f} s a trial, "
          f"trained on {'/'.join(figures['train_device'])}, amp {'/'.join(figures['train_amp'])}, this machine)\n")
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
    print(f"\nfixed costs of the median trial: {figures['fixed_median_s']:.2f} s of {figures['median_wall_s']:.2f} s "
          f"({figures['fixed_median_s'] / figures['median_wall_s']:.0%})")
    print(f"\noverhead: {overhead:.1%} of trial time")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
