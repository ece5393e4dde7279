"""What a study shows when its output is not a terminal (a log file, CI): lines, not a silent bar."""
import io
import re
import time

from rich.console import Console

from edgetune.searcher import progress
from edgetune.searcher.progress import StudyProgress, status_lines


def _log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def _lines(out: io.StringIO) -> list[str]:
    """The status lines, each without its time (H:MM:SS since the command began); not the bar's last frame."""
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines() if re.match(r"\d+:\d\d:\d\d ", line)]


def test_each_status_is_a_line_once_with_the_time_since_the_command_began(monkeypatch):
    monkeypatch.setattr(progress, "_BEGAN", time.monotonic() - 3725)
    console, out = _log()
    with StudyProgress(console, total=4, done=0) as shown:
        shown.status("baseline: 1/3 epochs trained (loss 2.100)")
        shown.status("baseline: 1/3 epochs trained (loss 2.100)")  # unchanged: no second line
        shown.status("baseline: 2/3 epochs trained (loss 1.700)")
    assert [line for line in out.getvalue().splitlines() if "baseline" in line][:2] == [
        "1:02:05 baseline: 1/3 epochs trained (loss 2.100)", "1:02:05 baseline: 2/3 epochs trained (loss 1.700)"]
    assert _lines(out) == ["baseline: 1/3 epochs trained (loss 2.100)", "baseline: 2/3 epochs trained (loss 1.700)"]


def test_a_long_phase_gets_a_line_a_short_one_does_not(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)
    console, out = _log()
    with StudyProgress(console, total=4, done=0) as shown:
        shown.on_phase(0, "prune")  # over before the heartbeat: no line
        shown.on_phase(0, "fine_tune")
        time.sleep(0.6)
    assert "trial 0: fine_tune" in _lines(out) and "trial 0: prune" not in _lines(out), out.getvalue()


def test_quiet_workers_and_terminals_get_no_lines(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.1)
    console, out = _log()
    with StudyProgress(console, total=4, done=0, quiet=True) as shown:
        shown.status("baseline: 1/3 epochs trained (loss 2.100)")
        time.sleep(0.3)
    terminal = io.StringIO()
    with StudyProgress(Console(file=terminal, force_terminal=True), total=4, done=0) as shown:
        shown.status("baseline: 1/3 epochs trained (loss 2.100)")
    for shown in (out, terminal):  # (the bar shows it on a terminal)
        assert _lines(shown) == [], shown.getvalue()


def test_a_checking_status_is_a_line_per_update_without_a_terminal():
    console, out = _log()
    with status_lines(console, "checking the device, data and model") as checking:
        checking.update("data: the training images' mean and deviation")
    assert _lines(out) == ["checking the device, data and model", "data: the training images' mean and deviation"]
