"""Is a float recipe seed ever worth its trial where its int8 twin runs too?

    python -m bench.recipe_twins bench/results/*.db

For every study in the given SQLite databases that ran a uniform recipe both in float and all in
int8 (``uniform-2/3`` and ``uniform-2/3+int8``, the same for 1/3), prints both trials' latency
relative to the study's baseline and Top-1, and whether the int8 twin dominates (at least as fast
and as accurate). The same structure, pruned the same way, differs only in precision, so this is
what the recipes' order rests on (searcher/recipes.py).
"""
from __future__ import annotations

from pathlib import Path

import optuna

from bench.common import parser as make_parser


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("databases", nargs="+", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print("| database | study | recipe | float: latency x baseline, Top-1 | int8: latency x baseline, Top-1 | int8 dominates |")
    print("|---|---|---|---|---|---|")
    count = {}
    for path in args.databases:
        url = f"sqlite:///{path}"
        for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            # the first complete trial of each recipe (tune finalize may add a second one)
            seeded = {}
            for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
                seeded.setdefault(t.user_attrs.get("seeded"), t.user_attrs)
            for share in ("2/3", "1/3"):
                plain, twin = seeded.get(f"uniform-{share}"), seeded.get(f"uniform-{share}+int8")
                if not (plain and twin):
                    continue
                points = [(a["latency_vs_baseline"], a["top1"]) for a in (plain, twin)]
                dominates = points[1][0] <= points[0][0] and points[1][1] >= points[0][1]
                count.setdefault(share, []).append(dominates)
                print(f"| {path.name} | {summary.study_name} | uniform-{share} | {points[0][0]:.3f}, {points[0][1]:.2f} | "
                      f"{points[1][0]:.3f}, {points[1][1]:.2f} | {'yes' if dominates else 'no'} |")
    for share, found in count.items():
        print(f"\nuniform-{share}: the int8 twin dominates in {sum(found)} of {len(found)} studies", end="")
    print()


if __name__ == "__main__":
    main()
