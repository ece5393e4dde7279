"""What the user sees while a study runs: trial n of N, the current phase, the front so far.

On a terminal that is a live bar. Elsewhere (output to a log file, CI, nohup) a live bar shows nothing
until the run ends, so the same news comes as lines: each status as it changes (checking, the baseline's
epochs) and, after :data:`HEARTBEAT_SECONDS` without a line, what is running now.
"""
from __future__ import annotations

import contextlib
import threading
import time
import types

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import pareto, record
from .runner import RunEvents

#: Without a terminal: the longest silence before a line says what is running.
HEARTBEAT_SECONDS = 60.0
_BEGAN = time.monotonic()  # imported as a command starts: lines count from there


class _Lines:
    """Status lines for output that is not a terminal, each with the time since the command began."""

    def __init__(self, console: Console):
        self.console = console
        self.last = time.monotonic()
        self.current = ""

    def say(self, text: str) -> None:
        seconds = int(time.monotonic() - _BEGAN)
        self.console.print(f"[dim]{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}[/] {text}",
                           highlight=False)
        self.printed()

    def printed(self) -> None:
        self.last = time.monotonic()

    def status(self, text: str) -> None:
        if text and text != self.current:
            self.say(text)
        self.current = text

    def beat(self, stop: threading.Event) -> None:
        while not stop.wait(min(5.0, HEARTBEAT_SECONDS)):
            if self.current and time.monotonic() - self.last >= HEARTBEAT_SECONDS:
                self.say(self.current)


@contextlib.contextmanager
def status_lines(console: Console, text: str):
    """``console.status(text)`` on a terminal; elsewhere ``text`` and each ``update`` as a line."""
    if console.is_terminal:
        with console.status(text) as status:
            yield status
        return
    lines = _Lines(console)
    lines.status(text)
    yield types.SimpleNamespace(update=lines.status)  # what console.status gives the caller: .update(text)


class StudyProgress(RunEvents):
    """A progress bar with the current phase, and a line per finished trial (none when ``quiet``)."""

    def __init__(self, console: Console, total: int, done: int, quiet: bool = False, label: str = "trials"):
        self.console = console
        self.quiet = quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[phase]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task(label, total=total, completed=done, phase="")
        self.lines = _Lines(console) if not (quiet or console.is_terminal) else None
        self._stop = threading.Event()

    def __enter__(self):
        self.progress.__enter__()
        if self.lines:
            threading.Thread(target=self.lines.beat, args=(self._stop,), daemon=True, name="progress-lines").start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        return self.progress.__exit__(*exc)

    def status(self, text: str) -> None:
        self.progress.update(self.task, phase=text)
        if self.lines:
            self.lines.status(text)

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]")

    def budget_spent(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def on_phase(self, number: int, phase: str) -> None:
        if not self.quiet:
            self.progress.update(self.task, phase=f"trial {number}: {phase}")
            if self.lines:
                self.lines.current = f"trial {number}: {phase}"  # a line only if it lasts (the heartbeat)

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.quiet:
            self.progress.advance(self.task)
            return
        a = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            result = f"latency {a['latency_ms']:.3f} ms  Top-1 {a['top1']:.2f}%  params {pareto._human(a.get('params'))}"
        else:
            result = f"[yellow]{trial.state.name.lower()}[/]: {a.get('failure', '')}"
        size = len(pareto.front(study))
        if self.lines:
            self.lines.printed()
        self.console.print(f"trial {trial.number:>3}  {result}  [dim]{pareto.settings_short(trial.params, a, record.group_names(study))}[/]  front: {size}")
        self.progress.advance(self.task)
