"""Harness overhead, as a ratio measured in one process: bench's timed loop vs a bare session.run loop.

Rounds alternate between the two loops so that machine noise hits both alike. Prints the median
per-call time of each, the overhead in microseconds and percent, and the target (the larger of 2%
and 20 us per call). Exit status 1 when the target is missed.
"""

from __future__ import annotations

import statistics
import sys
import time

from bench.config import TimingConfig
from bench.timing import measure
from benchmarks.common import CALLS, bare_loop, tiny_ort

ROUNDS = 40


def main() -> int:
    results = {}
    for arch in ("resnet18-tiny", "mobilenet_v2-tiny"):
        compiled, feeds = tiny_ort(arch)
        fn = compiled.prepare(feeds)
        timing = TimingConfig(warmup=0, min_iterations=CALLS, min_time_s=0.0, max_iterations=CALLS)
        bare, harness = [], []
        for _ in range(3):
            bare_loop(compiled.session, feeds)
            measure(fn, compiled.clock, timing)
        for _ in range(ROUNDS):
            t0 = time.perf_counter_ns()
            bare_loop(compiled.session, feeds)
            t1 = time.perf_counter_ns()
            measure(fn, compiled.clock, timing)
            t2 = time.perf_counter_ns()
            bare.append((t1 - t0) / CALLS)
            harness.append((t2 - t1) / CALLS)
        b, h = statistics.median(bare) / 1e3, statistics.median(harness) / 1e3
        over_us, over_pct = h - b, 100 * (h - b) / b
        target_us = max(0.02 * b, 20.0)
        ok = over_us <= target_us
        results[arch] = ok
        print(f"{arch}: bare session.run {b:.1f} us/call, bench loop {h:.1f} us/call, "
              f"overhead {over_us:+.2f} us ({over_pct:+.2f}%), target <= {target_us:.1f} us: {'PASS' if ok else 'FAIL'}")
        compiled.release()
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
