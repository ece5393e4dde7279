"""Does the search find a better front than the alternatives for the same number of trials?

    python -m bench.search_efficiency --task default --trials 10 --seeds 0 1 2
    python -m bench.search_efficiency --task cifar --trials 10 --seeds 0 1 2   # ../shared/data/cifar10-12k
    python -m bench.search_efficiency --task quick --trials 40 --methods tpe nsga2 uniform   # samplers at 40 trials

    # one run shared out to two processes, one core each, each with its own SQLite database (a
    # database has one worker); then scored together: --merge copies their finished studies into --db
    ... --share 0/2 --db sqlite:///bench-results/cifar-0.db &  ... --share 1/2 --db sqlite:///bench-results/cifar-1.db
    ... --summary --merge bench-results/cifar-0.db bench-results/cifar-1.db --db sqlite:///bench-results/cifar.db

    # as run for BENCHMARKS.md: both tasks side by side, one core each, a 1-epoch fine-tune
    ... --threads 1 --set finetune.epochs=1 --set device.threads=1 --plot bench-results/<task>.png

For one task, every method runs the same trial budget with each seed, as a study of its own in one
database (``--db``; a rerun resumes the studies it finds there):

- ``nsga2``, ``tpe`` (multi-objective), ``random``: edgetune's search of latency and Top-1 in its
  default space (depth and residual-stream width per stage, inner width per group, precision);
- ``inner-only``: TPE in the space before depth and stream widths (``search.depth`` and
  ``search.stream_width`` off): what the new dimensions are worth on the same budget;
- ``uniform``: the off-the-shelf approach: one share of every group's inner width kept (evenly
  spaced over [0, sparsity_max], aligned as the search's, in a seeded order), l1 pruning, f32;
- ``uniform-int8``: the same sweep, then every layer int8 (QAT while fine-tuning, as edgetune's
  int8 groups): "prune uniformly, then quantize", the stronger off-the-shelf recipe on an int8 CPU;
- ``latency-only``: a single-objective TPE search of latency alone (what the original study did);
  its trials' Top-1 is recorded all the same, so its front can be scored;
- ``tpe-distill``: ``tpe`` with every fine-tune distilled from the baseline's logits (weight 0.9,
  T = 4): the default since it won on both tasks (BENCHMARKS.md);
- ``tpe-int8-seeds``: ``tpe-distill`` with today's recipe order, the int8 recipes first (a 10-trial
  study runs ``int8`` and ``uniform-2/3+int8``);
- ``uniform-twin``, ``uniform-int8-twin``: the sweep again, same points and baseline, in another
  order, so every point is fine-tuned with another seed (a trial's seed is the study's + its number):
  how often a sweep's front dominates its own twin's measures what the fine-tune's noise alone does.

As the stored studies ran: every other method runs each float recipe before its int8 twin (``int8``
and ``uniform-2/3`` at 10 trials) and fine-tunes on the labels alone (``finetune.distill = 0``)
unless named otherwise above, and every method deploys int8 through NNCF's calibration
(``search.quantization = "qat"``; the default route is now the scales QAT learned, equally fast and
accurate: bench/qdq_vs_nncf.py).

Every method is scored on (latency relative to its study's baseline, Top-1) with the hypervolume
against the baseline's reference point (the report's definition) after every trial. Printed: the
median (and range over seeds) of the final hypervolume, the trials each method needs to reach the
sweeps' best hypervolume, and the fastest model at equal Top-1 (within 1, 2, 5 and 10 points of
the baseline, and at the Top-1 of each model on a sweep's front) against each sweep's. ``--plot``
draws the median curves with their seed range. ``--summary`` scores what the database holds
without running anything.
"""
from __future__ import annotations

import json
import re
import sys
import types
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import optuna

from bench.common import CIFAR, DISTILL, ROOT, parser as make_parser, spec_overrides, stop_like_ctrl_c, training_threads
from edgetune.objectives.groups import OTHER
from edgetune.searcher import record
from edgetune.searcher.params import Choices, encode
from edgetune.searcher.report import hypervolume_history
from edgetune.searcher.runner import RunEvents, run_study
from edgetune.searcher.spec import load_spec
from edgetune.searcher.worker import budget_used, counts_toward_budget

METHODS = ("nsga2", "tpe", "random", "inner-only", "uniform", "uniform-int8", "latency-only", "tpe-distill",
           "tpe-int8-seeds", "uniform-twin", "uniform-int8-twin")
INNER_ONLY = {"search.depth": False, "search.stream_width": False}  # the space before depth and stream widths
SWEEPS = {"uniform": "float", "uniform-int8": "int8"}  # the off-the-shelf recipes: group precision of each
TWINS = {"uniform-twin": "uniform", "uniform-int8-twin": "uniform-int8"}  # each a sweep run again with other seeds
# The recipe seeds in the order the stored studies ran them (each float share before its int8 twin)
FLOAT_FIRST = ["int8", "uniform-2/3", "uniform-2/3+int8", "uniform-1/3", "uniform-1/3+int8"]
DROPS = (1.0, 2.0, 5.0, 10.0)  # Top-1 points below the baseline at which the fastest models are compared
TASKS = {
    "default": {},  # studies/default.toml: ResNet-56 on digits
    "cifar": {**CIFAR, "finetune.epochs": 2},
    # cheap enough for 40-trial budgets (the sampler comparison): ResNet-20 on digits, one epoch per trial
    "quick": {"model.name": "resnet20", "finetune.epochs": 1, "finetune.max_epochs": 0},
}


def method_spec(task: str, method: str, seed: int, trials: int, db: str, extra: dict):
    return load_spec(None, method_overrides(task, method, seed, trials, db, extra))


def method_overrides(task: str, method: str, seed: int, trials: int, db: str, extra: dict) -> dict:
    """The spec overrides of one (task, method, seed) study: how its stored study ran."""
    overrides = {**TASKS[task], "finetune.distill": 0.0, "search.quantization": "qat", "search.recipes": FLOAT_FIRST,
                 **extra, "study.storage": db, "study.name": f"{task}-{method}-{seed}",
                 "study.trials": trials, "study.seed": seed, "study.artifacts": str(Path(db.split("///")[-1]).parent / "artifacts")}
    if method == "latency-only":
        overrides.update({"study.targets": ["latency"], "study.sampler": "tpe", "search.recipes": False})
    elif method in SWEEPS or method in TWINS:  # its own points only: no recipe seeds
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": "random", "search.recipes": False,
                          **INNER_ONLY})
    elif method == "inner-only":
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": "tpe", **INNER_ONLY})
    elif method == "tpe-distill":
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": "tpe", **DISTILL})
    elif method == "tpe-int8-seeds":  # today's order: the int8 recipes first
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": "tpe", **DISTILL, "search.recipes": True})
    else:
        overrides.update({"study.targets": ["latency", "top1"], "study.sampler": method})
    return overrides


def uniform_points(space, groups: list[str], trials: int, sparsity_max: float, seed: int, precision: str) -> list[dict]:
    """One share removed from every group's inner width, evenly spaced over [0, sparsity_max] and
    rounded to the search's multiples, in a seeded order; one precision for every layer."""
    points = []
    for ratio in np.random.default_rng(seed).permutation(np.linspace(0.0, sparsity_max, trials)):
        points.append(encode(Choices(inner={g: w.kept_at(1 - ratio) for g, w in space.inner.items() if w.searched},
                                     pruner="l1", float_precision="f32", precision=dict.fromkeys([*groups, OTHER], precision))))
    return points


def twin_order(points: list[dict]) -> list[dict]:
    """The same points in an order where none keeps its trial number (rounding makes some points
    equal): each is then fine-tuned with another seed than in the original sweep. Sorted by point,
    each position takes the point as many places on as the most repeated one occurs."""
    keys = [json.dumps(p, sort_keys=True) for p in points]
    most = max(Counter(keys).values())
    if 2 * most > len(points):
        raise ValueError("one point fills more than half the sweep: some would keep their trial numbers")
    order = sorted(range(len(points)), key=lambda i: keys[i])
    twin = [None] * len(points)
    for rank, index in enumerate(order):
        twin[index] = points[order[(rank + most) % len(points)]]
    return twin


def enqueue_uniform(study: optuna.Study, points: list[dict]) -> None:
    if study.trials:
        return
    for params in points:
        study.enqueue_trial(params, skip_if_exists=False)


def finished(db, name: str, trials: int) -> bool:
    """The study exists and its budget is spent: nothing to run, and its artifacts are not needed."""
    try:
        study = optuna.load_study(study_name=name, storage=db)
    except KeyError:
        return False
    # Only finished trials: one left RUNNING or WAITING by a stopped run still has to be run.
    return budget_used([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]) >= trials


class Notices(RunEvents):
    def notice(self, text: str) -> None:  # a database retry, re-queued trials: worth a line in the log
        print(f"  {text}", flush=True)


def run_method(task: str, method: str, seed: int, trials: int, db: str, extra: dict) -> None:
    spec = method_spec(task, method, seed, trials, db, extra)
    if finished(db, spec["study.name"], trials):
        print(f"  {spec['study.name']}: all {trials} trials done", flush=True)
        return

    def enqueue_sweep(prepared) -> None:
        sweep = TWINS.get(method, method)
        if sweep in SWEEPS:
            points = uniform_points(prepared.space, [g.name for g in prepared.context.groups], trials,
                                    spec["search.sparsity_max"], seed, SWEEPS[sweep])
            enqueue_uniform(prepared.study, twin_order(points) if method in TWINS else points)

    study = run_study(spec, Notices(), before_trials=enqueue_sweep).study
    print(f"  {study.study_name}: {len(study.trials)} trials in all", flush=True)


def score(study: optuna.Study, trials: int) -> dict:
    """Hypervolume after each trial (failed ones keep the previous value), and every complete trial's
    (latency relative to the baseline, Top-1).

    Latency is taken relative to the study's own baseline: each study measures its baseline once,
    and on a drifting host those absolute medians differ between studies by tens of percent, while
    the paired ratios do not."""
    baseline = record.baseline(study)
    # A trial whose worker died (stopped bench) is re-run under a later number: skip it, not the last one.
    ordered = [t for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number) if counts_toward_budget(t)][:trials]
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
    points = [(t.user_attrs["latency_ms"], t.user_attrs["top1"]) for t in complete]
    seeded = {t.number for t in ordered if t.user_attrs.get("seeded")}
    device = baseline.get("device") or {}
    return {"curve": curve, "points": points, "numbers": [t.number for t in complete],
            "seeded": [t.number in seeded for t in complete],
            "baseline_latency_ms": baseline["latency_ms"], "baseline_top1": baseline["top1"],
            "device": f"{device.get('name')} on {device.get('full_name')} "
                      f"({device.get('extra', {}).get('capabilities', '?')}; {device.get('threads_used')} thread(s))"}


def fastest_within(result: dict, points_lost: float) -> float | None:
    """The lowest relative latency among models whose Top-1 is at most ``points_lost`` below the baseline's."""
    near = [latency for latency, top1 in result["points"] if top1 >= result["baseline_top1"] - points_lost]
    return min(near) if near else None


def front_of(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, Top-1) points no other is at least as fast and as accurate as, by latency."""
    front, best_top1 = [], -1.0
    # By ascending latency, a point is on the front if it is more accurate than every faster one.
    for latency, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if top1 > best_top1:
            front.append((latency, top1))
            best_top1 = top1
    return front


def misses(result: dict, sweep: dict) -> list[tuple[float, float, float | None]]:
    """Each sweep-front model ``result`` leaves undominated: (its latency, its Top-1, the Top-1 points
    short of it of ``result``'s most accurate model at most as slow; None if none is that fast)."""
    found = []
    for latency, top1 in front_of(sweep["points"]):
        near = [own_top1 for own, own_top1 in result["points"] if own <= latency]
        if not near or max(near) < top1:
            found.append((latency, top1, top1 - max(near) if near else None))
    return found


def gain_at_sweep_front(result: dict, sweep: dict) -> list[float]:
    """For each model on a sweep's front: the fastest of ``result``'s models with at least its Top-1,
    as a latency ratio to it (< 1: faster at equal Top-1). None where no model is as accurate."""
    ratios = []
    for latency, top1 in front_of(sweep["points"]):
        matching = [own for own, own_top1 in result["points"] if own_top1 >= top1]
        ratios.append(min(matching) / latency if matching else None)
    return ratios


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def _median(values: list) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def summarise(results: dict, trials: int, sweep: str = "uniform", drops: tuple[float, ...] = DROPS) -> list[str]:
    """Three tables against one off-the-shelf ``sweep``: hypervolume (final; trials to reach the sweep's
    best), the fastest model within 1, 2, 5, 10 points of the baseline, and the latency at the Top-1
    of each model on the sweep's front."""
    reference = results[sweep]
    sweep_best = _median([max(r["curve"]) for r in reference.values()])
    lines = [f"| method | seeds | final hypervolume, median (range) | trials to reach {sweep}'s "
             f"{sweep_best:.3f}, median (per seed; - = not within {trials}) |", "|---|---|---|---|"]
    for method, by_seed in results.items():
        finals = [r["curve"][-1] if r["curve"] else 0.0 for r in by_seed.values()]
        reach = [trials_to_reach(r["curve"], sweep_best) for r in by_seed.values()]
        median_reach = np.median([n if n is not None else trials + 1 for n in reach])
        reach_text = f">{trials}" if median_reach > trials else f"{median_reach:g}"
        shown = ", ".join("-" if n is None else str(n) for n in reach)
        lines.append(f"| {method} | {len(by_seed)} | {np.median(finals):.3f} ({min(finals):.3f}-{max(finals):.3f}) | "
                     f"{reach_text} ({shown}) |")
    marks = list(range(10, trials + 1, 10))
    if len(marks) > 1:  # a longer budget: where one search overtakes another
        lines += ["", "| method | " + " | ".join(f"hypervolume after {m} trials, median (range)" for m in marks) + " |",
                  "|---|" + "---|" * len(marks)]
        for method, by_seed in results.items():
            at = [[r["curve"][min(m, len(r["curve"])) - 1] if r["curve"] else 0.0 for r in by_seed.values()] for m in marks]
            lines.append(f"| {method} | " + " | ".join(f"{np.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in at) + " |")
    lines += ["", "| method | " + " | ".join(f"fastest at Top-1 >= baseline - {d:g} (x baseline latency; vs {sweep})"
                                              for d in drops) + " |", "|---|" + "---|" * len(drops)]
    fastest = {d: _median([fastest_within(r, d) for r in reference.values()]) for d in drops}
    for method, by_seed in results.items():
        cells = []
        for d in drops:
            found = [fastest_within(r, d) for r in by_seed.values()]
            latency = _median(found)
            missing = sum(f is None for f in found)
            cells.append("none" if np.isnan(latency) else
                         f"{latency:.3f} ({latency / fastest[d]:.2f}x)" + (f", {missing} seed(s) none" if missing else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"| method | latency at the Top-1 of each {sweep}-front model, x its latency: median (range; "
              f"models with no match) | seeds whose front dominates {sweep}'s (same seed) | {sweep}-front models "
              "left undominated: by all trials / the recipe seeds alone / the sampler's trials alone | "
              "those left by all trials: seed: latency @ Top-1 (points short at no higher latency) |",
              "|---|---|---|---|---|"]
    for method, by_seed in results.items():
        per_seed = {seed: gain_at_sweep_front(result, reference[seed]) for seed, result in by_seed.items() if seed in reference}
        ratios = [r for found in per_seed.values() for r in found]
        found = [r for r in ratios if r is not None]
        # dominated: every model on the sweep's front is matched by one at least as fast and as accurate
        dominating = [seed for seed, seed_ratios in per_seed.items() if all(r is not None and r <= 1.0 for r in seed_ratios)]
        left = [sum(_undominated(_part(by_seed[seed], part), reference[seed]) for seed in per_seed)
                for part in (None, True, False)]
        missed = "; ".join(f"{seed}: {latency:.3f} @ {top1:.2f} ({'none as fast' if short is None else f'{short:.2f}'})"
                           for seed in per_seed for latency, top1, short in misses(by_seed[seed], reference[seed]))
        lines.append(f"| {method} | " + (f"{np.median(found):.2f}x ({min(found):.2f}-{max(found):.2f}; "
                                          f"{len(ratios) - len(found)} of {len(ratios)} unmatched)" if found else "none")
                     + f" | {len(dominating)} of {len(per_seed)} | {' / '.join(map(str, left))} of {len(ratios)} | "
                     + (missed or "-") + " |")
    return lines


def _part(result: dict, seeded: bool | None) -> dict:
    """The result with only its recipe-seeded trials (True), only the sampler's (False), or all (None)."""
    if seeded is None:
        return result
    flags = result.get("seeded") or [False] * len(result["points"])
    return {**result, "points": [p for p, s in zip(result["points"], flags) if s == seeded]}


def _undominated(result: dict, sweep: dict) -> int:
    """How many models on the sweep's front no model of ``result`` matches at least as fast and as accurate."""
    return sum(r is None or r > 1.0 for r in gain_at_sweep_front(result, sweep))


def load_results(db: str, task: str, methods, seeds, trials: int) -> dict:
    """Score the run's studies in the database that have spent their budget; a study cut short would
    enter the medians with a shorter curve, so it is named and left out."""
    storage = optuna.storages.RDBStorage(db)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    results: dict = {}
    for method in methods:
        for seed in seeds:
            name = f"{task}-{method}-{seed}"
            if name not in names:
                continue
            if not finished(storage, name, trials):
                print(f"{name}: not finished, left out", file=sys.stderr)
                continue
            study = optuna.load_study(study_name=name, storage=storage)
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
                results.setdefault(method, {})[seed] = score(study, trials)
    return results


def merge(sources: list[Path], db: str, trials: int) -> list[str]:
    """Copy the finished studies of other SQLite databases (``--share`` runs) into ``db``, unless it has them."""
    present, copied = set(optuna.get_all_study_names(db)), []
    for source in sources:
        url = f"sqlite:///{source.resolve()}"
        for name in optuna.get_all_study_names(url):
            if name not in present and finished(url, name, trials):
                optuna.copy_study(from_study_name=name, from_storage=url, to_storage=db)
                present.add(name)
                copied.append(name)
    return copied


def snapshot(db: str, destination: Path, trials: int) -> list[str]:
    """Copy the SQLite database to ``destination`` with only its finished studies: the record behind
    BENCHMARKS.md, and where a later run resumes (an unfinished study would need its artifacts)."""
    import sqlite3

    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    with sqlite3.connect(db.split("///", 1)[-1]) as source, sqlite3.connect(destination) as copy:
        source.backup(copy)
    url = f"sqlite:///{destination.resolve()}"
    kept = []
    for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
        if finished(url, summary.study_name, trials):
            kept.append(summary.study_name)
        else:
            optuna.delete_study(study_name=summary.study_name, storage=url)
    with sqlite3.connect(destination) as copy:
        copy.execute("VACUUM")
    return kept


def write_json(path: Path, trials: int, results: dict) -> None:
    """Write the scores beside the database, keeping those of methods and seeds this run did not score
    (a summary of a few methods must not drop the others' from the record)."""
    kept = {}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("trials") == trials:
            kept = stored["results"]
    for method, by_seed in results.items():
        kept.setdefault(method, {}).update({str(seed): result for seed, result in by_seed.items()})
    path.write_text(json.dumps({"trials": trials, "results": kept}, indent=1))


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axis, fronts) = plt.subplots(1, 2, figsize=(13, 4.8))
    for method, by_seed in results.items():
        curves = [r["curve"] for r in by_seed.values() if r["curve"]]
        length = min(len(c) for c in curves)
        stacked = np.array([c[:length] for c in curves])
        x = np.arange(1, length + 1)
        line, = axis.plot(x, np.median(stacked, axis=0), label=method)
        axis.fill_between(x, stacked.min(axis=0), stacked.max(axis=0), alpha=0.15, color=line.get_color())
        # The front of every model the method found over all seeds, as a staircase.
        points = sorted(p for r in by_seed.values() for p in r["points"])
        front = [p for i, p in enumerate(points) if all(p[1] > q[1] for q in points[:i])]
        if front:
            fronts.step(*zip(*front), where="post", color=line.get_color(), label=method)
            fronts.scatter(*zip(*points), s=8, alpha=0.35, color=line.get_color())
    baseline_top1 = _median([r["baseline_top1"] for by_seed in results.values() for r in by_seed.values()])
    fronts.axhline(baseline_top1 - 1, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("trials")
    axis.set_ylabel("hypervolume (latency / baseline, Top-1)")
    axis.set_title(f"{title}: hypervolume, median and range over seeds", fontsize=10)
    axis.legend()
    fronts.set_xlabel("latency / the study's baseline")
    fronts.set_ylabel("Top-1 %")
    fronts.set_title("models of all seeds and each method's front (dotted: baseline - 1 point)", fontsize=10)
    fronts.set_ylim(bottom=max(0.0, baseline_top1 - 30))
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)  # Optuna: heartbeats outside Study.optimize (ours)
    parser = make_parser(__doc__)
    parser.add_argument("--task", choices=list(TASKS), default="default")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=[m for m in METHODS if m not in TWINS],
                        help="default: all but the twins (a calibration of the noise, run when asked)")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite:///bench-results/<task>.db)")
    parser.add_argument("--set", action="append", default=[], help="spec override, e.g. finetune.epochs=1")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the hypervolume curves")
    parser.add_argument("--threads", type=int, default=0, help="training threads (0: PyTorch's default); "
                        "two tasks can then run side by side, one core each")
    parser.add_argument("--summary", action="store_true", help="only score the studies already in --db "
                        "(e.g. of a run cut short): print, plot, write the JSON")
    parser.add_argument("--share", default=None, metavar="K/N", help="run only the K-th of N shares of the "
                        "(seed, method) studies (K from 0): N processes, each with its own --db, split one run")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], metavar="SQLITE", help="databases of --share "
                        "runs: their finished studies are copied into --db before scoring")
    parser.add_argument("--snapshot", type=Path, default=None, help="also copy the (SQLite) --db's finished "
                        "studies to this file; a later run can resume from a copy of it")
    args = parser.parse_args()
    share = re.fullmatch(r"(\d+)/(\d+)", args.share or "0/1")
    if not share or int(share[1]) >= int(share[2]):
        parser.error(f"--share {args.share}: K/N with 0 <= K < N, e.g. 0/2")
    if "uniform" not in args.methods:
        parser.error("the comparison is against the uniform sweep: keep 'uniform' in --methods")
    training_threads(args.threads)
    stop_like_ctrl_c()
    extra = spec_overrides(args.set)
    db = args.db or f"sqlite:///{ROOT / 'bench-results' / (args.task + '.db')}"
    if not args.summary:
        # Seed by seed, so a run cut short still compares every method on the seeds it finished.
        studies = [(seed, method) for seed in args.seeds for method in args.methods]
        if args.share:
            studies = studies[int(share[1])::int(share[2])]
        try:
            for seed, method in studies:
                print(f"{method}, seed {seed}", flush=True)
                run_method(args.task, method, seed, args.trials, db, extra)
        except KeyboardInterrupt:
            sys.exit("stopped; the same command resumes where this run stopped")
        if args.share:
            print(f"share {args.share} done; score all shares with --summary --merge")
            return
    if args.merge:
        print("merged: " + (", ".join(merge(args.merge, db, args.trials)) or "nothing new"))
    results = load_results(db, args.task, args.methods, args.seeds, args.trials)
    if "uniform" not in results:
        sys.exit(f"no uniform sweep with a finished trial in {db} yet: nothing to compare against")
    devices = sorted({r["device"] for by_seed in results.values() for r in by_seed.values()})
    print("device: " + "; ".join(devices))
    if len(devices) > 1:
        print("warning: these studies ran on different devices; their latency ratios are not comparable", file=sys.stderr)
    if args.snapshot:
        kept = snapshot(db, args.snapshot, args.trials)
        print(f"snapshot: {args.snapshot} ({len(kept)} finished studies)")
    # The JSON goes beside the file that is kept: the snapshot when there is one, else the database.
    kept_file = args.snapshot or Path(db.split("///")[-1])
    write_json(kept_file.with_suffix(".json"), args.trials, results)
    for sweep in (*SWEEPS, *TWINS):  # against a twin too: both directions of a sweep against its twin
        if sweep in results:
            print(f"\n### against {sweep}\n\n" + "\n".join(summarise(results, args.trials, sweep)))
    if args.plot:
        seeds = sorted({seed for by_seed in results.values() for seed in by_seed})
        plot(results, args.plot, f"{args.task}: {args.trials} trials, seeds {', '.join(map(str, seeds))}")
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
