"""The timed loop and its statistics. The harness owns both; a backend only supplies its clock.

`measure` times the forward call alone (inputs are prepared beforehand) with the backend's
monotonic nanosecond clock, keeps every raw sample, and stops once both the minimum iteration count
and the minimum duration are reached. `summarize` turns samples into the published statistics.
"""

from __future__ import annotations

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

    def as_row(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples_ns: Sequence[int], batch_size: int) -> Stats:
    if not samples_ns:
        raise ValueError("no samples to summarize")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
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
        cv=std / mean if mean > 0 else float("nan"),
        throughput_ips=batch_size / (mean / 1e3) if mean > 0 else float("nan"),
    )
