"""How long `tune report` takes on a stored study of 10,000 trials (SQLite).

    python bench/report_scale.py [--trials 10000]

Builds a synthetic two-objective study in a temporary SQLite file (parameters and user
attributes shaped like edgetune's), then times loading it and writing the report, phase by phase.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from edgetune.searcher import report


def build(storage: str, n: int) -> None:
    study = optuna.create_study(study_name="big", storage=storage, directions=["minimize", "maximize"])
    rng = np.random.default_rng(0)
    distributions = {f"sparsity.layer{i}": optuna.distributions.FloatDistribution(0, 0.8, step=0.05) for i in (1, 2, 3)}
    trials = []
    for _ in range(n):
        params = {k: float(np.round(rng.uniform(0, 0.8) / 0.05) * 0.05) for k in distributions}
        latency = 2.0 - sum(params.values()) / 2 + rng.normal(0, 0.02)
        top1 = 99 - max(params.values()) ** 3 * 5 + rng.normal(0, 0.2)
        trials.append(optuna.trial.create_trial(
            params=params, distributions=distributions, values=[latency, top1],
            user_attrs={"latency_ms": latency, "top1": top1, "params": 1000, "flops": 2000, "size_bytes": 3000,
                        "seconds": {"fine_tune": 20.0, "measure": 2.0}}))
    study.add_trials(trials)
    study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
    for key, value in {"latency_ms": 2.0, "top1": 99.0, "params": 2000, "flops": 4000, "size_bytes": 6000}.items():
        study.set_user_attr(f"baseline_{key}", value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/big.db"
        t0 = time.perf_counter()
        build(storage, args.trials)
        print(f"build {args.trials} trials: {time.perf_counter() - t0:.1f} s")
        timings = {}
        t0 = time.perf_counter()
        study = optuna.load_study(study_name="big", storage=storage)
        data = report.collect(study)
        timings["load + Pareto front"] = time.perf_counter() - t0
        for name, step in (("front.png", lambda: report.plot_front_png(data, Path(tmp) / "f.png")),
                           ("front.html", lambda: report.plot_front_html(data, Path(tmp) / "f.html")),
                           ("hypervolume history", lambda: report.hypervolume_history(data)),
                           ("importances", lambda: report.importances(data)),
                           ("correlations", lambda: report.correlations(data))):
            t0 = time.perf_counter()
            step()
            timings[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report.write_report(optuna.load_study(study_name="big", storage=storage), Path(tmp) / "out")
        timings["whole report (fresh load)"] = time.perf_counter() - t0
    print("| step | seconds |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"\nreport: {timings['whole report (fresh load)']:.1f} s for {args.trials} trials")


if __name__ == "__main__":
    main()
