"""How long `tune report` and `tune pareto` take on a stored study of 10,000 trials, from a cold process.

    python -m bench.report_scale [--trials 10000] [--db FILE] [--storage URL] [--runs 2]

Builds a synthetic two-objective study (three sparsity parameters, edgetune's user attributes)
through Optuna's public API (``add_trials``: minutes on SQLite), in a temporary SQLite file, or kept
in ``--db FILE`` between runs (built again only when the file lacks this build of N trials), or in
the database at ``--storage URL`` (PostgreSQL, say; built there when it lacks the study: its rows
copied from ``--db FILE`` when that holds the same build, else through ``add_trials``). Then, each
in a fresh Python process: the report phase by phase (the table), ``tune pareto``, and ``tune report``
as a user runs it. The last line is that last figure: ``report: N.N s for N trials``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = "big"
BUILD = 1  # bump when build() changes: a kept --db file of another build is built again


def build(storage: str, n: int) -> None:
    import numpy as np
    import optuna

    from edgetune.searcher.params import SPARSITY, param_name

    study = optuna.create_study(study_name=STUDY, storage=storage, directions=["minimize", "maximize"])
    rng = np.random.default_rng(0)
    distributions = {param_name(SPARSITY, f"layer{i}"): optuna.distributions.FloatDistribution(0, 0.8, step=0.05) for i in (1, 2, 3)}
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
    study.set_user_attr("report_scale_build", [BUILD, n])  # last: a build cut short is never taken as done


def built(storage: str, n: int) -> bool:
    """The storage holds this build of the study, complete, with n trials (read from its mark: counting the
    trials through Optuna, or listing study summaries, would load all of them)."""
    import optuna

    if STUDY not in optuna.get_all_study_names(storage):
        return False
    return optuna.load_study(study_name=STUDY, storage=storage).user_attrs.get("report_scale_build") == [BUILD, n]


def prepare(args, tmp: str) -> str:
    """The storage URL of a built study: --storage as given, --db kept, or a temporary file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.storage:
        if not built(args.storage, args.trials):
            if STUDY in optuna.get_all_study_names(args.storage):
                optuna.delete_study(study_name=STUDY, storage=args.storage)
            t0 = time.perf_counter()
            if args.db and Path(args.db).is_file() and built(f"sqlite:///{args.db}", args.trials):
                copy_rows(f"sqlite:///{args.db}", args.storage)
                print(f"build {args.trials} trials: copied from {args.db}, {time.perf_counter() - t0:.1f} s")
            else:
                build(args.storage, args.trials)
                print(f"build {args.trials} trials: {time.perf_counter() - t0:.1f} s")
        return args.storage
    target = Path(args.db) if args.db else Path(tmp) / "big.db"
    if target.is_file() and built(f"sqlite:///{target}", args.trials):
        print(f"build {args.trials} trials: kept in {target}")
        return f"sqlite:///{target}"
    # Built on a RAM disk where there is one (no fsync per trial), then copied to where it is kept.
    scratch = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else tmp)
    try:
        t0 = time.perf_counter()
        build(f"sqlite:///{scratch}/big.db", args.trials)
        print(f"build {args.trials} trials: {time.perf_counter() - t0:.1f} s")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(scratch) / "big.db", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return f"sqlite:///{target}"


def copy_rows(source: str, target: str) -> None:
    """Copy every row of Optuna's tables from a storage holding only the built study into an empty one
    of the same schema version (tables made by Optuna itself): seconds, where add_trials into
    PostgreSQL took ten minutes. The rows are those Optuna wrote, so the study reads back the same."""
    import optuna
    from sqlalchemy import MetaData, create_engine, text

    optuna.storages.RDBStorage(target)  # Optuna creates the tables (and its version rows) in the target
    source_engine, target_engine = create_engine(source), create_engine(target)
    tables = MetaData()
    tables.reflect(bind=target_engine)
    with source_engine.connect() as reading, target_engine.begin() as writing:
        for table in tables.sorted_tables:  # parents before the tables that point to them
            if table.name in ("version_info", "alembic_version"):
                continue
            rows = [dict(row._mapping) for row in reading.execute(text(f"SELECT * FROM {table.name}"))]
            for start in range(0, len(rows), 5000):
                writing.execute(table.insert(), rows[start:start + 5000])
            key = list(table.primary_key.columns)
            if rows and target_engine.dialect.name == "postgresql" and len(key) == 1:
                # the serial keys go on after the copied ones
                writing.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                                     f"(SELECT max({key[0].name}) FROM {table.name}))"))


def phases(storage: str, out: str) -> None:
    """Run in a fresh process: the report's parts one after another, printed as JSON [wall, CPU] seconds."""
    timings = {}
    wall, cpu = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal wall, cpu
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        timings[name] = [now_wall - wall, now_cpu - cpu]
        wall, cpu = now_wall, now_cpu

    from edgetune.searcher import bulk, pareto, report, report_plots
    from edgetune.searcher.storage import read_study

    lap("import report (optuna, numpy, sqlalchemy)")
    study = read_study(storage, STUDY)
    lap("open the study to read (storage.read_study)")
    rows = bulk.read_trials(study, report.report_user_attrs(study))
    lap("read the trials (bulk)")
    data = report.collect(study, rows)
    lap("Pareto front, counts, sample chosen")
    pareto.front_table(study, trials=rows)
    lap("`tune pareto`'s table (trials already read)")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    history = report.hypervolume_history(data)
    inputs = report.plot_inputs(data, history)
    lap("hypervolume history, the plots' inputs")
    report_plots.plot_front_png(inputs, folder / "front.png")
    lap("front.png (with matplotlib's import)")
    report_plots.plot_front_html(inputs, folder / "front.html")
    lap("front.html (with plotly's import)")
    report_plots.plot_hypervolume(inputs.history, folder / "hypervolume.png")
    lap("hypervolume.png")
    report.importances(data)
    lap("importances (the sample in memory, PED-ANOVA)")
    report.correlations(data)
    lap("correlations")
    report.phase_seconds(data)
    lap("time per phase")
    heavy = sorted(m for m in ("torch", "sklearn", "scipy.stats", "pandas", "openvino", "nni") if m in sys.modules)
    print(json.dumps({"timings": timings, "heavy": heavy}))


def cold(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a command in a fresh process (fails loudly)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--db", help="SQLite file to keep the built study in between runs")
    parser.add_argument("--storage", help="a storage URL to build (if needed) and read the study in, e.g. PostgreSQL")
    parser.add_argument("--runs", type=int, default=1, help="cold runs of each command (the median is shown)")
    parser.add_argument("--phases", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.phases:
        return phases(*args.phases)
    tune = [sys.executable, "-m", "edgetune.searcher.cli"]
    timings: dict[str, list[list[float]]] = {}
    heavy: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        storage = prepare(args, tmp)
        for _ in range(args.runs):
            child = subprocess.run([sys.executable, os.path.abspath(__file__), "--phases", storage, f"{tmp}/phases"],
                                   capture_output=True, text=True)
            if child.returncode:
                raise SystemExit(f"phases failed:\n{child.stdout}\n{child.stderr}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            heavy.update(result["heavy"])
            for name, seconds in result["timings"].items():
                timings.setdefault(name, []).append(seconds)
            for name, command in (
                    ("`tune pareto`", [*tune, "pareto", STUDY, "--storage", storage]),
                    ("`tune report --no-classes`", [*tune, "report", STUDY, "--storage", storage, "--out", f"{tmp}/plain",
                                                    "--no-classes"]),
                    ("`tune report`", [*tune, "report", STUDY, "--storage", storage, "--out", f"{tmp}/out"])):
                timings.setdefault(name, []).append(list(cold(command)))
    runs = f"median of {args.runs} runs" if args.runs > 1 else "one run"
    print(f"\nEach in a fresh process ({runs}); CPU: user + system.\n")
    def median(name: str, i: int) -> float:
        return sorted(p[i] for p in timings[name])[len(timings[name]) // 2]

    print("| step | wall s | CPU s |\n|---|---|---|")
    for name in timings:
        print(f"| {name} | {median(name, 0):.2f} | {median(name, 1):.2f} |")
        if name == "time per phase":  # the last phase
            names = list(timings)[:list(timings).index(name) + 1]
            print(f"| the phases above, summed (one report, in one process) | {sum(median(n, 0) for n in names):.2f} | "
                  f"{sum(median(n, 1) for n in names):.2f} |")
    print(f"\nHeavy modules the report imported: {', '.join(sorted(heavy)) or 'none'} "
          "(of torch, sklearn, scipy.stats, pandas, openvino, nni).")
    print(f"\nreport: {median('`tune report`', 0):.1f} s for {args.trials} trials")


if __name__ == "__main__":
    main()
