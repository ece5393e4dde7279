"""What the user sees while a study runs: trial n of N, the current phase, the front so far."""
from __future__ import annotations

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import pareto, record
from .runner import RunEvents


class StudyProgress(RunEvents):
    """A progress bar with the current phase, and a line per finished trial (none when ``quiet``)."""

    def __init__(self, console: Console, total: int, done: int, quiet: bool = False, label: str = "trials"):
        self.console = console
        self.quiet = quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[phase]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task(label, total=total, completed=done, phase="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def status(self, text: str) -> None:
        self.progress.update(self.task, phase=text)

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]")

    def budget_spent(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def on_phase(self, number: int, phase: str) -> None:
        if not self.quiet:
            self.progress.update(self.task, phase=f"trial {number}: {phase}")

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
        self.console.print(f"trial {trial.number:>3}  {result}  [dim]{pareto.settings_short(trial.params, a, record.group_names(study))}[/]  front: {size}")
        self.progress.advance(self.task)
