"""Trials per hour with 1 and 2 workers on one study (PostgreSQL), and the storage's cost per trial.

    python -m bench.workers [--trials 8] [--model resnet20] [--finetune-epochs 1]

1. Throughput: the same study settings run twice in a throwaway PostgreSQL server, once with
   ``tune start --workers 1`` and once with ``--workers 2``. Trials per hour come from the trials'
   own start and end times (the baseline bootstrap is excluded; it is trained once, cached).
2. Storage overhead: edgetune's worker loop replays real trial results (attributes, constraints and
   artifact zip of a trial from part 1) through an instant objective, on SQLite and on PostgreSQL,
   so what is timed is only the database and artifact work of one trial: the stale-trial check,
   the claim under the study's lock, the sampler's suggestions, the upload, the attributes and tell.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]

from bench.common import parser as make_parser
from edgetune.objectives.groups import derive_groups
from edgetune.objectives.models import create_model
from edgetune.searcher.artifacts import fetch
from edgetune.searcher.locks import StudyLocks
from edgetune.searcher.trial import Objective, TrialResult
from edgetune.searcher.spec import load_spec
from edgetune.searcher.storage import open_storage
from edgetune.searcher.study import group_rules, heartbeat, open_study
from edgetune.searcher.worker import Retry, run_worker
from tests.postgres import PostgresServer


def run_study(name: str, workers: int, args, storage: str, folder: Path) -> float:
    """Run the study; trials per hour between the first trial's start and the last one's end."""
    command = [sys.executable, "-m", "edgetune.searcher.cli", "start", "--study-name", name, "--model", args.model,
               "--trials", str(args.trials), "--workers", str(workers), "--set", f"finetune.epochs={args.finetune_epochs}",
               "--set", f"study.artifacts={folder / 'artifacts'}", "--set", "baseline.epochs=3",
               "--set", "search.sparsity_max=0.6", "--set", f"device.latency_max_seconds={args.latency_seconds}"]
    env = dict(os.environ, EDGETUNE_STORAGE=storage)
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / span * 3600


class ReplayObjective(Objective):
    """Edgetune's objective with the pipeline replaced by a recorded result: only storage work remains."""

    def __init__(self, spec, template: optuna.trial.FrozenTrial, archive: Path):
        self.spec = spec
        from edgetune.objectives.structure import residual_stages
        from edgetune.searcher.space import build_space

        model = create_model(spec["model.name"], 10)
        self.groups = derive_groups(model, group_rules(spec))
        self.space = build_space(spec, model, self.groups, residual_stages(model), ["f32", "bf16", "int8"], 8)
        self.template, self.archive = template, archive
        self.on_phase = lambda n, p: None

    def plan(self, trial):
        from edgetune.searcher.space import suggest_plan

        return suggest_plan(trial, self.spec, self.groups, self.space)

    def evaluate(self, trial, plan):
        attributes = {k: v for k, v in self.template.user_attrs.items() if k not in ("artifact_id", "artifact_sha256", "worker")}
        copy = self.archive.with_name(f"replay-{trial.number}.zip")
        copy.write_bytes(self.archive.read_bytes())
        return TrialResult(optuna.trial.TrialState.COMPLETE, tuple(self.template.values), attributes,
                           {"top1_drop": -1.0}, copy)


def storage_overhead(storage: str, template, archive: Path, folder: Path, trials: int) -> float:
    """Milliseconds of database and artifact work per trial."""
    spec = load_spec(None, {"study.storage": storage, "study.name": f"replay-{time.time_ns()}", "model.name": "resnet20",
                            "study.trials": trials, "study.artifacts": str(folder / "replay-artifacts"),
                            "study.max_top1_drop": 1.0})
    study = open_study(spec, open_storage(storage, heartbeat(spec)))
    objective = ReplayObjective(spec, template, archive)
    start = time.perf_counter()
    run_worker(study, objective, trials, StudyLocks(storage, spec["study.name"]), Retry(storage, 0))
    return (time.perf_counter() - start) / trials * 1000


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)  # Optuna: heartbeats outside Study.optimize (ours)
    parser = make_parser(__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--replay-trials", type=int, default=200)
    args = parser.parse_args()
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            rates = {n: run_study(f"workers-{n}", n, args, server.url, folder) for n in (1, 2)}
            print(f"## trials per hour ({args.model}, {args.trials} trials, fine-tune {args.finetune_epochs} epoch(s), "
                  f"{os.cpu_count()} cores)\n")
            print("| workers | trials/hour | vs 1 worker |\n|---|---|---|")
            for n, rate in rates.items():
                print(f"| {n} | {rate:.0f} | {rate / rates[1]:.2f}x |")

            reference = optuna.load_study(study_name="workers-1", storage=server.url)
            template = next(t for t in reference.get_trials() if t.state == optuna.trial.TrialState.COMPLETE)
            unpacked = fetch(str(folder / "artifacts"), template.user_attrs["artifact_id"], folder / "template")
            archive = Path(shutil.make_archive(str(folder / "template"), "zip", unpacked))
            trial_ms = sum(template.user_attrs["seconds"].values()) * 1000
            print(f"\n## storage work per trial ({args.replay_trials} replayed trials, artifact "
                  f"{archive.stat().st_size / 1024:.0f} KiB; a real trial took {trial_ms / 1000:.1f} s)\n")
            print("| storage | ms per trial | share of a trial |\n|---|---|---|")
            for label, url in (("SQLite", f"sqlite:///{folder}/replay.db"), ("PostgreSQL", server.url)):
                ms = storage_overhead(url, template, archive, folder, args.replay_trials)
                print(f"| {label} | {ms:.1f} | {ms / trial_ms:.2%} |")
    finally:
        server.remove()


if __name__ == "__main__":
    main()
