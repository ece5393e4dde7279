"""The latency protocol shared by every device adapter.

Warm up (at least ``warmup_runs`` and ``warmup_seconds``), then time single inferences until
the 95% confidence interval of the median is within ``target_ci_rel`` of it, or until
``max_seconds`` have passed. The interval of the median is distribution-free: the order
statistics at ranks n/2 ± 1.96·sqrt(n)/2 (binomial approximation), so a long tail from
another process does not distort it the way a mean ± std would.

``measure_paired`` times a candidate against a reference model on the same device, alternating
single runs. On shared or virtual machines the speed of the host drifts by 10-20% over tens of
seconds (measured here: the same compiled model at 1.31 ms and 1.72 ms a minute apart), far more
than one measurement's interval; the ratio of adjacent runs cancels that drift, so trials
measured minutes apart stay comparable.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .base import LatencyStats


@dataclass(frozen=True)
class LatencyProtocol:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 30
    target_ci_rel: float = 0.02
    max_seconds: float = 10.0
    check_every: int = 20

    def __post_init__(self):
        if self.min_runs < 5:
            raise ValueError("min_runs must be at least 5")


def median_ci95(samples: np.ndarray) -> tuple[float, float, float]:
    """Median and the distribution-free 95% interval of the median."""
    ordered = np.sort(samples)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2.0
    low = max(0, int(math.floor(n / 2.0 - half)))
    high = min(n - 1, int(math.ceil(n / 2.0 + half)))
    return float(np.median(ordered)), float(ordered[low]), float(ordered[high])


def _warm_up(run_once: Callable[[], None], protocol: LatencyProtocol) -> None:
    clock = time.perf_counter
    start, runs = clock(), 0
    while runs < protocol.warmup_runs or clock() - start < protocol.warmup_seconds:
        run_once()
        runs += 1


def _stats(samples: list[float], seconds: float, converged: bool, batch: int) -> LatencyStats:
    data = np.asarray(samples)
    med, low, high = median_ci95(data)
    return LatencyStats(median_ms=med, p90_ms=float(np.percentile(data, 90)), mean_ms=float(data.mean()),
                        ci95_low_ms=low, ci95_high_ms=high, runs=len(data), seconds=seconds, converged=converged,
                        batch=batch)


def measure_paired(run_reference: Callable[[], None], run_candidate: Callable[[], None],
                   protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1) -> tuple[LatencyStats, LatencyStats, float, float]:
    """Alternate reference and candidate runs until the ratio's interval is tight.

    Returns the candidate's stats, the reference's stats, the median of the per-pair ratios
    candidate/reference, and the relative half-width of its 95% interval.
    """
    clock = time.perf_counter
    _warm_up(run_reference, protocol)
    _warm_up(run_candidate, protocol)
    reference, candidate, ratios = [], [], []
    start = clock()
    converged = False
    while True:
        order = (run_reference, run_candidate) if len(ratios) % 2 == 0 else (run_candidate, run_reference)
        times = {}
        for run in order:
            t0 = clock()
            run()
            times[run] = (clock() - t0) * 1000.0
        reference.append(times[run_reference])
        candidate.append(times[run_candidate])
        ratios.append(times[run_candidate] / times[run_reference])
        n = len(ratios)
        if n >= protocol.min_runs and n % protocol.check_every == 0:
            med, low, high = median_ci95(np.asarray(ratios))
            if (high - low) / 2.0 <= protocol.target_ci_rel * med:
                converged = True
                break
        if clock() - start >= 2 * protocol.max_seconds and n >= protocol.min_runs:
            break
    seconds = clock() - start
    med, low, high = median_ci95(np.asarray(ratios))
    return (_stats(candidate, seconds, converged, batch), _stats(reference, seconds, converged, batch),
            med, (high - low) / 2.0 / med)


def measure(run_once: Callable[[], None], protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1) -> LatencyStats:
    """Time ``run_once`` (one synchronous inference) by ``protocol``."""
    clock = time.perf_counter
    _warm_up(run_once, protocol)
    samples: list[float] = []
    start = clock()
    converged = False
    while True:
        t0 = clock()
        run_once()
        samples.append((clock() - t0) * 1000.0)
        n = len(samples)
        if n >= protocol.min_runs and n % protocol.check_every == 0:
            med, low, high = median_ci95(np.asarray(samples))
            if (high - low) / 2.0 <= protocol.target_ci_rel * med:
                converged = True
                break
        if clock() - start >= protocol.max_seconds and n >= protocol.min_runs:
            break
    return _stats(samples, clock() - start, converged, batch)
