"""How far bench's figures can be trusted: agreement with a bare loop, and how often rows are flagged.

1. Agreement: five separate runs (each cell in fresh worker processes, as `bench run` does) of the
   same tiny-model ONNX Runtime cell, interleaved with five bare loops, each in a fresh process of
   its own, calling `session.run_with_iobinding` on pre-bound inputs and outputs (same model,
   inputs, threads, iteration count). The suite's median of medians against theirs: target a
   ratio within 0.98-1.02.
2. Stability flag: the share of a config's rows (default the quickstart) flagged `unstable` on an
   idle machine, and with a CPU hog (one busy process per core) running beside it. Target on an
   idle machine: at most 10%.

Usage: python -m benchmarks.stability [agreement|flag] [CONFIG]
"""

from __future__ import annotations

import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict, load_config
from bench.runner import execute, plan
from benchmarks.common import tiny_ort

RUNS = 5
TIMING = {"warmup": 50, "min_iterations": 500, "min_time_s": 1.0}
THREADS = 2
ARCH = "resnet18-tiny"


def bare_median_ms() -> float:
    """In this process: pre-bind, warm up, then time run_with_iobinding calls one by one; median in ms."""
    from bench.backends.ort import bind

    compiled, feeds = tiny_ort(ARCH, threads=THREADS)
    session = compiled.session
    binding = bind(session, feeds, "cpu")
    for _ in range(TIMING["warmup"]):
        session.run_with_iobinding(binding)
    samples = []
    start = time.perf_counter_ns()
    while len(samples) < TIMING["min_iterations"] or time.perf_counter_ns() - start < TIMING["min_time_s"] * 1e9:
        t0 = time.perf_counter_ns()
        session.run_with_iobinding(binding)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def agreement() -> bool:
    work = Path(tempfile.mkdtemp(prefix="bench-stability-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    cfg = config_from_dict({"name": "agreement", "models": [{"name": "m", "source": f"zoo:{ARCH}"}], "backends": ["onnxruntime"],
                            "batch_sizes": [1], "timing": TIMING, "threads": THREADS, "repeats": 1})
    suite, bare = [], []
    for i in range(RUNS):
        row = pd.read_csv(execute(plan(cfg, models), work / "results", run_id=f"run{i}") / "cells.csv").iloc[0]
        suite.append(row["p50_ms"])
        out = subprocess.run([sys.executable, "-m", "benchmarks.stability", "--bare"], capture_output=True, text=True, check=True)
        bare.append(float(out.stdout.strip()))
        print(f"run {i + 1}: suite p50 {row['p50_ms'] * 1e3:.1f} us; bare IOBinding loop p50 {bare[-1] * 1e3:.1f} us")
    ratio = statistics.median(suite) / statistics.median(bare)
    ok = 0.98 <= ratio <= 1.02
    print(f"AGREEMENT: suite median of medians / bare loop's = {ratio:.3f} ({ARCH}, {THREADS} threads; target 0.98-1.02): "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def _hog() -> None:
    while True:
        pass


def flagged_share(config: str, hog: bool) -> tuple[float, int, list[str]]:
    cfg = load_config(config)
    work = Path(tempfile.mkdtemp(prefix="bench-flag-"))
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(multiprocessing.cpu_count() if hog else 0)]
    for h in hogs:
        h.start()
    try:
        cells = pd.read_csv(execute(plan(cfg, "models", config), work) / "cells.csv")
    finally:
        for h in hogs:
            h.kill()
            h.join()
    timed = cells[cells["status"] == "ok"]
    reasons = [f"{r.model} {r.backend} b{r.batch_size}: {r.unstable_reason}" for r in timed.itertuples() if r.unstable]
    return float(timed["unstable"].mean()), len(timed), reasons


def flag(config: str) -> bool:
    ok = True
    for hog in (False, True):
        share, n, reasons = flagged_share(config, hog)
        label = "with a CPU hog on every core" if hog else "idle machine"
        print(f"STABILITY FLAG ({label}): {share:.0%} of {n} rows of {config} flagged unstable"
              + ("" if hog else f" (target at most 10%): {'PASS' if share <= 0.10 else 'FAIL'}"))
        for r in reasons:
            print(f"    {r}")
        ok = ok and (hog or share <= 0.10)
    return ok


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        print(bare_median_ms())
        sys.exit(0)
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    config = sys.argv[2] if len(sys.argv) > 2 else "configs/quickstart.yaml"
    results = []
    if what in ("agreement", "all"):
        results.append(agreement())
    if what in ("flag", "all"):
        results.append(flag(config))
    sys.exit(0 if all(results) else 1)
