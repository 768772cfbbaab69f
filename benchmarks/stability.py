"""How repeatable bench's medians are, and how close they sit to a bare session.run loop.

1. Five separate runs (each cell in its own worker process, as `bench run` does) of the same
   tiny-model ONNX Runtime cell: the spread of their medians, (max - min) / median.
2. Interleaved with them, five bare `session.run` loops, each in a fresh process of its own (same
   model, inputs, threads and iteration count): the suite's median of medians against theirs.
   Target: within 3%. Fresh processes on both sides, because on a small VM the process-to-process
   spread is larger than anything the harness adds (benchmarks/overhead.py measures that part).

Usage: python -m benchmarks.stability [THREADS] [ARCH]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict
from bench.runner import execute, plan
from benchmarks.common import bare_loop, tiny_ort

RUNS = 5
TIMING = {"warmup": 50, "min_iterations": 500, "min_time_s": 1.0}


def bare_median_ms(threads: int, arch: str) -> float:
    """In this process: warm up, then time session.run calls one by one; median in ms."""
    compiled, feeds = tiny_ort(arch, threads=threads)
    run, names = compiled.session.run, [o.name for o in compiled.session.get_outputs()]
    bare_loop(compiled.session, feeds, TIMING["warmup"])
    samples = []
    start = time.perf_counter_ns()
    while len(samples) < TIMING["min_iterations"] or time.perf_counter_ns() - start < TIMING["min_time_s"] * 1e9:
        t0 = time.perf_counter_ns()
        run(names, feeds)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def main(threads: int, arch: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-stability-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    cfg = config_from_dict({
        "name": "stability", "models": [{"name": "m", "source": f"zoo:{arch}"}], "backends": ["onnxruntime"],
        "batch_sizes": [1], "timing": TIMING, "threads": threads,
    })
    suite, bare = [], []
    for i in range(RUNS):
        row = pd.read_csv(execute(plan(cfg, models), work / "results", run_id=f"run{i}") / "cells.csv").iloc[0]
        suite.append(row["p50_ms"])
        out = subprocess.run([sys.executable, "-m", "benchmarks.stability", "--bare", str(threads), arch],
                             capture_output=True, text=True, check=True)
        bare.append(float(out.stdout.strip()))
        print(f"run {i + 1}: suite p50 {row['p50_ms'] * 1e3:.1f} us (95% CI {row['p50_ci_low_ms'] * 1e3:.1f}-"
              f"{row['p50_ci_high_ms'] * 1e3:.1f}, cv {row['cv']:.0%}, unstable={row['unstable']}); "
              f"bare loop p50 {bare[-1] * 1e3:.1f} us")
    s_mid, b_mid = statistics.median(suite), statistics.median(bare)
    print(f"{arch}, {threads} thread(s): spread of {RUNS} suite medians {(max(suite) - min(suite)) / s_mid:.1%}, "
          f"of {RUNS} bare-loop medians {(max(bare) - min(bare)) / b_mid:.1%}")
    agreement = s_mid / b_mid - 1
    ok = abs(agreement) <= 0.03
    print(f"suite median of medians {s_mid * 1e3:.1f} us vs bare {b_mid * 1e3:.1f} us: {agreement:+.2%} "
          f"(target within 3%): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        print(bare_median_ms(int(sys.argv[2]), sys.argv[3]))
        sys.exit(0)
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, sys.argv[2] if len(sys.argv) > 2 else "resnet18-tiny"))
