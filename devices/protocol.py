"""The latency protocol shared by every device adapter.

Warm up (at least ``warmup_runs`` and ``warmup_seconds``), then time single inferences until
the 95% confidence interval of the median is within ``target_ci_rel`` of it, or until
``max_seconds`` have passed. The interval of the median is distribution-free: the order
statistics at ranks n/2 ± 1.96·sqrt(n)/2 (binomial approximation), so a long tail from
another process does not distort it the way a mean ± std would.

``measure_paired`` times a candidate against a reference model on the same device, alternating
short segments of each. On shared or virtual machines the speed of the host drifts by 10-20% over
tens of seconds (measured here: the same compiled model at 1.31 ms and 1.72 ms a minute apart), far
more than one measurement's interval; the ratio of adjacent segments cancels that drift, so trials
measured minutes apart stay comparable. Segments, not single runs: a run right after the other
model finds the caches full of that model's weights: small int8 candidates timed that way ran
1.6-2.2x as long as on their own (bench/paired_protocol.py). A segment lets the caches settle first.
The ratio's interval also counts how far the medians of consecutive blocks of pairs disagree
(:func:`ratio_half_width`): the host's state changes over seconds, so adjacent pairs are not
independent draws.

``measure_fastest`` and ``measure_paired_fastest`` do the same for a model that can run several ways
(thread counts) and keep the fastest. On a 2-vCPU VM a second thread made the baseline 1.4x faster
but sub-millisecond models slower, and their ratios at two threads wandered by 11-23% between
measurements against 3-12% at one (BENCHMARKS.md, "Why: two threads on two vCPUs"): which count is
fastest depends on the model, so each is measured, paired with the reference at the same count.
"""
from __future__ import annotations

import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from filelock import FileLock


@dataclass(frozen=True)
class LatencyStats:
    """One latency measurement by this protocol (milliseconds)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    ci95_low_ms: float
    ci95_high_ms: float
    runs: int
    seconds: float  # wall time spent timing, warm-up excluded
    converged: bool  # the interval reached the target before the time limit
    batch: int = 1
    device_median_ms: float | None = None  # device time from the runtime's counters, if any
    # Paired with a reference model (runs alternated): the median of the candidate/reference
    # ratios and its interval. Drift of the host cancels out of the ratio.
    reference_median_ms: float | None = None
    ratio: float | None = None
    ratio_ci95_rel: float | None = None
    # Where the model could run several ways: the thread count kept (the fastest), and the median at
    # each count with the relative 95% half-width of its ratio to the first count's (measure_fastest).
    threads: int | None = None
    by_threads: dict[int, tuple[float, float]] | None = None

    @property
    def ci95_rel(self) -> float:
        """Half-width of the 95% interval, relative: of the ratio when paired, else of the median."""
        if self.ratio_ci95_rel is not None:
            return self.ratio_ci95_rel
        return (self.ci95_high_ms - self.ci95_low_ms) / 2.0 / self.median_ms

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95_rel"] = self.ci95_rel
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyStats":
        """Back from :meth:`to_dict` after a trip through JSON (whose keys are strings)."""
        data = {k: v for k, v in data.items() if k != "ci95_rel"}
        if data.get("by_threads"):
            data["by_threads"] = thread_table(data["by_threads"])
        return cls(**data)


def thread_table(by_threads: Mapping) -> dict[int, tuple[float, float]]:
    """``LatencyStats.by_threads`` from its JSON form (a record's or an agent's)."""
    return {int(k): (float(v[0]), float(v[1])) for k, v in by_threads.items()}


@dataclass(frozen=True)
class LatencyProtocol:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 30
    target_ci_rel: float = 0.02
    max_seconds: float = 10.0
    check_every: int = 20
    # Paired measurement: each segment runs one model untimed for settle_seconds (caches, clocks), then
    # timed for segment_seconds (at least 3 runs); at least min_segments pairs of segments.
    segment_seconds: float = 0.01
    settle_seconds: float = 0.008
    min_segments: int = 10

    def __post_init__(self):
        if self.min_runs < 5 or self.min_segments < 5:
            raise ValueError("min_runs and min_segments must be at least 5")


def median_ci95(samples: np.ndarray) -> tuple[float, float, float]:
    """Median and the distribution-free 95% interval of the median."""
    ordered = np.sort(samples)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2.0
    low = max(0, int(math.floor(n / 2.0 - half)))
    high = min(n - 1, int(math.ceil(n / 2.0 + half)))
    return float(np.median(ordered)), float(ordered[low]), float(ordered[high])


def warm_up(run_once: Callable[[], None], protocol: LatencyProtocol) -> None:
    """Run until warm: at least ``protocol.warmup_runs`` runs and ``protocol.warmup_seconds``."""
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


def _median_half_width(samples: np.ndarray) -> float:
    med, low, high = median_ci95(samples)
    return (high - low) / 2.0 / med


#: Consecutive blocks the paired ratios are split into for their between-block interval.
RATIO_BLOCKS = 5
#: Student's t 97.5% quantile at RATIO_BLOCKS - 1 degrees of freedom, scipy.stats.t.ppf(0.975, 4) (a test
#: checks it): a constant, so the device agent's slim install needs no SciPy.
T975_BLOCKS = 2.7764451051977987


def ratio_half_width(ratios: np.ndarray) -> float:
    """Relative half-width of the 95% interval of the median pair ratio: the wider of the order-statistic
    interval and a batch-means one, Student's t over the medians of ``RATIO_BLOCKS`` consecutive
    blocks (in log space). Adjacent pairs share the host's state of the moment, so they are not
    independent; the order statistics alone claimed +-2% where back-to-back repeats of the same
    measurement moved by 9-17% (BENCHMARKS.md, "Why: two threads on two vCPUs")."""
    order_statistics = _median_half_width(ratios)
    if len(ratios) < 2 * RATIO_BLOCKS:
        return order_statistics
    logs = np.log([np.median(block) for block in np.array_split(ratios, RATIO_BLOCKS)])
    return max(order_statistics, math.expm1(T975_BLOCKS * logs.std(ddof=1) / math.sqrt(RATIO_BLOCKS)))


def _sample_until_tight(step: Callable[[], float], protocol: LatencyProtocol,
                        half_width: Callable[[np.ndarray], float] = _median_half_width) -> tuple[list[float], float, bool]:
    """Call ``step`` (which returns one sample) until the relative ``half_width`` of the median's
    interval is within the target, or time is up."""
    clock = time.perf_counter
    samples: list[float] = []
    start = clock()
    while True:
        samples.append(step())
        n = len(samples)
        if n >= protocol.min_runs and n % protocol.check_every == 0:
            if half_width(np.asarray(samples)) <= protocol.target_ci_rel:
                return samples, clock() - start, True
        if clock() - start >= protocol.max_seconds and n >= protocol.min_runs:
            return samples, clock() - start, False


def _timed(run: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1000.0


def _segment(run: Callable[[], None], protocol: LatencyProtocol) -> list[float]:
    """Run one model for a segment: untimed until it has settled after the other model, then timed."""
    clock = time.perf_counter
    start = clock()
    run()
    while clock() - start < protocol.settle_seconds:
        run()
    samples: list[float] = []
    start = clock()
    while len(samples) < 3 or clock() - start < protocol.segment_seconds:
        samples.append(_timed(run))
    return samples


def measure_paired(run_reference: Callable[[], None], run_candidate: Callable[[], None],
                   protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1) -> tuple[LatencyStats, LatencyStats, float, float]:
    """Alternate segments of reference and candidate runs until the ratio's interval is tight.

    Returns the candidate's stats, the reference's stats (over their timed runs), the median of the
    per-pair ratios of segment medians candidate/reference, and the relative half-width of its 95%
    interval.
    """
    # The reference runs in every trial and is warm already: a few runs refill its caches; only the
    # new candidate needs the full warm-up.
    warm_up(run_reference, replace(protocol, warmup_seconds=0.0))
    warm_up(run_candidate, protocol)
    reference: list[float] = []
    candidate: list[float] = []
    pairs = 0

    def pair() -> float:
        nonlocal pairs
        if pairs % 2 == 0:  # alternate which goes first, so neither always follows the other
            ref, cand = _segment(run_reference, protocol), _segment(run_candidate, protocol)
        else:
            cand, ref = _segment(run_candidate, protocol), _segment(run_reference, protocol)
        pairs += 1
        reference.extend(ref)
        candidate.extend(cand)
        return float(np.median(cand) / np.median(ref))

    ratios, seconds, converged = _sample_until_tight(pair, replace(protocol, min_runs=protocol.min_segments, check_every=1),
                                                     ratio_half_width)
    return (_stats(candidate, seconds, converged, batch), _stats(reference, seconds, converged, batch),
            float(np.median(ratios)), ratio_half_width(np.asarray(ratios)))


def measure(run_once: Callable[[], None], protocol: LatencyProtocol = LatencyProtocol(), batch: int = 1) -> LatencyStats:
    """Time ``run_once`` (one synchronous inference) by ``protocol``."""
    warm_up(run_once, protocol)
    samples, seconds, converged = _sample_until_tight(lambda: _timed(run_once), protocol)
    return _stats(samples, seconds, converged, batch)


def _rescaled(stats: LatencyStats, median_ms: float, ci95_rel: float) -> LatencyStats:
    """``stats`` moved onto another scale: its median becomes ``median_ms`` (the other times follow)."""
    factor = median_ms / stats.median_ms
    return replace(stats, median_ms=median_ms, p90_ms=stats.p90_ms * factor, mean_ms=stats.mean_ms * factor,
                   ci95_low_ms=median_ms * (1 - ci95_rel), ci95_high_ms=median_ms * (1 + ci95_rel))


def measure_fastest(runs: Mapping[int, Callable[[], None]], protocol: LatencyProtocol = LatencyProtocol(),
                    batch: int = 1) -> LatencyStats:
    """Time one model that can run several ways (``runs`` by thread count, the default first) and keep
    the fastest. The first is timed by the protocol; each other is paired with it, so the host's drift
    between them does not decide (module docstring). Every median is on the first one's scale;
    ``threads`` is the fastest count, ``by_threads`` holds them all."""
    (first, run_first), *others = runs.items()
    stats = measure(run_first, protocol, batch)
    if not others:
        return replace(stats, threads=first)
    by_threads = {first: (stats.median_ms, 0.0)}
    fastest = stats
    for threads, run in others:
        candidate, _, ratio, ratio_ci = measure_paired(run_first, run, protocol, batch)
        by_threads[threads] = (stats.median_ms * ratio, ratio_ci)
        if stats.median_ms * ratio < fastest.median_ms:
            fastest = replace(_rescaled(candidate, stats.median_ms * ratio, math.hypot(stats.ci95_rel, ratio_ci)),
                              converged=candidate.converged and stats.converged, threads=threads)
    return replace(fastest, threads=fastest.threads or first, by_threads=by_threads)


def measure_paired_fastest(reference: Mapping[int, Callable[[], None]], candidate: Mapping[int, Callable[[], None]],
                           reference_ms: Mapping[int, tuple[float, float]], protocol: LatencyProtocol = LatencyProtocol(),
                           batch: int = 1) -> tuple[int, LatencyStats, LatencyStats, float, float]:
    """:func:`measure_paired` for a candidate that can run several ways (by thread count), each paired
    with the reference at the same count. ``reference_ms``: the reference's latency at each count and
    the half-width of its ratio to the others (its :func:`measure_fastest`). A short screen of each
    count (``min_segments`` pairs) picks the one where the candidate is fastest; that one alone is then
    measured by the protocol. Returns that count, the candidate's and the reference's stats there, and
    the candidate's ratio to the reference *at the reference's fastest count*, with its half-width."""
    options = [threads for threads in candidate if threads in reference_ms]
    if not options:
        raise ValueError(f"the reference was measured at {sorted(reference_ms)} threads, the candidate runs at {sorted(candidate)}")
    chosen = options[0]
    if len(options) > 1:
        # stops at min_segments pairs; the warm-up time is shared, so that it stays what one count had
        screen = replace(protocol, max_seconds=0.0, warmup_seconds=protocol.warmup_seconds / len(options))
        estimate = {t: reference_ms[t][0] * measure_paired(reference[t], candidate[t], screen, batch)[2] for t in options}
        chosen = min(estimate, key=estimate.get)
        protocol = replace(protocol, warmup_seconds=0.0)  # its screen warmed it up
    fastest = min(reference_ms, key=lambda t: reference_ms[t][0])
    # Off the reference's fastest count, the reference's own ratio between the two counts adds its
    # uncertainty, which no time spent on this pair reduces: the pair stops once its part is under
    # half of that one (it then widens the whole by 12% at most).
    scale_ci = math.hypot(reference_ms[chosen][1], reference_ms[fastest][1]) if chosen != fastest else 0.0
    protocol = replace(protocol, target_ci_rel=max(protocol.target_ci_rel, scale_ci / 2))
    cand, ref, ratio, ratio_ci = measure_paired(reference[chosen], candidate[chosen], protocol, batch)
    if chosen != fastest:
        ratio *= reference_ms[chosen][0] / reference_ms[fastest][0]
        ratio_ci = math.hypot(ratio_ci, scale_ci)
    return chosen, cand, ref, ratio, ratio_ci


def exclusive(device_name: str) -> FileLock:
    """Hold the device for one measurement, host-wide (``with exclusive(name):``): workers of a study
    (or several studies) on this host sharing a device would otherwise time each other's load."""
    folder = Path(tempfile.gettempdir()) / "edgetune-locks"
    folder.mkdir(exist_ok=True)
    return FileLock(folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", device_name) + ".lock"))
