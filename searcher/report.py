"""``tune report``: a self-contained folder a user can act on.

``front.png`` and ``front.html`` of latency against Top-1 with the baseline marked and dominated
trials faded, and ``hypervolume.png`` (drawn by :mod:`searcher.report_plots`); ``report.md`` with the front and
its deltas, hypervolume over trials, parameter importances per objective (Optuna's PED-ANOVA,
fast on large studies), the correlation of each group's sparsity with each objective, time per
phase, and the classes that compression hurts (a section of ``report.md`` and ``flips-trial-<n>.png``,
via :mod:`searcher.harm`). Everything is computed from the stored study: the front as
:func:`searcher.pareto.front`, the hypervolume with moocore, importances with Optuna.

At scale (10,000 trials): the trials are read once, in bulk and only the fields shown
(:mod:`searcher.bulk`); importances and the interactive plot use a sample (:data:`SAMPLE`); no
module is imported that the report does not use (scipy.stats, torch, scikit-learn); on Linux the
plots are drawn in a process forked before the study is read (:class:`report_plots.Plotter`).
"""
from __future__ import annotations

import contextlib
import importlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna

from . import bulk, pareto, record
from .params import STRUCTURAL, kind_of, structural
from .report_plots import PlotInputs, Plotter
from .spec import target_direction, target_unit

#: Importances and the interactive plot use at most this many trials (all front trials plus a fixed
#: random sample of the rest): on 10,000 trials each full pass costs seconds and adds nothing.
SAMPLE = 1000


@dataclass
class ReportData:
    study: optuna.Study
    trials: list[bulk.StoredTrial]  # complete ones, by number, with the user attributes of report_user_attrs
    targets: list[str]
    baseline: dict
    front: list[pareto.FrontRow]
    counts: dict[str, int]
    sampled: list[int] = field(default_factory=list)  # the front and a sample of the others: indices into trials
    sample: optuna.Study | None = None  # the same trials in memory, parameters and values (sample_study)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # a user attribute of every trial (_values)
    top1_floor: float | None = None  # the plot's Top-1 axis starts here (front models below it are left out)

    @property
    def front_numbers(self) -> set[int]:
        return {row.number for row in self.front}


def report_user_attrs(study: optuna.Study, targets: list[str] | None = None) -> set[str]:
    """The user attributes the report reads of every trial (those on the front and in the sample of the
    interactive plot are read whole)."""
    targets = record.targets(study) if targets is None else targets
    return {"latency_ms", "top1", "seconds", *(target_unit(t) for t in targets), *pareto.front_user_attrs(study)}


def collect(study: optuna.Study, trials: list | None = None) -> ReportData:
    """Read the study's trials once, in bulk and only what the report shows (on 10,000 trials Optuna's
    full load was most of the report's time); ``trials``: already read (:func:`report_user_attrs`)."""
    targets = record.targets(study)
    with bulk.gc_paused():
        every = bulk.read_trials(study, report_user_attrs(study, targets)) if trials is None else trials
        complete = [t for t in every if t.state == optuna.trial.TrialState.COMPLETE]
        data = ReportData(study, complete, targets, record.baseline(study), pareto.front(study, every),
                          pareto.counts(study, every))
        data.sampled = _sampled(data)
    return data


def _sampled(data: ReportData) -> list[int]:
    """The front and a fixed random sample of the other trials, as indices into ``data.trials``."""
    on_front = data.front_numbers
    rest = [i for i, t in enumerate(data.trials) if t.number not in on_front]
    if len(rest) > SAMPLE:
        rng = np.random.default_rng(0)
        rest = [rest[i] for i in rng.choice(len(rest), SAMPLE, replace=False)]
    return sorted([i for i, t in enumerate(data.trials) if t.number in on_front] + rest)


def sample_study(data: ReportData) -> optuna.Study:
    """The sampled trials as an in-memory study of their parameters and values (what PED-ANOVA reads);
    built on first use, after the plots have their inputs."""
    if data.sample is None:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
        try:
            data.sample = optuna.create_study(directions=data.study.directions)
        finally:
            optuna.logging.set_verbosity(verbosity)
        data.sample.add_trials([optuna.trial.create_trial(values=t.values, params=t.params,
                                                          distributions=t.distributions)
                                for t in (data.trials[i] for i in data.sampled)])
    return data.sample


def _values(data: ReportData, metric: str) -> np.ndarray:
    if metric not in data.columns:
        data.columns[metric] = np.array([t.user_attrs.get(metric, np.nan) for t in data.trials], dtype=float)
    return data.columns[metric]


def plot_inputs(data: ReportData, history: list[tuple[int, float]], plotly_js: str = "directory") -> PlotInputs:
    """What the plots draw, as plain arrays (they are drawn in another process): the front and the sample
    of the other trials (:data:`SAMPLE`; the plots of 10,000 points took twice as long and showed the
    same cloud), and the hypervolume after every trial."""
    counts = data.counts
    title = (f"{data.study.study_name}: {counts.get('complete', 0)} complete, {counts.get('pruned', 0)} collapsed, "
             f"{counts.get('fail', 0)} failed")
    if len(data.sampled) < len(data.trials):
        title += f" ({len(data.sampled) - len(data.front):,} dominated shown)"
    front = {row.number: row for row in data.front}
    groups = record.group_names(data.study) if front else []

    def hover(trial) -> str:
        lines = [f"trial {trial.number}"]
        if trial.number in front:
            lines.append(pareto.settings_short(front[trial.number].params, front[trial.number].attrs, groups))
        return "<br>".join(lines + [f"{k}: {v}" for k, v in trial.params.items()])

    shown = [data.trials[i] for i in data.sampled]
    base = data.baseline
    return PlotInputs(
        title=title, latency=_values(data, "latency_ms")[data.sampled], top1=_values(data, "top1")[data.sampled],
        on_front=np.array([t.number in front for t in shown], dtype=bool),
        baseline=(base["latency_ms"], base["top1"]) if base.get("latency_ms") is not None else None,
        hover=[hover(t) for t in shown], history=[v for _, v in history], front=_plots_front(data),
        labels=[str(t.number) if t.number in front else "" for t in shown], top1_floor=data.top1_floor,
        plotly_js=plotly_js)


def reference_point(data: ReportData) -> np.ndarray:
    """Hypervolume reference in minimisation form: the baseline's values, made 10% worse."""
    point = []
    for target in data.targets:
        value = data.baseline.get(target_unit(target))
        if value is None:
            value = float(np.nanmax(_values(data, target_unit(target))))
        point.append(value * 1.1 if target_direction(target) == "minimize" else -(value - abs(value) * 0.1 - 1.0))
    return np.array(point, dtype=float)


def hypervolume_history(data: ReportData) -> list[tuple[int, float]]:
    """Hypervolume of the front after each complete trial."""
    import moocore

    if len(data.targets) < 2 or not data.trials:
        return []
    reference = reference_point(data)
    signs = np.array([1.0 if target_direction(t) == "minimize" else -1.0 for t in data.targets])
    points = np.array([[t.user_attrs[target_unit(k)] for k in data.targets] for t in data.trials], dtype=float) * signs
    inside = np.all(points < reference, axis=1)
    volumes = np.zeros(len(points))  # after each trial; 0 until a point is inside the reference
    front, volume, since = np.empty((0, len(data.targets))), 0.0, 0
    for start in range(0, len(points), HYPERVOLUME_BLOCK):
        block = points[start:start + HYPERVOLUME_BLOCK]
        # The running front only improves: a point it weakly dominates at the block's start stays dominated,
        # so only the others are checked one by one (the same decisions, a fraction of the work).
        open_ = inside[start:start + HYPERVOLUME_BLOCK] & ~np.any(np.all(front[:, None, :] <= block[None], axis=2), axis=0)
        for i in start + np.flatnonzero(open_):
            point = points[i]
            if not np.any(np.all(front <= point, axis=1)):  # keep the running front only
                volumes[since:i] = volume
                front = np.vstack([front[~np.all(point <= front, axis=1)], point])
                volume, since = float(moocore.hypervolume(front, ref=reference)), i
    volumes[since:] = volume
    return [(trial.number, v) for trial, v in zip(data.trials, volumes.tolist())]


HYPERVOLUME_BLOCK = 256
#: the unit of each target's attribute, as the hypervolume's explanation names them
UNITS = {"latency_ms": "ms", "top1": "Top-1 points", "size_bytes": "bytes", "params": "parameters", "flops": "FLOPs",
         "memory_bytes": "bytes"}


def importances(data: ReportData) -> dict[str, dict[str, float]]:
    """Parameter importance for each objective (PED-ANOVA: seconds even on 10,000 trials)."""
    if len(data.trials) < 4:
        return {}
    with _without_sklearn():
        importance = importlib.import_module("optuna.importance")  # not `from optuna import`: a lazy stand-in
    evaluator = importance.PedAnovaImportanceEvaluator()
    result = {}
    for index, target in enumerate(data.targets):
        try:
            result[target] = importance.get_param_importances(
                sample_study(data), evaluator=evaluator, target=lambda t, i=index: t.values[i])
        except (ValueError, RuntimeError):  # too few distinct values to rank anything
            result[target] = {}
    return result


@contextlib.contextmanager
def _without_sklearn():
    """Import ``optuna.importance`` without scikit-learn: the package imports it for fANOVA, which the
    report does not use (2-4 s of a cold report); PED-ANOVA needs none of it. ``None`` in
    ``sys.modules`` makes that import fail as a missing package would, which Optuna's ``try_import``
    expects; only the fANOVA and mean-decrease-impurity evaluators of this process are left without it."""
    if "sklearn" in sys.modules or "optuna.importance" in sys.modules:
        yield
        return
    sys.modules["sklearn"] = None
    try:
        yield
    finally:
        del sys.modules["sklearn"]


def correlations(data: ReportData) -> dict[str, dict[str, float]]:
    """Spearman correlation of each structural parameter (blocks, widths; sparsity in older studies)
    with each objective."""
    params = sorted({p for t in data.trials for p in t.params if structural(p)})
    result: dict[str, dict[str, float]] = {}
    for param in params:
        x = np.array([t.params.get(param, np.nan) for t in data.trials], dtype=float)
        result[param] = {}
        for target in data.targets:
            y = _values(data, target_unit(target))
            ok = ~(np.isnan(x) | np.isnan(y))
            rho = spearman(x[ok], y[ok]) if ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0 else float("nan")
            result[param][target] = float(rho)
    return result


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of two non-constant samples without NaN, as ``scipy.stats.spearmanr(x, y).statistic``
    computes it (average ranks, then ``np.corrcoef``): the same number, without scipy.stats' import."""
    ranked = np.column_stack((_average_ranks(x), _average_ranks(y)))
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.empty(len(values), dtype=np.intp)
    dense[order] = np.cumsum(starts)
    bounds = np.r_[np.flatnonzero(starts), len(values)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def phase_seconds(data: ReportData) -> dict[str, float]:
    phases: dict[str, list[float]] = {}
    for trial in data.trials:
        for phase, seconds in (trial.user_attrs.get("seconds") or {}).items():
            phases.setdefault(phase, []).append(seconds)
    return {phase: float(np.median(values)) for phase, values in phases.items()}


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def measured_markdown(data: ReportData) -> list[str]:
    """What was measured, where: the model and its baseline, the data set, the device and its runtime."""
    spec, info, device = record.spec_values(data.study), record.data_info(data.study), data.baseline.get("device") or {}
    lines = []
    if spec.get("model.name"):
        source = record.baseline_source(data.study)
        params = data.baseline.get("params")
        lines.append(f"- Model: {spec['model.name']}" + (f", {params:,} parameters" if params else "")
                     + (f" (baseline: {source})" if source else ""))
    if info:
        shape = "×".join(str(n) for n in info.get("input_shape", []))
        where = f" from {spec['data.dir']}" if spec.get("data.dir") else ""
        lines.append(f"- Data: {info['name']}{where}, {len(info.get('classes', []))} classes, {shape} inputs; "
                     "Top-1 on its validation split")
    if device:
        threads = device.get("threads_used", device.get("threads"))
        lines.append(f"- Device: {device.get('name')} ({device.get('full_name')}), runtime {device.get('runtime')}"
                     + (f", {threads} thread{'s' if threads != 1 else ''} (baseline)" if threads else "")
                     + f"; latency: median of single batch-{spec.get('device.batch', 1)} inferences, each model "
                     "timed paired with the baseline")
    return ["## What was measured", "", *lines, ""] if lines else []


def front_markdown(data: ReportData) -> list[str]:
    groups = record.group_names(data.study)
    base = data.baseline
    memory, energy = pareto.shows_memory(base), pareto.shows_energy(base)

    def mem(value) -> list[str]:
        return [f"{value:,}" if value is not None else "–"] if memory else []

    def mj(value) -> list[str]:
        return [f"{value:.3g}" if value is not None else "–"] if energy else []

    header = ["trial", "latency ms", "Δ latency", "Top-1 %", "Δ Top-1", "params", "FLOPs", "size",
              *(["memory bytes"] if memory else []), *(["energy mJ"] if energy else []), "settings"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if base:
        lines.append("| " + " | ".join([
            "baseline", f"{base['latency_ms']:.3f}", "", f"{base['top1']:.2f}", "", f"{base['params']:,}",
            f"{base['flops']:,}", f"{base['size_bytes']:,}", *mem(base.get("memory_bytes")), *mj(base.get("energy_mj")),
            "uncompressed"]) + " |")
    for row in data.front:
        a = row.attrs
        lines.append("| " + " | ".join([
            str(row.number), f"{a['latency_ms']:.3f}", pareto._rel(a["latency_ms"], base.get("latency_ms")),
            f"{a['top1']:.2f}", f"{a['top1'] - base.get('top1', a['top1']):+.2f}", f"{a['params']:,}", f"{a['flops']:,}",
            f"{a['size_bytes']:,}", *mem(a.get("memory_bytes")), *mj(a.get("energy_mj")), pareto.settings_short(row.params, a, groups)]) + " |")
    return lines


#: The files a report writes into its folder (``plotly.min.js``: where it is not shared, as in every report
#: written before it was). By name and not from a list the last run left: nothing more to write or to trust,
#: and folders written by earlier versions are cleaned too; a user's own files never match.
REPORT_FILES = re.compile(r"report\.md|front\.png|front\.html|hypervolume\.png|flips-trial-\d+\.png|plotly\.min\.js")


def clear_report(folder: Path) -> list[Path]:
    """Remove what an earlier report wrote into ``folder`` (only the report's own files); returns them.
    A new report then leaves exactly its own files, as ``tune export`` clears each ``trial-N/`` first."""
    removed = [path for path in folder.iterdir() if REPORT_FILES.fullmatch(path.name) and path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def write_report(study: optuna.Study, out: Path, artifacts_dir: str | None = None, data_splits=None,
                 plotter: Plotter | None = None, max_top1_drop: float | None = pareto.DEFAULT_MAX_TOP1_DROP,
                 plotly_js: str = "directory") -> list[Path]:
    """Write the report folder; returns the files written. ``plotter``: one started before the study was
    opened (its imports then overlap the reading), else one is started here. Front models that lose more
    than ``max_top1_drop`` Top-1 points are named but not shown (None: all are). ``plotly_js``: where
    front.html finds plotly.min.js (:class:`report_plots.PlotInputs`). An earlier report's files in ``out``
    are removed first (:func:`clear_report`): no plot or thumbnail of another run is left beside this one."""
    plotter = plotter or Plotter()
    out.mkdir(parents=True, exist_ok=True)
    data = collect(study)
    data.front, left_out = pareto.within_top1_drop(study, data.front, max_top1_drop)
    if left_out:
        data.top1_floor = data.baseline["top1"] - max_top1_drop
    clear_report(out)  # once the study is read, before anything is written
    written = []
    lines = [f"# edgetune report: {study.study_name}", ""]
    counts = data.counts
    lines += [f"{counts.get('complete', 0)} complete trials, {counts.get('pruned', 0)} collapsed, "
              f"{counts.get('fail', 0)} failed; targets: {', '.join(data.targets)}.", ""]
    lines += measured_markdown(data)
    sampler = record.sampler(study)
    if sampler:
        lines += [f"Sampler: {sampler['name']} ({sampler['why']}).", ""]
    if not data.trials:
        lines.append("No complete trial yet.")
    else:
        history = hypervolume_history(data)
        plotter.draw(plot_inputs(data, history, plotly_js), out)
        if _plots_front(data):
            lines += ["![Pareto front](front.png) — interactive: [front.html](front.html)", ""]
        lines += ["## Pareto front", ""] + front_markdown(data) + [""]
        if left_out:
            lines += [f"Not shown: {pareto.left_out_line(study, left_out, max_top1_drop)}.", ""]
        if record.searches_structure(data.study):
            groups = record.group_names(data.study)
            stages = "/".join(record.stage_names(data.study) or groups)
            lines += [f"Settings, as realized: `d` blocks kept per stage ({stages}), `s` residual-stream channels per "
                      f"stage, `i` inner channels per group ({'/'.join(groups)}; its widest layer), in multiples of "
                      f"{record.channel_multiple(data.study)[0]}; then the pruner and, where any group runs "
                      "int8, each group's precision (groups, then other).", ""]
        if history:
            marks = sorted({max(1, len(history) * k // 4) for k in range(1, 5)})
            units = " × ".join(UNITS.get(target_unit(t).partition("@")[0], t) for t in data.targets)
            lines += ["## Hypervolume over trials", "",
                      f"The region of ({', '.join(data.targets)}) the front dominates, up to a reference point at the "
                      f"baseline's values made 10% worse, in {units}: higher is better; it grows only when a "
                      "trial improves the front.", "",
                      "| complete trials | hypervolume |", "|---|---|"]
            lines += [f"| {m} | {history[m - 1][1]:.4g} |" for m in marks] + ["", "![hypervolume](hypervolume.png)", ""]
        ranking = importances(data)
        if ranking:
            size = len(data.sampled)
            sampled = f" on {size} of {len(data.trials)} trials" if size < len(data.trials) else ""
            lines += [f"## Parameter importances (PED-ANOVA{sampled})", "", "| parameter | " + " | ".join(ranking) + " |",
                      "|---|" + "---|" * len(ranking)]
            params = sorted({p for r in ranking.values() for p in r})
            lines += [f"| {p} | " + " | ".join(_fmt(ranking[t].get(p), 2) for t in ranking) + " |" for p in params]
            lines.append("")
        corr = correlations(data)
        if corr:
            shown = [f"{kind}: {text}" for kind, text in STRUCTURAL.items() if any(kind_of(p) == kind for p in corr)]
            lines += ["## Structure against each objective (Spearman ρ)", "",
                      "; ".join(shown).capitalize() + ".", "",
                      "| parameter | " + " | ".join(data.targets) + " |", "|---|" + "---|" * len(data.targets)]
            lines += [f"| {p} | " + " | ".join(_fmt(corr[p][t], 2) for t in data.targets) + " |" for p in corr]
            lines.append("")
        phases = phase_seconds(data)
        if phases:
            total = sum(phases.values())
            lines += ["## Time per phase (median seconds per trial)", "", "| phase | seconds | share |", "|---|---|---|"]
            lines += [f"| {p} | {s:.2f} | {s / total:.0%} |" for p, s in phases.items()] + [""]
        if artifacts_dir is not None and data_splits is not None:
            from .harm import class_harm_section

            section, files = class_harm_section(data, artifacts_dir, data_splits, out)
            lines += section
            written += files
        written = plotter.result() + written
    if not data.trials:
        plotter.close()
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return [report] + written


def _plots_front(data: ReportData) -> bool:
    return {"latency", "top1"} <= set(data.targets) or "latency_ms" in data.trials[0].user_attrs
