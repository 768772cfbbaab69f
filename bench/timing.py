"""The timed loop and its statistics. The harness owns both; a backend only supplies its clock.

`measure` times the forward call alone (inputs are prepared beforehand) with the backend's
monotonic nanosecond clock, keeps every raw sample, and stops once both the minimum iteration count
and the minimum duration are reached. `summarize` turns samples into the published statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from bench.config import TimingConfig


def measure(fn: Callable[[], object], clock: Callable[[], int], timing: TimingConfig) -> list[int]:
    """Raw per-call latencies in nanoseconds."""
    for _ in range(timing.warmup):
        fn()
    samples: list[int] = []
    append = samples.append
    min_iters, max_iters = timing.min_iterations, timing.max_iterations
    min_ns = int(timing.min_time_s * 1e9)
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        n = len(samples)
        if n >= max_iters or (n >= min_iters and t1 - start >= min_ns):
            return samples


# Stability thresholds, after pyperf (std dev >= 10% of the mean) and hyperfine (outliers, extremes).
UNSTABLE_CV = 0.10
UNSTABLE_EXTREME = 0.50  # min or max this far from the median, as a fraction of it
CONFIDENCE = 0.95


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """0-based order-statistic ranks (lo, hi) bracketing the median with at least `confidence`.

    Distribution-free: the count of samples below the true median is Binomial(n, 1/2), so
    [x_(lo), x_(hi)] covers it with probability sum_{k=lo+1}^{hi} C(n, k) / 2^n. Exact for n <= 1000,
    the normal approximation beyond."""
    if n < 6:  # no pair of ranks reaches 95% below six samples: the whole range is the honest answer
        return 0, n - 1
    if n > 1000:
        half = 1.959963984540054 * math.sqrt(n) / 2
        return max(0, int(math.floor(n / 2 - half)) - 1), min(n - 1, int(math.ceil(n / 2 + half)))
    # cdf[k] = P(X <= k) for X ~ Binomial(n, 1/2); choose the largest lo with P(X <= lo) <= alpha/2.
    alpha = 1 - confidence
    total, cum, lo = 2**n, 0, 0
    for k in range(n + 1):
        cum += math.comb(n, k)
        if cum / total > alpha / 2:
            lo = k  # P(X < k) <= alpha/2: x_(k) (1-based) is the lower bound, rank k-1 0-based
            break
    return max(0, lo - 1), min(n - 1, n - lo)


def tukey_outliers(ms: np.ndarray) -> int:
    q1, q3 = np.percentile(ms, [25, 75])
    iqr = q3 - q1
    return int(np.count_nonzero((ms < q1 - 1.5 * iqr) | (ms > q3 + 1.5 * iqr)))


def stability(mean: float, p50: float, cv: float, lo: float, hi: float) -> str:
    """Why the figures are unstable, or an empty string when they are not."""
    reasons = []
    if cv >= UNSTABLE_CV:
        reasons.append(f"std dev is {cv:.0%} of the mean (>= {UNSTABLE_CV:.0%})")
    if p50 > 0 and (hi - p50) / p50 >= UNSTABLE_EXTREME:
        reasons.append(f"max is {(hi - p50) / p50:.0%} above the median")
    if p50 > 0 and (p50 - lo) / p50 >= UNSTABLE_EXTREME:
        reasons.append(f"min is {(p50 - lo) / p50:.0%} below the median")
    return "; ".join(reasons)


@dataclass(frozen=True)
class Stats:
    iterations: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    cv: float
    throughput_ips: float
    p50_ci_low_ms: float
    p50_ci_high_ms: float
    outliers: int
    unstable: bool
    unstable_reason: str

    def as_row(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples_ns: Sequence[int], batch_size: int) -> Stats:
    if not samples_ns:
        raise ValueError("no samples to summarize")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    cv = std / mean if mean > 0 else float("nan")
    lo_rank, hi_rank = median_ci_ranks(ms.size)
    ordered = np.sort(ms)
    reason = stability(mean, p50, cv, float(ms.min()), float(ms.max()))
    return Stats(
        iterations=int(ms.size),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        cv=cv,
        throughput_ips=batch_size / (mean / 1e3) if mean > 0 else float("nan"),
        p50_ci_low_ms=float(ordered[lo_rank]),
        p50_ci_high_ms=float(ordered[hi_rank]),
        outliers=tukey_outliers(ms),
        unstable=bool(reason),
        unstable_reason=reason,
    )
