"""The report's three plots, drawn in a child process that starts before the study is read.

A cold report on 10,000 trials spends about a second importing matplotlib and plotly and about half
a second drawing; the study takes as long to open and read. So :class:`Plotter` forks first, the
child imports both while the parent reads, and the parent then sends it plain arrays
(:class:`PlotInputs`, no study: nothing of the database crosses the fork). ``front.png``
(matplotlib), ``front.html`` (plotly, offline, WebGL for the dominated cloud) and
``hypervolume.png``.
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
    latency: np.ndarray  # every complete trial's, by number
    top1: np.ndarray
    on_front: np.ndarray  # bool, the same order
    baseline: tuple[float, float] | None  # (latency ms, Top-1 %)
    hover: dict[int, str]  # index into the arrays -> its hover text: the interactive plot shows only these
    history: list[float]  # hypervolume after each complete trial (empty: no plot)
    front: bool = True  # latency and Top-1 are there to plot


def plot_front_png(inputs: PlotInputs, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency, top1, on_front = inputs.latency, inputs.top1, inputs.on_front
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(latency[~on_front], top1[~on_front], s=18, color="tab:blue", alpha=0.25, label="dominated trials")
    order = np.argsort(latency[on_front])
    ax.plot(latency[on_front][order], top1[on_front][order], "-o", color="tab:red", ms=5, label="Pareto front")
    if inputs.baseline:
        ax.scatter([inputs.baseline[0]], [inputs.baseline[1]], marker="*", s=180, color="black",
                   label="baseline (uncompressed)", zorder=5)
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
    """The front and a sample of the dominated trials; hovering a point names its trial and settings."""
    import plotly.graph_objects as go

    shown = np.array(sorted(inputs.hover), dtype=int)
    front = shown[inputs.on_front[shown]]
    front = front[np.argsort(inputs.latency[front])]
    rest = shown[~inputs.on_front[shown]]
    template = f"%{{text}}<br>{LATENCY}: %{{x:.3f}}<br>{TOP1}: %{{y:.2f}}<extra></extra>"

    def points(index, **style):
        return dict(x=inputs.latency[index], y=inputs.top1[index], text=[inputs.hover[i] for i in index],
                    hovertemplate=template, **style)

    traces = [go.Scattergl(mode="markers", name="dominated trials",
                           **points(rest, marker={"color": "#1f77b4", "opacity": 0.35, "size": 6})),
              go.Scatter(mode="lines+markers", name="Pareto front", **points(front, marker={"color": "#d62728", "size": 8},
                                                                             line={"color": "#d62728"}))]
    if inputs.baseline:
        traces.append(go.Scatter(x=[inputs.baseline[0]], y=[inputs.baseline[1]], mode="markers", name="baseline",
                                 marker={"symbol": "star", "size": 16, "color": "black"}))
    figure = go.Figure(traces, layout={"title": inputs.title, "xaxis_title": LATENCY, "yaxis_title": TOP1,
                                       "template": "plotly_white"})
    figure.write_html(str(path), include_plotlyjs="directory")  # plotly.min.js beside it: works offline
    return path


def plot_hypervolume(history: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(range(1, len(history) + 1), history, color="tab:green")
    ax.set_xlabel("complete trials")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw(inputs: PlotInputs, out: Path) -> list[Path]:
    """Every plot the inputs call for, into ``out``."""
    written = []
    if inputs.front:
        written += [plot_front_png(inputs, out / "front.png"), plot_front_html(inputs, out / "front.html")]
    if inputs.history:
        written.append(plot_hypervolume(inputs.history, out / "hypervolume.png"))
    return written


def _import_plotting() -> None:
    import matplotlib

    matplotlib.use("Agg")
    for module in ("matplotlib.pyplot", "plotly.graph_objects"):
        importlib.import_module(module)


class Plotter:
    """:func:`draw` in a forked child that has imported matplotlib and plotly by the time the inputs come.

    Start it before the slow reading; ``draw`` sends the inputs, ``result`` waits for the files. Where
    fork is not the platform's safe default (Windows, macOS) ``draw`` draws at once, in this process. A
    plotter that is never given inputs ends with this process (its child reads end-of-file and exits).
    """

    def __init__(self):
        self._process, self._written = None, []
        if sys.platform != "linux":
            return
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        inputs, self._send = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(inputs, self._send, send), daemon=True)
        self._process.start()
        send.close()
        inputs.close()

    def draw(self, inputs: PlotInputs, out: Path) -> None:
        if self._process is None:
            self._written = draw(inputs, out)
        else:
            self._send.send((inputs, out))

    def result(self) -> list[Path]:
        if self._process is None:
            return self._written
        try:
            ok, value = self._receive.recv()
        except EOFError:
            ok, value = False, f"it exited with code {self._process.exitcode}"
        self._process.join()
        if not ok:
            raise RuntimeError(f"drawing the report's plots failed: {value}")
        return value

    def close(self) -> None:
        """Let the child go without drawing (a report with nothing to plot)."""
        if self._process is not None:
            self._send.close()
            self._process.join()
            self._process = None


def _child(inputs, parents_end, send) -> None:
    parents_end.close()  # else the inputs pipe never reads end-of-file here
    try:
        _import_plotting()
        try:
            given = inputs.recv()
        except EOFError:  # the parent closed it: nothing to draw
            return
        send.send((True, draw(*given)))
    except BaseException as error:  # the parent raises it: a plot is part of the report
        send.send((False, f"{type(error).__name__}: {error}"))
