"""A trial's fixed costs alone (everything but training), and how two versions of edgetune compare on them.

    python -m bench.fixed_phases [--trials 6] [--set key=value ...] [--profile out.prof]
    python -m bench.fixed_phases --against REF [--rounds 3] [--set ...]   # REF (a git commit) against this tree

Once training runs on a GPU, a trial's fixed phases (speedup, deployment and its calibration,
evaluation, measurement, the memory probe, storing) are most of it. This runs the default study's
first trials (its recipe seeds, then TPE) through the real trial code with one change: fine-tuning
sees 64 training images (one batch, QAT included), so what is left is the fixed work, the same models
deployed the same ways. It prints each phase's mean seconds.

``--against REF`` checks REF out into a temporary worktree and runs this script alternately against
it and against this tree (``--rounds`` times each, each a fresh process, so a loaded host slows both
alike), then prints each phase's mean both ways and their ratio. ``--profile`` writes a cProfile of
the trials (not of the study's preparation) for ``python -m pstats``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgetune.objectives.trial_record import PHASES

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 64


def _in_order(phases) -> list[str]:
    """In the order trials run them (trial_record.PHASES); one REF recorded that this tree does not, last."""
    return sorted(phases, key=lambda p: PHASES.index(p) if p in PHASES else len(PHASES))


def run_trials(trials: int, overrides: list[str], profile: str | None) -> dict[str, list[float]]:
    """Each phase's seconds over ``trials`` trials of a fresh study (the cached baseline)."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from edgetune.objectives.data import TensorSamples
    from edgetune.searcher.spec import load_spec, parse_override
    from edgetune.searcher.study import prepare
    from edgetune.searcher.trial import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="fixed-phases-"))
    values = dict(parse_override(item) for item in overrides)
    values.update({"study.storage": f"sqlite:///{folder}/fixed.db", "study.artifacts": str(folder / "artifacts"),
                   "study.name": "fixed", "study.trials": trials})
    spec = load_spec(None, values)
    prepared = prepare(spec)
    context = prepared.context
    data = context.data
    first = torch.arange(TRAIN_IMAGES)  # in memory or streamed: the first images, placed as the study would
    context.__dict__["train_set"] = TensorSamples(data.train.take(first), data.train.labels[first]).placed(context.train_on)
    objective = Objective(spec, context, prepared.baseline, prepared.space)
    study, seconds = prepared.study, {}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for _ in range(trials):
        trial = study.ask()
        result = objective.evaluate(trial, objective.plan(trial))
        objective.record(trial, result)
        study.tell(trial, result.values if result.state == TrialState.COMPLETE else None, state=result.state)
        objective.discard(result)
        if result.state != TrialState.COMPLETE:
            print(f"trial {trial.number}: {result.state.name} {result.attributes.get('failure')}", file=sys.stderr)
            continue
        for phase, value in result.attributes["seconds"].items():
            seconds.setdefault(phase, []).append(value)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return seconds


def _worktree(ref: str, into: Path) -> Path:
    """``ref`` checked out under ``into``, importable as ``edgetune`` from ``into/path``."""
    tree = into / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (into / "path").mkdir()
    (into / "path" / "edgetune").symlink_to(tree)
    return tree


def against(ref: str, rounds: int, trials: int, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = _worktree(ref, Path(tmp))
        try:
            found: dict[str, dict[str, list[float]]] = {ref: {}, "this tree": {}}
            for round_ in range(rounds):
                for label, path in ((ref, str(Path(tmp) / "path")), ("this tree", "")):
                    out = Path(tmp) / "out.json"
                    env = dict(os.environ, PYTHONPATH=path) if path else dict(os.environ)
                    command = [sys.executable, "-P", str(Path(__file__)), "--trials", str(trials), "--json", str(out)]
                    for item in overrides:
                        command += ["--set", item]
                    subprocess.run(command, check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
                    for phase, values in json.loads(out.read_text()).items():
                        found[label].setdefault(phase, []).extend(values)
                    print(f"round {round_ + 1}/{rounds}: {label} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    old, new = found[ref], found["this tree"]
    print(f"| phase | {ref} mean s | this tree mean s | ratio | spread of the round means (this tree) |\n|---|---|---|---|---|")
    for phase in _in_order(set(old) | set(new)):
        a, b = (float(np.mean(d.get(phase, [0.0]))) for d in (old, new))
        rounds_b = [float(np.mean(chunk)) for chunk in np.array_split(new.get(phase, [0.0]), rounds)]
        print(f"| {phase} | {a:.3f} | {b:.3f} | {b / a if a else float('nan'):.2f} | {min(rounds_b):.3f}-{max(rounds_b):.3f} |")
    total_a = sum(np.mean(v) for k, v in old.items() if k != "fine_tune")
    total_b = sum(np.mean(v) for k, v in new.items() if k != "fine_tune")
    print(f"\nfixed phases (all but fine_tune), mean a trial: {total_a:.2f} s against {total_b:.2f} s: **{total_b / total_a:.2f}x**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="spec override, as for tune start")
    parser.add_argument("--against", metavar="REF", help="compare with this git commit, alternating runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the trials here")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # --against's child runs: the seconds of each phase
    args = parser.parse_args()
    if args.against:
        against(args.against, args.rounds, args.trials, args.set)
        return
    seconds = run_trials(args.trials, args.set, args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps(seconds))
    print("| phase | mean s | trials |\n|---|---|---|")
    for phase in _in_order(seconds):
        print(f"| {phase} | {np.mean(seconds[phase]):.3f} | {len(seconds[phase])} |")


if __name__ == "__main__":
    main()
