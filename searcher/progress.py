"""What the user sees while a study runs: trial n of N, the current phase, the front so far."""
from __future__ import annotations

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import pareto, record


class StudyProgress:
    def __init__(self, console: Console, total: int, done: int):
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[phase]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task("trials", total=total, completed=done, phase="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def status(self, text: str) -> None:
        self.progress.update(self.task, phase=text)

    def on_phase(self, number: int, phase: str) -> None:
        self.progress.update(self.task, phase=f"trial {number}: {phase}")

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        a = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            result = f"latency {a['latency_ms']:.3f} ms  Top-1 {a['top1']:.2f}%  params {pareto._human(a.get('params'))}"
        else:
            result = f"[yellow]{trial.state.name.lower()}[/]: {a.get('failure', '')}"
        size = len(pareto.front(study))
        self.console.print(f"trial {trial.number:>3}  {result}  [dim]{pareto.settings_short(trial.params, a, record.group_names(study))}[/]  front: {size}")
        self.progress.advance(self.task)
