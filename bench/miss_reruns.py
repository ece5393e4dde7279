"""Is a sweep model the search leaves undominated a better model, or a lucky fine-tune? Re-run both.

    python -m bench.miss_reruns --task default --method tpe-distill --seeds 0 --reruns 5 \\
        --source bench/results/search-default.db --db sqlite:///bench-results/reruns-default.db \\
        --threads 1 --set finetune.epochs=1 --set device.threads=1

bench/search_efficiency.py counts a seed's front as dominating a sweep's only if every model on the
sweep's front is matched by one of the method's at least as fast and as accurate. Each study fine-tunes
each model once, with one seed, so the sweep's front keeps its luckiest draws. This benchmark takes
every sweep-front model a method leaves undominated in the stored studies of ``--source`` (its
"misses", as the search benchmark's summary lists them) and the method's most accurate model at no
higher latency, and fine-tunes each again ``--reruns`` times from the same pruned baseline with other
fine-tune seeds, each in its own study's setting (the sweep's labels-only fine-tune; the method's,
e.g. distilled), deployed and measured as in the study. A trial's fine-tune seed is the study's seed
plus its number, so a rerun at its original's number would repeat the recorded draw: another model
takes that number where there is one; where there is not, that trial runs and is not counted.

Printed per miss: both models' recorded (latency × baseline, Top-1), their reruns' Top-1 mean (sd,
range) and median latency, and the difference of the mean Top-1s with its 95% interval (Welch's t).
An interval that holds 0 says the miss is a draw of the fine-tune, not a better model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import optuna
from scipy import stats

from bench.common import parser as make_parser, spec_overrides, stop_like_ctrl_c, training_threads
from bench.search_efficiency import SWEEPS, Notices, load_results, method_overrides, misses
from edgetune.searcher import record
from edgetune.searcher.runner import run_study
from edgetune.searcher.spec import load_spec

RERUN_OF = "rerun_of"  # user attribute: the stored trial a rerun repeats


def rerun_study_name(task: str, method: str, seed: int) -> str:
    return f"{task}-reruns-{method}-{seed}"


def miss_pairs(results: dict, method: str, seed: int) -> list[dict]:
    """Each sweep-front model ``method`` leaves undominated in ``seed``, with the method's most accurate
    model at no higher latency (None if it has none that fast): trial numbers and recorded points."""
    own = results[method][seed]
    pairs = []
    for sweep in SWEEPS:
        if seed not in results.get(sweep, {}):
            continue
        reference = results[sweep][seed]
        for latency, top1, _ in misses(own, reference):
            match = None
            near = [(t1, -lat, n) for (lat, t1), n in zip(own["points"], own["numbers"]) if lat <= latency]
            if near:
                best_top1, neg_latency, number = max(near)
                match = {"number": number, "point": (-neg_latency, best_top1)}
            pairs.append({"sweep": sweep, "number": reference["numbers"][reference["points"].index((latency, top1))],
                          "point": (latency, top1), "match": match})
    return pairs


def rerun_order(originals: list[int], reruns: int) -> list[int]:
    """Which original each rerun trial (numbered 0, 1, ... in a fresh study) repeats: ``reruns`` new
    draws of each, round robin. A trial at its original's own number would repeat the recorded draw
    (the fine-tune seed is the study's plus the number): another model takes that number if one can,
    else it runs once more and :func:`rerun_points` leaves it out."""
    left = {n: reruns for n in originals}
    order: list[int] = []
    while any(left.values()):
        position = len(order)
        ready = [n for n in originals if left[n] and n != position]
        if not ready:  # only the model whose own number this is: a repeat of its draw, not counted
            order.append(position)
            continue
        # The model with most reruns left first, so none bunches at the end.
        choice = max(ready, key=lambda n: (left[n], -originals.index(n)))
        left[choice] -= 1
        order.append(choice)
    return order


def run_reruns(task: str, method: str, seed: int, originals: dict[int, dict], reruns: int, db: str,
               extra: dict) -> optuna.Study:
    """One study per (stored study): its originals' params enqueued ``reruns`` times each, then run."""
    order = rerun_order(list(originals), reruns)
    overrides = {**method_overrides(task, method, seed, len(order), db, extra), "search.recipes": False,
                 "study.sampler": "random", "study.name": rerun_study_name(task, method, seed)}
    spec = load_spec(None, overrides)

    def enqueue(prepared) -> None:
        if prepared.study.trials:  # a resumed run: enqueued already
            return
        for number in order:
            prepared.study.enqueue_trial(originals[number], user_attrs={RERUN_OF: number})

    print(f"{spec['study.name']}: trials {', '.join(map(str, originals))} of {task}-{method}-{seed}, "
          f"{reruns} reruns each", flush=True)
    return run_study(spec, Notices(), before_trials=enqueue).study


def rerun_points(study: optuna.Study) -> dict[int, list[tuple[float, float]]]:
    """(latency × the rerun study's baseline, Top-1) of each complete rerun, by the trial it repeats."""
    if not record.has_baseline(study):  # still bootstrapping: no rerun yet
        return {}
    baseline = record.baseline(study)["latency_ms"]
    found: dict[int, list] = {}
    for t in study.get_trials(deepcopy=False):
        # At its original's number a trial repeats the recorded draw (same seed): not a new one.
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get(RERUN_OF, t.number) != t.number:
            found.setdefault(t.user_attrs[RERUN_OF], []).append((t.user_attrs["latency_ms"] / baseline, t.user_attrs["top1"]))
    return found


def describe(points: list[tuple[float, float]]) -> str:
    """Reruns' Top-1 mean (sd; range; n) and median latency; "-" under two reruns."""
    if len(points) < 2:
        return "-"
    top1 = np.array([p[1] for p in points])
    return (f"{top1.mean():.2f} (sd {top1.std(ddof=1):.2f}; {top1.min():.2f}-{top1.max():.2f}; n {len(top1)}), "
            f"{np.median([p[0] for p in points]):.3f}")


def difference(ours: list[tuple[float, float]], theirs: list[tuple[float, float]]) -> str:
    """Mean Top-1 of ours minus theirs, with Welch's 95% interval."""
    a, b = [p[1] for p in ours], [p[1] for p in theirs]
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return f"{np.mean(a) - np.mean(b):+.2f} ({interval.low:+.2f} to {interval.high:+.2f})"


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--task", default="default", choices=["default", "cifar", "quick"])
    parser.add_argument("--method", default="tpe-distill", help="the search whose misses are re-run")
    parser.add_argument("--trials", type=int, default=10, help="the stored studies' budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reruns", type=int, default=5, help="fine-tunes of each model with other seeds")
    parser.add_argument("--source", type=Path, required=True, help="the search benchmark's SQLite snapshot")
    parser.add_argument("--db", required=True, help="where the reruns' studies go (resumable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec overrides for every study, as the stored studies ran (e.g. finetune.epochs=1)")
    parser.add_argument("--summary", action="store_true", help="print what --db holds, run nothing")
    args = parser.parse_args()
    if args.reruns < 2:
        parser.error("--reruns: at least 2, for a spread")
    training_threads(args.threads)
    stop_like_ctrl_c()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    extra = spec_overrides(args.set)
    source = f"sqlite:///{args.source.resolve()}"
    results = load_results(source, args.task, [args.method, *SWEEPS], args.seeds, args.trials)
    if args.method not in results:
        sys.exit(f"{args.source}: no finished {args.task}-{args.method}-SEED study for seeds {args.seeds}")
    names = set(optuna.get_all_study_names(args.db)) if args.summary else set()
    lines = ["| seed | sweep model: trial, recorded latency @ Top-1 | its reruns: Top-1 mean (sd; range; n), "
             "median latency | method's model at no higher latency: trial, recorded | its reruns | "
             "method − sweep, mean Top-1 (95% interval) |", "|---|---|---|---|---|---|"]
    try:
        for seed in args.seeds:
            if seed not in results[args.method]:
                continue
            pairs = miss_pairs(results, args.method, seed)
            if not pairs:
                print(f"seed {seed}: {args.method}'s front dominates both sweeps'; nothing to re-run")
                continue
            # The trials to re-run, by the stored study they come from (each once, in order).
            wanted: dict[str, list[int]] = {}
            for name, number in [(p["sweep"], p["number"]) for p in pairs] + [
                    (args.method, p["match"]["number"]) for p in pairs if p["match"]]:
                if number not in wanted.setdefault(name, []):
                    wanted[name].append(number)
            reran: dict[str, dict] = {}
            for name, numbers in wanted.items():
                if args.summary:
                    study_name = rerun_study_name(args.task, name, seed)
                    if study_name not in names:
                        continue
                    study = optuna.load_study(study_name=study_name, storage=args.db)
                else:  # the stored trials' parameters, run again
                    stored = optuna.load_study(study_name=f"{args.task}-{name}-{seed}", storage=source)
                    params = {n: stored.trials[n].params for n in numbers}
                    study = run_reruns(args.task, name, seed, params, args.reruns, args.db, extra)
                reran[name] = rerun_points(study)
            for pair in pairs:
                theirs = reran.get(pair["sweep"], {}).get(pair["number"], [])
                match = pair["match"]
                ours = reran.get(args.method, {}).get(match["number"], []) if match else []
                cells = [str(seed), f"{pair['sweep']} {pair['number']}, {pair['point'][0]:.3f} @ {pair['point'][1]:.2f}",
                         describe(theirs)]
                if match:
                    cells += [f"{match['number']}, {match['point'][0]:.3f} @ {match['point'][1]:.2f}", describe(ours),
                              difference(ours, theirs) if len(ours) > 1 and len(theirs) > 1 else "-"]
                else:
                    cells += ["none as fast", "-", "-"]
                lines.append("| " + " | ".join(cells) + " |")
    except KeyboardInterrupt:
        sys.exit("stopped; the same command resumes where this run stopped")
    print(f"\n{args.task}: {args.method}'s misses against the sweeps, each model fine-tuned {args.reruns} more times\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
