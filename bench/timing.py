"""The timed loop and its statistics. The harness owns both; a backend only supplies its clock.

`measure` times the forward call alone (inputs are prepared beforehand) with the backend's
monotonic nanosecond clock, keeps every raw sample, and stops once both the minimum iteration count
and the minimum duration are reached. `summarize` turns samples into the published statistics.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bench.config import TimingConfig


def host_interval(clock: Callable[[], int]) -> Callable[[Callable[[], object]], int]:
    """Time one call with a monotonic nanosecond clock: a reading before, a reading after."""
    def interval(fn: Callable[[], object]) -> int:
        t0 = clock()
        fn()
        return clock() - t0

    return interval


def timer_name(clock: Callable[[], int], interval: Callable[[Callable[[], object]], int] | None) -> str:
    """What timed the calls, for the row's `timer`: the backend's interval timer when it has one
    (its `timer` attribute, e.g. a CUDA event pair), else its clock's name (perf_counter_ns)."""
    if interval is not None:
        return str(getattr(interval, "timer", None) or type(interval).__name__)
    return str(getattr(clock, "timer", None) or getattr(clock, "__qualname__", None) or type(clock).__name__)


def measure(fn: Callable[[], object], clock: Callable[[], int], timing: TimingConfig,
            interval: Callable[[Callable[[], object]], int] | None = None) -> list[int]:
    """Raw per-call latencies in nanoseconds (measure_steady's samples, its steady-state note dropped)."""
    return measure_steady(fn, clock, timing, interval)[0]


def measure_steady(fn: Callable[[], object], clock: Callable[[], int], timing: TimingConfig,
                   interval: Callable[[Callable[[], object]], int] | None = None) -> tuple[list[int], str]:
    """Raw per-call latencies in nanoseconds, each from `interval` (a backend's device timer, such as
    a CUDA event pair) or else two readings of `clock`, and the steady-state note (`trend`). The
    loop runs until min_iterations calls and min_time_s of timed calls. When the samples show that
    warm-up was not over, they are discarded as warm-up and the loop runs again, at most
    `max_warmup_extensions` times; the note says so, and says when a trend remains. The garbage
    collector is frozen and disabled meanwhile (a collection inside a sample times Python's heap,
    not the engine)."""
    gc.collect()
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        timed = interval or host_interval(clock)
        for _ in range(timing.warmup):
            fn()
        discarded = 0
        for extension in range(timing.max_warmup_extensions + 1):
            samples = _loop(fn, timed, timing)
            kind, note = trend(samples)
            if kind != "warming" or extension == timing.max_warmup_extensions:
                break
            discarded += len(samples)
        if discarded and kind in ("steady", "unchecked"):
            note = f"steady after warm-up extended by {discarded} calls"
        elif discarded:
            note = f"{note}, {'still ' if kind == 'warming' else ''}after warm-up extended by {discarded} calls"
        return samples, note
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()


def _loop(fn: Callable[[], object], interval: Callable[[Callable[[], object]], int], timing: TimingConfig) -> list[int]:
    samples: list[int] = []
    append = samples.append
    min_iters, max_iters = timing.min_iterations, timing.max_iterations
    min_ns = int(timing.min_time_s * 1e9)
    total = 0
    while True:
        elapsed = interval(fn)
        append(elapsed)
        total += elapsed
        n = len(samples)
        if n >= max_iters or (n >= min_iters and total >= min_ns):
            return samples


# Steady state, judged on the order of one process's samples: the first and the last quarter against
# the middle half. A quarter counts as shifted when its median lies beyond the middle half's
# interquartile range (more than half of its calls slower, or faster, than three quarters of the
# middle's: no single hiccup does that) and TREND_MIN or more away from the middle's median.
TREND_MIN = 0.05
TREND_MIN_SAMPLES = 40


def trend(samples: Sequence[int]) -> tuple[str, str]:
    """(kind, note): kind `warming` (the first quarter slower, or the last faster: warm-up not
    over), `slowing` (the
    last quarter slower: throttling, or load that arrived mid-loop), `steady`, or `unchecked` (fewer
    than TREND_MIN_SAMPLES samples)."""
    n = len(samples)
    if n < TREND_MIN_SAMPLES:
        return "unchecked", f"not checked ({n} samples, fewer than {TREND_MIN_SAMPLES})"
    q = n // 4
    a = np.asarray(samples, dtype=np.float64)
    middle = a[q:n - q]
    lower, med, upper = (float(v) for v in np.percentile(middle, [25, 50, 75]))
    first, last = float(np.median(a[:q])), float(np.median(a[n - q:]))
    if med <= 0:
        return "steady", "steady"
    if first > upper and first / med - 1 >= TREND_MIN and first >= last:
        return "warming", f"warming: first quarter of calls {first / med - 1:+.0%} over the middle half"
    if last < lower and 1 - last / med >= TREND_MIN:
        return "warming", f"warming: last quarter of calls {last / med - 1:+.0%} under the middle half (still getting faster)"
    if last > upper and last / med - 1 >= TREND_MIN:
        return "slowing", f"slowing: last quarter of calls {last / med - 1:+.0%} over the middle half (throttling or new load)"
    return "steady", "steady"


# Stability, judged per process (as pyperf does): the spread of the processes' medians, and each
# process's robust dispersion (IQR / median). Never the raw min/max of pooled samples: one scheduler
# hiccup among thousands of calls says nothing about the figure.
UNSTABLE_SPREAD = 0.10  # (max - min) of per-process medians, as a fraction of their median
UNSTABLE_DISPERSION = 0.10  # IQR / median within a process (the worst process)
CONFIDENCE = 0.95
RESAMPLES = 1000
MAX_PER_PROCESS = 4000  # a bootstrap resamples at most this many samples of one process (seeded subsample)


def tukey_outliers(ms: np.ndarray) -> int:
    q1, q3 = np.percentile(ms, [25, 75])
    iqr = q3 - q1
    return int(np.count_nonzero((ms < q1 - 1.5 * iqr) | (ms > q3 + 1.5 * iqr)))


def robust_dispersion(ms: np.ndarray) -> float:
    """IQR / median of one process's samples."""
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else float("nan")


def stability(process_medians: Sequence[float], dispersions: Sequence[float]) -> str:
    """Why the figures are unstable, or an empty string when they are not."""
    reasons = []
    med = float(np.median(process_medians)) if len(process_medians) else 0.0
    if len(process_medians) > 1 and med > 0:
        spread = (max(process_medians) - min(process_medians)) / med
        if spread >= UNSTABLE_SPREAD:
            reasons.append(f"medians of {len(process_medians)} processes differ by {spread:.0%} (>= {UNSTABLE_SPREAD:.0%})")
    worst = max((d for d in dispersions if d == d), default=0.0)
    if worst >= UNSTABLE_DISPERSION:
        reasons.append(f"IQR is {worst:.0%} of the median within a process (>= {UNSTABLE_DISPERSION:.0%})")
    return "; ".join(reasons)


def _thin(processes: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    return [p if p.size <= MAX_PER_PROCESS else rng.choice(p, MAX_PER_PROCESS, replace=False) for p in processes]


def hierarchical_medians(processes: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the pooled median: each resample draws processes with replacement,
    then samples with replacement within each drawn process. Most of the variance on a shared
    machine lies between processes, which resampling pooled calls would ignore."""
    rng = np.random.default_rng(seed)
    procs = _thin([np.asarray(p, dtype=np.float64) for p in processes if len(p)], rng)
    if not procs:
        raise ValueError("no samples to resample")
    k = len(procs)
    out = np.empty(resamples)
    for b in range(resamples):
        chosen = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=np.int64)
        parts = [procs[c][rng.integers(0, procs[c].size, size=procs[c].size)] for c in chosen]
        out[b] = np.median(np.concatenate(parts))
    return out


# Student's t, 97.5% quantile, by degrees of freedom (1-30); the normal's 1.96 beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    """Student's t, 97.5% quantile."""
    if df < 1:
        return float("inf")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(center: float, boot: np.ndarray, groups: int, df: int) -> tuple[float, float]:
    """center +- t(0.975, df) x the bootstrap's standard error, scaled by sqrt(k/(k-1)) for k groups.

    A bootstrap over few groups (3 processes, say) is too narrow: its resamples never leave the range
    of the groups seen, and its variance is biased by (k-1)/k. Percentile intervals also follow the
    skew of a few extreme resamples. The standard error with Student's t for the groups' degrees of
    freedom is what a t-interval over per-process values would give, on the bootstrap's own
    resampling of processes and samples. With one group (one process) the interval covers
    within-process noise only (`ci_method` says so)."""
    se = float(np.std(boot, ddof=1)) if boot.size > 1 else 0.0
    if groups > 1:
        se *= math.sqrt(groups / (groups - 1))
    half = (t975(df) if groups > 1 else 1.96) * se
    return center - half, center + half


def hierarchical_ci(processes: Sequence[np.ndarray], confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """95% interval of the pooled median, in log space: the hierarchical bootstrap's standard error
    with Student's t for k processes (k-1 degrees of freedom; t_interval)."""
    if confidence != CONFIDENCE:
        raise ValueError("only 95% intervals are implemented")
    k = sum(1 for p in processes if len(p))
    boot = np.log(hierarchical_medians(processes, seed=seed))
    center = math.log(float(np.median(np.concatenate([np.asarray(p, dtype=np.float64) for p in processes]))))
    lo, hi = t_interval(center, boot, k, k - 1)
    return math.exp(lo), math.exp(hi)


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
    ci_method: str
    outliers: int
    repeats: int
    process_p50_ms: str  # JSON list, one median per process
    repeat_p50_spread: float
    dispersion: float  # the worst process's IQR / median
    unstable: bool
    unstable_reason: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ns: Sequence[int] | Sequence[Sequence[int]], batch_size: int) -> Stats:
    """Statistics of one cell. `samples_ns` is one list per process (or one flat list: one process).
    Percentiles are over the pooled samples; stability and the median's interval treat the process
    as the unit (see stability and hierarchical_ci)."""
    if samples_ns and not isinstance(samples_ns[0], (list, tuple, np.ndarray)):
        samples_ns = [samples_ns]  # type: ignore[list-item]
    processes = [np.asarray(p, dtype=np.float64) / 1e6 for p in samples_ns if len(p)]
    if not processes:
        raise ValueError("no samples to summarize")
    ms = np.concatenate(processes)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    cv = std / mean if mean > 0 else float("nan")
    medians = [float(np.median(p)) for p in processes]
    dispersions = [robust_dispersion(p) for p in processes]
    spread = (max(medians) - min(medians)) / float(np.median(medians)) if len(medians) > 1 and np.median(medians) > 0 else 0.0
    if ms.size == 1:
        lo = hi = p50
    else:
        lo, hi = hierarchical_ci(processes)
    reason = stability(medians, dispersions)
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
        p50_ci_low_ms=lo,
        p50_ci_high_ms=hi,
        ci_method=(f"hierarchical bootstrap over {len(processes)} processes, standard error with Student's t ({len(processes) - 1} df)"
                   if len(processes) > 1 else "bootstrap within one process (process-to-process variation not covered)"),
        outliers=tukey_outliers(ms),
        repeats=len(processes),
        process_p50_ms=json.dumps([round(m, 6) for m in medians]),
        repeat_p50_spread=spread,
        dispersion=max(dispersions) if dispersions else float("nan"),
        unstable=bool(reason),
        unstable_reason=reason,
    )
