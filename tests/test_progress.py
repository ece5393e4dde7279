"""What a study shows when its output is not a terminal (a log file, CI): lines, not a silent bar."""
import io
import time

from rich.console import Console

from edgetune.searcher import progress
from edgetune.searcher.progress import StudyProgress, status_lines


def _log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_each_status_is_a_line_once_with_the_time_since_the_start():
    console, out = _log()
    with StudyProgress(console, total=4, done=0) as shown:
        shown.status("baseline: training epoch 1/3 (loss 2.100)")
        shown.status("baseline: training epoch 1/3 (loss 2.100)")  # unchanged: no second line
        shown.status("baseline: training epoch 2/3 (loss 1.700)")
    lines = [line for line in out.getvalue().splitlines() if line.startswith("0:")]  # not the bar's last frame
    assert lines == ["0:00:00 baseline: training epoch 1/3 (loss 2.100)", "0:00:00 baseline: training epoch 2/3 (loss 1.700)"]


def test_a_long_phase_gets_a_line_a_short_one_does_not(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)
    console, out = _log()
    with StudyProgress(console, total=4, done=0) as shown:
        shown.on_phase(0, "prune")  # over before the heartbeat: no line
        shown.on_phase(0, "fine_tune")
        time.sleep(0.6)
    text = out.getvalue()
    assert "trial 0: fine_tune" in text and "trial 0: prune" not in text, text


def test_quiet_workers_and_terminals_get_no_lines(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.1)
    console, out = _log()
    with StudyProgress(console, total=4, done=0, quiet=True) as shown:
        shown.status("baseline: training epoch 1/3 (loss 2.100)")
        time.sleep(0.3)
    terminal = io.StringIO()
    with StudyProgress(Console(file=terminal, force_terminal=True), total=4, done=0) as shown:
        shown.status("baseline: training epoch 1/3 (loss 2.100)")
    for shown in (out, terminal):  # (the bar shows it on a terminal)
        assert not [line for line in shown.getvalue().splitlines() if line.startswith("0:")], shown.getvalue()


def test_a_checking_status_is_a_line_per_update_without_a_terminal():
    console, out = _log()
    with status_lines(console, "checking the device, data and model") as checking:
        checking.update("data: the training images' mean and deviation")
    assert out.getvalue().splitlines() == ["0:00:00 checking the device, data and model",
                                           "0:00:00 data: the training images' mean and deviation"]
