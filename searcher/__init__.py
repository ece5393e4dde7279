"""The Optuna side of edgetune: study spec, search space, storage, trials, Pareto front, CLI."""
