"""Harness overhead, as ratios measured in one process: bench's timed loop vs a bare loop of the same call.

Rounds alternate between the two loops so that machine noise hits both alike. Both loops call the
same prepared forward call (`Compiled.prepare`: inputs bound once), so the difference is the
harness's own per-call cost: two clock readings and an append. Printed per model:
- per-call overhead: bench's loop (bench.timing's loop, wall clock per call) minus the bare loop's;
  target the larger of 2% and 20 us per call;
- honesty: the median of the samples bench records against the bare loop's wall time per call
  (a ratio near 1: the samples neither hide nor add time);
- the one-off setup of each `measure` call (a garbage collection and a heap freeze before the loop),
  reported apart: it happens once per process, before the first timed call, and is no per-call cost.
  (This benchmark once timed `measure` whole, setup included, and reported that setup as +80% to
  +437% per-call overhead.)
Exit status 1 when the per-call target is missed.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from bench.config import TimingConfig
from bench.timing import _loop, host_interval, measure
from benchmarks.common import CALLS, tiny_ort

ROUNDS = 40


def bare(fn, n: int = CALLS) -> None:
    for _ in range(n):
        fn()


def one_model(arch: str) -> bool:
    compiled, feeds = tiny_ort(arch)
    fn = compiled.prepare(feeds)
    timing = TimingConfig(warmup=0, min_iterations=CALLS, min_time_s=0.0, max_iterations=CALLS)
    interval = host_interval(compiled.clock)
    bare_per_call, loop_per_call, sample_medians, setups = [], [], [], []
    for _ in range(3):
        bare(fn)
        measure(fn, compiled.clock, timing)
    gc.disable()  # as measure does for its loop; the setup is timed apart below
    try:
        for _ in range(ROUNDS):
            t0 = time.perf_counter_ns()
            bare(fn)
            t1 = time.perf_counter_ns()
            samples = _loop(fn, interval, timing)
            t2 = time.perf_counter_ns()
            bare_per_call.append((t1 - t0) / CALLS)
            loop_per_call.append((t2 - t1) / CALLS)
            sample_medians.append(statistics.median(samples))
    finally:
        gc.enable()
    for _ in range(5):
        t0 = time.perf_counter_ns()
        gc.collect()
        gc.freeze()
        setups.append(time.perf_counter_ns() - t0)
        gc.unfreeze()
    b, h, s = (statistics.median(v) / 1e3 for v in (bare_per_call, loop_per_call, sample_medians))
    over_us, over_pct = h - b, 100 * (h - b) / b
    target_us = max(0.02 * b, 20.0)
    ok = over_us <= target_us
    print(f"{arch}: bare loop {b:.1f} us/call, bench loop {h:.1f} us/call, per-call overhead {over_us:+.2f} us "
          f"({over_pct:+.2f}%), target <= {target_us:.1f} us: {'PASS' if ok else 'FAIL'}; "
          f"recorded sample median / bare per call = {s / b:.3f}; one-off setup per measure() "
          f"{statistics.median(setups) / 1e6:.1f} ms (not per call)")
    compiled.release()
    return ok


def main() -> int:
    results = [one_model(arch) for arch in ("resnet18-tiny", "mobilenet_v2-tiny")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
