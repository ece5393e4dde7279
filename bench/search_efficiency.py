"""Does the search find a better front than the alternatives for the same number of trials?

    python bench/search_efficiency.py --task default --trials 20 --seeds 0 1 2
    python bench/search_efficiency.py --task cifar --trials 20 --seeds 0 1 2   # ../shared/data/cifar10-12k

For one task, every method runs the same trial budget with each seed, as a study of its own in one
database (``--db``; a rerun resumes the studies it finds there):

- ``nsga2``, ``tpe`` (multi-objective), ``random``: edgetune's search of latency and Top-1;
- ``uniform``: the off-the-shelf approach: one sparsity for every group (evenly spaced over
  [0, sparsity_max], in a seeded order), l1 pruning, f32;
- ``latency-only``: a single-objective TPE search of latency alone (what the original study did);
  its trials' Top-1 is recorded all the same, so its front can be scored.

Every method is scored on (latency relative to its study's baseline, Top-1) with the hypervolume
against the baseline's reference point (the report's definition) after every trial. Printed: the median (and range over seeds) of
the final hypervolume, the trials each method needs to reach the uniform sweep's best final
hypervolume, and the best latency at Top-1 within 1 point of the baseline. ``--plot`` draws the
median curves with their seed range.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searcher.locks import StudyLocks  # noqa: E402
from searcher.report import hypervolume_history  # noqa: E402
from searcher.run import Objective  # noqa: E402
from searcher.spec import load_spec  # noqa: E402
from searcher.study import prepare  # noqa: E402
from searcher.worker import Retry, run_worker  # noqa: E402

METHODS = ("nsga2", "tpe", "random", "uniform", "latency-only")
TASKS = {
    "default": {},  # studies/default.toml: ResNet-56 on digits
    "cifar": {"model.name": "resnet20", "data.name": "imagefolder",
              "data.dir": str(ROOT.parent / "shared" / "data" / "cifar10-12k"), "baseline.epochs": 15,
              "baseline.lr": 0.05, "finetune.epochs": 2},
}


def method_spec(task: str, method: str, seed: int, trials: int, db: str, extra: dict):
    overrides = {**TASKS[task], **extra, "study.storage": db, "study.name": f"{task}-{method}-{seed}",
                 "study.trials": trials, "study.seed": seed, "study.artifacts": str(Path(db.split("///")[-1]).parent / "artifacts")}
    if method == "latency-only":
        overrides.update({"study.targets": ["latency"], "study.sampler": "tpe"})
    elif method == "uniform":
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": "random"})
    else:
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": method})
    return load_spec(None, overrides)


def enqueue_uniform(study: optuna.Study, groups: list[str], trials: int, sparsity_max: float, step: float, seed: int):
    """One ratio for all groups, evenly spaced on the search grid, in a seeded order."""
    if study.trials:
        return
    ratios = np.round(np.linspace(0.0, sparsity_max, trials) / step) * step
    for ratio in np.random.default_rng(seed).permutation(ratios):
        params = {f"sparsity.{g}": float(ratio) for g in groups}
        params.update({"pruner": "l1", "precision.float": "f32", **{f"precision.{g}": "float" for g in [*groups, "other"]}})
        study.enqueue_trial(params, skip_if_exists=False)


def run_method(task: str, method: str, seed: int, trials: int, db: str, extra: dict) -> optuna.Study:
    spec = method_spec(task, method, seed, trials, db, extra)
    prepared = prepare(spec, on_status=lambda text: None)
    study = prepared.study
    if method == "uniform":
        enqueue_uniform(study, [g.name for g in prepared.context.groups], trials, spec["search.sparsity_max"],
                        spec["search.sparsity_step"], seed)
    objective = Objective(spec, prepared.context, prepared.baseline, prepared.precisions)
    done = run_worker(study, objective, trials, StudyLocks(db, spec["study.name"]), Retry(db, 30))
    print(f"  {study.study_name}: {done} trials run now, {len(study.trials)} in all", flush=True)
    return study


def score(study: optuna.Study, trials: int) -> dict:
    """Hypervolume after each trial (failed ones keep the previous value) and the best latency near baseline Top-1.

    Latency is taken relative to the study's own baseline: each study measures its baseline once,
    and on a drifting host those absolute medians differ between studies by tens of percent, while
    the paired ratios do not."""
    baseline = {k[len("baseline_"):]: v for k, v in study.user_attrs.items() if k.startswith("baseline_")}
    ordered = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)[:trials]
    complete = [types.SimpleNamespace(number=t.number, user_attrs={
        "latency_ms": t.user_attrs["latency_ms"] / baseline["latency_ms"], "top1": t.user_attrs["top1"]})
        for t in ordered if t.state == optuna.trial.TrialState.COMPLETE]
    data = types.SimpleNamespace(targets=["latency", "top1"], baseline={"latency_ms": 1.0, "top1": baseline["top1"]},
                                 trials=complete)
    by_number = dict(hypervolume_history(data))
    curve, last = [], 0.0
    for trial in ordered:
        last = by_number.get(trial.number, last)
        curve.append(last)
    near = [t.user_attrs["latency_ms"] for t in complete if t.user_attrs["top1"] >= baseline["top1"] - 1.0]
    return {"curve": curve, "best_relative_latency_within_1pt": min(near) if near else None,
            "baseline_latency_ms": baseline["latency_ms"], "baseline_top1": baseline["top1"]}


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def summarise(results: dict, trials: int) -> list[str]:
    uniform_best = np.median([max(r["curve"]) for r in results["uniform"].values()])
    lines = [f"| method | final hypervolume, median (range) | trials to reach the uniform sweep's {uniform_best:.3f} "
             "(median; per seed) | best latency at Top-1 >= baseline - 1 (median, x baseline; vs uniform) |",
             "|---|---|---|---|"]
    uniform_latency = np.median([r["best_relative_latency_within_1pt"] for r in results["uniform"].values()
                                 if r["best_relative_latency_within_1pt"] is not None] or [np.nan])
    for method, by_seed in results.items():
        finals = [r["curve"][-1] if r["curve"] else 0.0 for r in by_seed.values()]
        reach = [trials_to_reach(r["curve"], uniform_best) for r in by_seed.values()]
        shown = ", ".join("-" if n is None else str(n) for n in reach)
        reached = [n if n is not None else trials + 1 for n in reach]
        latencies = [r["best_relative_latency_within_1pt"] for r in by_seed.values() if r["best_relative_latency_within_1pt"] is not None]
        latency = np.median(latencies) if latencies else np.nan
        median_reach = np.median(reached)
        reach_text = f">{trials}" if median_reach > trials else f"{median_reach:.0f}"  # "-": not within the budget
        lines.append(f"| {method} | {np.median(finals):.3f} ({min(finals):.3f}-{max(finals):.3f}) | "
                     f"{reach_text} ({shown}) | {latency:.3f} ({latency / uniform_latency:.2f}x) |")
    return lines


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method, by_seed in results.items():
        curves = [r["curve"] for r in by_seed.values() if r["curve"]]
        length = min(len(c) for c in curves)
        stacked = np.array([c[:length] for c in curves])
        x = np.arange(1, length + 1)
        axis.plot(x, np.median(stacked, axis=0), label=method)
        axis.fill_between(x, stacked.min(axis=0), stacked.max(axis=0), alpha=0.15)
    axis.set_xlabel("trials")
    axis.set_ylabel("hypervolume (latency / baseline, Top-1)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)  # Optuna: heartbeats outside Study.optimize (ours)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(TASKS), default="default")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite:///bench-results/<task>.db)")
    parser.add_argument("--set", action="append", default=[], help="spec override, e.g. finetune.epochs=1")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the hypervolume curves")
    parser.add_argument("--threads", type=int, default=0, help="training threads (0: PyTorch's default); "
                        "two tasks can then run side by side, one core each")
    parser.add_argument("--summary", type=Path, default=None, help="only summarise (and plot) a results JSON "
                        "this script wrote, e.g. of a run cut short")
    args = parser.parse_args()
    if args.summary:
        saved = json.loads(args.summary.read_text())
        results = {m: by_seed for m, by_seed in saved["results"].items() if by_seed}
        seeds = sorted({seed for by_seed in results.values() for seed in by_seed})
        print("\n".join(summarise(results, saved["trials"])))
        if args.plot:
            plot(results, args.plot, f"{args.summary.stem}: {saved['trials']} trials, seeds {', '.join(seeds)}")
        return
    if "uniform" not in args.methods:
        parser.error("the comparison is against the uniform sweep: keep 'uniform' in --methods")
    from searcher.spec import parse_override

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    extra = dict(parse_override(item) for item in args.set)
    db = args.db or f"sqlite:///{ROOT / 'bench-results' / (args.task + '.db')}"
    out = Path(db.split("///")[-1]).with_suffix(".json")
    results: dict = {method: {} for method in args.methods}
    # Seed by seed, so a run cut short still compares every method on the seeds it finished.
    for seed in args.seeds:
        for method in args.methods:
            print(f"{method}, seed {seed}", flush=True)
            results[method][seed] = score(run_method(args.task, method, seed, args.trials, db, extra), args.trials)
            out.write_text(json.dumps({"trials": args.trials, "settings": extra, "results": results}, indent=1))
    print("\n" + "\n".join(summarise(results, args.trials)))
    if args.plot:
        plot(results, args.plot, f"{args.task}: {args.trials} trials, seeds {', '.join(map(str, args.seeds))}")
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
