"""The report's three plots, drawn in child processes that start before the study is read.

A cold report on 10,000 trials spends about a second importing matplotlib and plotly and about half
a second drawing; opening and reading the study takes as long. So :class:`Plotter` starts its
children first (one per library), they import while the parent reads, and the parent then sends
them plain arrays (:class:`PlotInputs`). A cold ``tune report`` forks them (they start in
milliseconds); a process that has run PyTorch or OpenVINO (a study, a test) spawns them instead: a
fork copies only the forking thread, and a lock one of those libraries' threads held stays held in
the child forever (it hung a test's report). ``front.png`` and ``hypervolume.png`` (matplotlib),
``front.html`` (plotly, offline, WebGL for the dominated cloud).
"""
from __future__ import annotations

import importlib
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LATENCY, TOP1 = "latency (ms)", "Top-1 (%)"


@dataclass
class PlotInputs:
    title: str
    latency: np.ndarray  # of the trials shown (the front and a sample of the rest), by number
    top1: np.ndarray
    on_front: np.ndarray  # bool, the same order
    baseline: tuple[float, float] | None  # (latency ms, Top-1 %)
    hover: list[str]  # the same order: what the interactive plot shows on each point
    history: list[float]  # hypervolume after each complete trial (empty: no plot)
    front: bool = True  # latency and Top-1 are there to plot
    labels: list[str] | None = None  # the same order: the trial number of each front point ("" elsewhere)
    top1_floor: float | None = None  # the Top-1 axis starts here (None: where the points do)
    plotly_js: str = "directory"  # plotly.min.js beside front.html, or its path relative to it (one for many reports)


def pyplot():
    """matplotlib's pyplot on the Agg backend: the report writes files and never opens a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plotly() -> None:
    importlib.import_module("plotly.graph_objects")


def top1_range(inputs: PlotInputs) -> tuple[float, float]:
    """The Top-1 axis from just below the floor to just above the best point or the baseline."""
    above = inputs.top1[inputs.top1 >= inputs.top1_floor]
    top = max([*above.tolist(), *([inputs.baseline[1]] if inputs.baseline else [])], default=100.0)
    pad = max(0.5, (top - inputs.top1_floor) * 0.05)
    return inputs.top1_floor - pad, top + pad


def plot_front_png(inputs: PlotInputs, path: Path) -> Path:
    plt = pyplot()

    latency, top1, on_front = inputs.latency, inputs.top1, inputs.on_front
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(latency[~on_front], top1[~on_front], s=18, color="tab:blue", alpha=0.25, label="dominated trials")
    order = np.argsort(latency[on_front])
    ax.plot(latency[on_front][order], top1[on_front][order], "-o", color="tab:red", ms=5, label="Pareto front")
    for index in np.flatnonzero(on_front):
        if inputs.labels and inputs.labels[index]:  # the trial, to name in `tune export --trial N`
            ax.annotate(inputs.labels[index], (latency[index], top1[index]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="tab:red")
    if inputs.baseline:
        ax.scatter([inputs.baseline[0]], [inputs.baseline[1]], marker="*", s=180, color="black",
                   label="baseline (uncompressed)", zorder=5)
    if inputs.top1_floor is not None:
        ax.set_ylim(*top1_range(inputs))
        below = int(np.sum(top1 < inputs.top1_floor))
        ax.text(0.01, 0.01, f"{below} trial{'s' if below != 1 else ''} below {inputs.top1_floor:.1f}% not shown",
                transform=ax.transAxes, fontsize=7, color="gray")
    ax.set_xlabel(LATENCY)
    ax.set_ylabel(TOP1)
    ax.set_title(inputs.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_front_html(inputs: PlotInputs, path: Path) -> Path:
    """The front and the dominated trials; hovering a point names its trial and settings."""
    import plotly.graph_objects as go

    front = np.flatnonzero(inputs.on_front)
    front = front[np.argsort(inputs.latency[front])]
    rest = np.flatnonzero(~inputs.on_front)
    template = f"%{{text}}<br>{LATENCY}: %{{x:.3f}}<br>{TOP1}: %{{y:.2f}}<extra></extra>"

    def points(index, **style):
        return dict(x=inputs.latency[index], y=inputs.top1[index], text=[inputs.hover[i] for i in index],
                    hovertemplate=template, **style)

    traces = [go.Scattergl(mode="markers", name="dominated trials",
                           **points(rest, marker={"color": "#1f77b4", "opacity": 0.35, "size": 6})),
              go.Scatter(mode="lines+markers+text", name="Pareto front",
                         textposition="top right", texttemplate=[inputs.labels[i] for i in front] if inputs.labels else None,
                         **points(front, marker={"color": "#d62728", "size": 8}, line={"color": "#d62728"}))]
    if inputs.baseline:
        traces.append(go.Scatter(x=[inputs.baseline[0]], y=[inputs.baseline[1]], mode="markers", name="baseline",
                                 marker={"symbol": "star", "size": 16, "color": "black"}))
    figure = go.Figure(traces, layout={"title": inputs.title, "xaxis_title": LATENCY, "yaxis_title": TOP1,
                                       "template": "plotly_white"})
    if inputs.top1_floor is not None:  # zoomed as front.png; the user can zoom out
        figure.update_yaxes(range=list(top1_range(inputs)))
    if inputs.plotly_js != "directory":  # one copy (4.8 MB) shared by the reports of a folder, written once
        from plotly.offline import get_plotlyjs

        shared, script = path.parent / inputs.plotly_js, get_plotlyjs()
        if not shared.is_file() or shared.read_text(encoding="utf-8") != script:  # another plotly version's
            partial = shared.with_name(f".{shared.name}.partial")
            partial.write_text(script, encoding="utf-8")
            partial.replace(shared)
    figure.write_html(str(path), include_plotlyjs=inputs.plotly_js)  # plotly.min.js on disk: works offline
    return path


def plot_hypervolume(history: list[float], path: Path) -> Path:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(range(1, len(history) + 1), history, color="tab:green")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are counted whole
    ax.set_xlabel("complete trials")
    ax.set_ylabel("hypervolume (higher is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_static(inputs: PlotInputs, out: Path) -> list[Path]:
    """The PNG plots the inputs call for (matplotlib), into ``out``."""
    written = [plot_front_png(inputs, out / "front.png")] if inputs.front else []
    if inputs.history:
        written.append(plot_hypervolume(inputs.history, out / "hypervolume.png"))
    return written


def draw_interactive(inputs: PlotInputs, out: Path) -> list[Path]:
    """front.html (plotly), where the inputs call for it."""
    return [plot_front_html(inputs, out / "front.html")] if inputs.front else []


def draw(inputs: PlotInputs, out: Path) -> list[Path]:
    """Every plot the inputs call for, into ``out``, in this process."""
    return draw_static(inputs, out) + draw_interactive(inputs, out)


#: One child per plotting library: each imports its own while the study is read, then draws its plots.
CHILDREN = ((pyplot, draw_static), (_plotly, draw_interactive))


class Plotter:
    """:func:`draw` in child processes, one per plotting library, that have imported it by the time the
    inputs come.

    Start it before the slow reading; ``draw`` sends the inputs, ``result`` waits for the files. A
    plotter that is never given inputs ends with this process (its children read end-of-file and exit).
    """

    def __init__(self):
        self._children, self._written = [], []
        context = multiprocessing.get_context(start_method())
        ours = []  # this process's ends so far: a forked child closes its copies, or a sibling never sees EOF
        for load, fn in CHILDREN:
            receive, send = context.Pipe(duplex=False)
            inputs, give = context.Pipe(duplex=False)
            ours += [give, receive]
            process = context.Process(target=_child, args=(load, fn, inputs, send, list(ours)), daemon=True)
            process.start()
            send.close()
            inputs.close()
            self._children.append((process, give, receive))

    def draw(self, inputs: PlotInputs, out: Path) -> None:
        if not self._children:
            self._written = draw(inputs, out)
        for _, give, _ in self._children:
            give.send((inputs, out))

    def result(self) -> list[Path]:
        written, failures = list(self._written), []
        for process, _, receive in self._children:
            try:
                ok, value = receive.recv()
            except EOFError:
                ok, value = False, f"it exited with code {process.exitcode}"
            process.join()
            if ok:
                written += value
            else:
                failures.append(value)
        self._children = []
        if failures:
            raise RuntimeError(f"drawing the report's plots failed: {'; '.join(failures)}")
        return written

    def close(self) -> None:
        """Let the children go without drawing (a report with nothing to plot)."""
        for process, give, _ in self._children:
            give.close()
            process.join()
        self._children = []


def start_method() -> str:
    """"fork" where it is safe (Linux, no PyTorch or OpenVINO thread pools in this process), else "spawn"."""
    return "fork" if sys.platform == "linux" and not {"torch", "openvino"} & set(sys.modules) else "spawn"


def _child(load, fn, inputs, send, parents_ends) -> None:
    for end in parents_ends:
        end.close()
    try:
        load()
        try:
            given = inputs.recv()
        except EOFError:  # the parent closed it: nothing to draw
            return
        send.send((True, fn(*given)))
    except BaseException as error:  # the parent raises it: a plot is part of the report
        send.send((False, f"{type(error).__name__}: {error}"))
