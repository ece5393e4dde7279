"""The Pareto front of a stored study, with every model's change against the baseline.

The front itself is Optuna's (``study.best_trials``: feasible, non-dominated, complete trials),
less every trial the uncompressed baseline dominates: the baseline is a point of every front
edgetune shows or exports, so a model that is slower and no more accurate is never offered.

The trials are read in bulk (:mod:`searcher.bulk`): of every trial only its state, values,
constraints, parameters and the targets' attributes; every attribute of the trials on the front.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import optuna
from rich import box
from rich.table import Table

from . import bulk, record
from .params import PRUNER, SPARSITY, of_kind
from .spec import target_unit


@dataclass
class FrontRow:
    number: int
    attrs: dict
    params: dict


def front(study: optuna.Study, trials: list | None = None) -> list[FrontRow]:
    """The feasible non-dominated complete trials, sorted by the first target; identical points are all
    kept (as Optuna's ``best_trials``), and a point the baseline dominates is left off.

    ``trials``: the study's trials, already read (``FrozenTrial`` or :class:`searcher.bulk.StoredTrial`,
    with at least the attributes of :func:`front_user_attrs`); by default read in bulk. The rows carry
    every user attribute of their trials."""
    import moocore

    targets = record.targets(study)
    trials = bulk.read_trials(study, front_user_attrs(study)) if trials is None else trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and all(v <= 0 for v in t.constraints.values())]  # Optuna's rule: a constraint <= 0 is met
    if len(study.directions) == 1:
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        complete = sorted(complete, key=lambda t: sign * t.value)[:1]
    elif complete:
        maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
        keep = moocore.is_nondominated([t.values for t in complete], maximise=maximise, keep_weakly=True)
        complete = [t for t, kept in zip(complete, keep) if kept]
    first = target_unit(targets[0]) if targets else "latency_ms"
    base = baseline(study)
    kept = bulk.with_all_user_attrs(study, [t for t in complete if not _dominated(base, targets, t.user_attrs)])
    rows = [FrontRow(t.number, t.user_attrs, t.params) for t in kept]
    return sorted(rows, key=lambda r: (r.attrs.get(first) is None, r.attrs.get(first, 0)))


def front_user_attrs(study: optuna.Study) -> set[str]:
    """The user attributes :func:`front` reads of every trial (the front's own rows get all of theirs)."""
    return {"latency_ms", "energy_mj", *(target_unit(t) for t in record.targets(study))}


def dominated_by_baseline(study: optuna.Study, attrs: dict) -> bool:
    """The baseline is at least as good on every target and better on one."""
    return _dominated(baseline(study), record.targets(study), attrs)


def _dominated(base: dict, targets: list[str], attrs: dict) -> bool:
    from .spec import target_direction

    pairs = [(base.get(target_unit(t)), attrs.get(target_unit(t)), target_direction(t)) for t in targets]
    if not pairs or any(b is None or v is None for b, v, _ in pairs):
        return False
    signed = [(b, v) if d == "minimize" else (-b, -v) for b, v, d in pairs]
    return all(b <= v for b, v in signed) and any(b < v for b, v in signed)


baseline = record.baseline  # the baseline's record (kept here: bench scripts read it from pareto)

#: Top-1 points a front model may lose against the baseline and still be exported or plotted, unless
#: ``--max-top1-drop`` says otherwise: the demo's front ended in a model 38.6 points down, which
#: ``export --pareto`` shipped and which squeezed the useful models into the top strip of front.png.
DEFAULT_MAX_TOP1_DROP = 5.0


def within_top1_drop(study: optuna.Study, rows: list[FrontRow], max_drop: float | None
                     ) -> tuple[list[FrontRow], list[FrontRow]]:
    """The rows within ``max_drop`` Top-1 points of the baseline, and those that lose more (None: no floor)."""
    base = baseline(study).get("top1")
    if max_drop is None or base is None:
        return list(rows), []
    kept = [r for r in rows if r.attrs.get("top1") is None or r.attrs["top1"] >= base - max_drop]
    return kept, [r for r in rows if r not in kept]


def left_out_line(study: optuna.Study, rows: list[FrontRow], max_drop: float) -> str:
    """``trials 7 (-38.6), 12 (-9.1) lose more than 5 Top-1 points (--max-top1-drop)``."""
    base = baseline(study)["top1"]
    listed = ", ".join(f"{r.number} ({r.attrs['top1'] - base:+.2f})" for r in rows)
    return f"front trial{'s' if len(rows) > 1 else ''} {listed} lose{'s' if len(rows) == 1 else ''} more than " \
           f"{max_drop:g} Top-1 points (--max-top1-drop)"


def _rel(value, base) -> str:
    if value is None or not base:
        return ""
    return f"{(value - base) / base * 100:+.1f}%"


def _energy(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _human(n) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def counts(study: optuna.Study, trials: list | None = None) -> dict[str, int]:
    """Trials by state ("complete", "pruned", "fail", ...); ``trials`` saves a second load."""
    trials = bulk.read_trials(study, ()) if trials is None else trials
    return dict(collections.Counter(t.state.name.lower() for t in trials))


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _with_delta(text: str, delta: str) -> str:
    return f"{text}\n[dim]{delta}[/]" if delta else text


def settings_short(row_params: dict, attrs: dict, groups: list[str] | None = None) -> str:
    """Compact settings, as realized: blocks per stage (``d``), residual-stream channels per stage
    (``s``), inner channels per group (``i``), the pruner, then each group's precision where any is
    not the float one: ``d 3/5/9 s 16/32/48 i 8/16/40 l1 i8/f32/f32/i8``, and the recipe a
    seeded trial ran (``(recipe uniform-1/3)``). Trials of studies before
    depth and widths were searched show each group's sparsity instead (``l1 .35/.75/.80``)."""
    sparsity = of_kind(row_params, SPARSITY)
    groups = groups or list(attrs.get("inner_width") or {}) or sorted(sparsity)
    pruner = str(row_params.get(PRUNER, attrs.get("pruner", "")))
    parts = [f"{label} " + "/".join(str(v) for v in attrs[key].values())
             for label, key in (("d", "depth"), ("s", "stream_width"), ("i", "inner_width")) if attrs.get(key)]
    if parts:
        parts.append(pruner)
    else:  # a study from before widths were searched
        parts = [pruner, "/".join(f"{sparsity.get(g, 0.0):.2f}".lstrip("0") for g in groups)]
    plan = attrs.get("precision_plan") or {}
    text = " ".join(p for p in parts if p)
    if any(p == "int8" for p in plan.values()) or len(set(plan.values())) > 1 or "bf16" in plan.values():
        text += " " + "/".join(_PRECISION_SHORT.get(plan.get(g, "?"), plan.get(g, "?")) for g in [*groups, "other"])
    if attrs.get("seeded"):
        text += f" (recipe {attrs['seeded']})"
    if attrs.get("finalized_from") is not None:  # the same settings as that trial, fine-tuned longer
        text += f" (finalized from {attrs['finalized_from']})"
    return text


_PRECISION_SHORT = {"int8": "i8", "f32": "f32", "bf16": "bf16", "f16": "f16"}


def shows_memory(baseline_record: dict) -> bool:
    """Whether a front shows a memory column: not for studies from before memory was measured, nor on
    devices that cannot measure it (devices.base.Deployment.memory_bytes)."""
    return baseline_record.get("memory_bytes") is not None


def shows_energy(baseline_record: dict) -> bool:
    """Whether a front shows an energy column: where the study measured energy per inference."""
    return baseline_record.get("energy_mj") is not None


def front_table(study: optuna.Study, title: str | None = None, trials: list | None = None,
                rows: list[FrontRow] | None = None) -> Table:
    """``tune pareto``: the front with its deltas; ``trials`` as for :func:`front` (read once by default);
    ``rows``: the front's rows to show (default: all)."""
    trials = bulk.read_trials(study, front_user_attrs(study)) if trials is None else trials
    base = baseline(study)
    stats = counts(study, trials)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title or f"Pareto front of '{study.study_name}' "
                  f"({stats.get('complete', 0)} complete, {stats.get('pruned', 0)} collapsed, {stats.get('fail', 0)} failed)")
    groups = record.group_names(study)
    if record.searches_structure(study):  # d: blocks, s: stream channels, i: inner channels
        stages = record.stage_names(study) or groups
        settings = (f"d/s/i {'/'.join(groups)}" if stages == groups  # (ResNets: a group per stage)
                    else f"d/s {'/'.join(stages)}, i {'/'.join(groups)}") + ", pruner, precision +other"
    else:
        settings = f"pruner, sparsity {'/'.join(groups)}, precision {'/'.join([*groups, 'other'])}"
    others = list(record.spec_values(study).get("device.also") or [])  # latency on each further device
    memory, energy = shows_memory(base), shows_energy(base)
    for column in ("trial", "latency ms", *(f"ms@{name}" for name in others), "Top-1 %", "params", "FLOPs", "size",
                   *(["memory"] if memory else []), *(["energy mJ"] if energy else []), settings):
        if column == settings:
            table.add_column(column, justify="left", overflow="fold", min_width=20)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    if base:
        table.add_row("base", f"{base['latency_ms']:.3f}", *(_ms(base.get(f"latency_ms@{n}")) for n in others),
                      f"{base['top1']:.2f}", _human(base.get("params")),
                      _human(base.get("flops")), _human(base.get("size_bytes")) + "B",
                      *([_human(base["memory_bytes"]) + "B"] if memory else []),
                      *([f"{base['energy_mj']:.3g}"] if energy else []), "-")
    for row in front(study, trials) if rows is None else rows:
        a = row.attrs
        table.add_row(
            str(row.number),
            _with_delta(f"{a['latency_ms']:.3f}", _rel(a["latency_ms"], base.get("latency_ms"))),
            *(_with_delta(_ms(a.get(f"latency_ms@{n}")), _rel(a.get(f"latency_ms@{n}"), base.get(f"latency_ms@{n}")))
              for n in others),
            _with_delta(f"{a['top1']:.2f}", f"{a['top1'] - base['top1']:+.2f}" if "top1" in base else ""),
            _with_delta(_human(a.get("params")), _rel(a.get("params"), base.get("params"))),
            _with_delta(_human(a.get("flops")), _rel(a.get("flops"), base.get("flops"))),
            _human(a.get("size_bytes")) + "B",
            *([_with_delta(_human(a.get("memory_bytes")) + "B", _rel(a.get("memory_bytes"), base["memory_bytes"]))]
              if memory else []),
            *([_with_delta(_energy(a.get("energy_mj")), _rel(a.get("energy_mj"), base["energy_mj"]))] if energy else []),
            settings_short(row.params, a, groups),
        )
    return table
