"""The latency protocol shared by every device adapter.

Warm up (at least ``warmup_runs`` and ``warmup_seconds``), then time single inferences until
the 95% confidence interval of the median is within ``target_ci_rel`` of it, or until
``max_seconds`` have passed. The interval of the median is distribution-free: the order
statistics at ranks n/2 ± 1.96·sqrt(n)/2 (binomial approximation), so a long tail from
another process does not distort it the way a mean ± std would.
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


def measure(run_once: Callable[[], None], protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1) -> LatencyStats:
    """Time ``run_once`` (one synchronous inference) by ``protocol``."""
    clock = time.perf_counter
    warm_start = clock()
    runs = 0
    while runs < protocol.warmup_runs or clock() - warm_start < protocol.warmup_seconds:
        run_once()
        runs += 1

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
    data = np.asarray(samples)
    med, low, high = median_ci95(data)
    return LatencyStats(
        median_ms=med,
        p90_ms=float(np.percentile(data, 90)),
        mean_ms=float(data.mean()),
        ci95_low_ms=low,
        ci95_high_ms=high,
        runs=len(data),
        seconds=clock() - start,
        converged=converged,
        batch=batch,
    )
