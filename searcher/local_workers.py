"""``tune start --workers N``: N ``tune worker`` processes on this host, watched from the study.

The parent has already bootstrapped the study (baseline, groups); each child joins it like a worker
on another host would. The storage URL goes to the children in ``$EDGETUNE_STORAGE``, never on a
command line (where ``ps`` shows it). Training threads are split between the workers; latency
measurements on one device are serialised by the device lock, so workers do not time each other.
On a host with several GPUs, a study that trains on "auto" or "cuda" gives each worker its own GPU,
round robin (objectives.accelerator.worker_devices).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna

from edgetune.objectives.accelerator import gpu_count, worker_devices

from .storage import STORAGE_ENV
from .worker import budget_used

POLL_SECONDS = 2.0


class WorkerFailed(RuntimeError):
    """A worker process ended with an error (its last line is the message)."""


def _spawn(study_name: str, storage: str, artifacts: str, threads: int, index: int,
           train_device: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **{STORAGE_ENV: storage, "EDGETUNE_WORKER": str(index)})
    command = [sys.executable, "-m", "edgetune.searcher.cli", "worker", study_name, "--artifacts", artifacts,
               "--threads", str(threads), "--quiet"]
    if train_device:
        command += ["--set", f"train.device={train_device}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_local_workers(study: optuna.Study, spec, events, count: int) -> None:
    """Run ``count`` ``tune worker`` processes on the study until its budget is spent; report to ``events``
    (a :class:`searcher.runner.RunEvents`) every trial they finish and every line they print."""
    threads = max(1, (os.cpu_count() or 1) // count)
    devices = worker_devices(spec["train.device"], count, gpu_count())
    children = [_spawn(study.study_name, spec["study.storage"], spec["study.artifacts"], threads, i, devices[i])
                for i in range(count)]
    last_lines: dict[int, str] = {}

    def forward(index: int, child: subprocess.Popen):
        for line in child.stderr:
            line = line.rstrip()
            if line:
                last_lines[index] = line
                events.notice(f"worker {index}: {line}")

    readers = [threading.Thread(target=forward, args=(i, c), daemon=True) for i, c in enumerate(children)]
    for reader in readers:
        reader.start()
    seen: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while True:
            running = any(c.poll() is None for c in children)
            trials = study.get_trials(deepcopy=False)
            for trial in trials:
                if trial.state.is_finished() and trial.number not in seen:
                    seen.add(trial.number)
                    events.on_trial_end(study, trial)
            done = budget_used([t for t in trials if t.state.is_finished()])
            events.budget_spent(done)
            if not running:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for child in children:  # each fails its running trial cleanly, then exits
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    for reader in readers:
        reader.join(timeout=5)
    failed = [(i, c.returncode) for i, c in enumerate(children) if c.returncode != 0]
    if failed:
        index, code = failed[0]
        raise WorkerFailed(f"worker {index} exited with code {code}: {last_lines.get(index, 'no message')}")
