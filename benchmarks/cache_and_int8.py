"""Two figures for the precision and cache work, each a ratio measured in one run:

1. Cold against warm cache: the quickstart config run twice, with an empty model directory and an
   empty artifact cache the first time. The figure is the time from the start of the sweep to the
   first timed iteration (the first cell's `time` phase), cold / warm. Target: >= 5.
2. ONNX Runtime int8 (static QDQ, per-channel, calibrated) against fp32 on ResNet-50 at 224x224,
   batch 1, on this CPU: median latency fp32 / int8, with the accuracy figures of the int8 cell.

Usage: python -m benchmarks.cache_and_int8 [--skip-int8]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict, load_config
from bench.runner import Reporter, execute, plan

ROOT = Path(__file__).resolve().parent.parent


class FirstTimed(Reporter):
    def __init__(self) -> None:
        self.start_ns = time.perf_counter_ns()
        self.first_timed_s: float | None = None

    def phase(self, cell, phase):
        if phase == "time" and self.first_timed_s is None:
            self.first_timed_s = (time.perf_counter_ns() - self.start_ns) / 1e9


def cache_ratio() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-cache-bench-"))
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    figures = {}
    for label in ("cold", "warm"):
        rep = FirstTimed()
        t0 = time.perf_counter()
        run_dir = execute(plan(cfg, work / "models"), work / "results", reporter=rep, run_id=label, cache_dir=work / "cache")
        total = time.perf_counter() - t0
        cells = pd.read_csv(run_dir / "cells.csv")
        figures[label] = (rep.first_timed_s, total, cells)
        print(f"{label}: first timed cell after {rep.first_timed_s:.2f} s; whole sweep {total:.1f} s; "
              f"cache hits {int(cells['cache_hit'].fillna(False).astype(bool).sum())}/{len(cells)}; "
              f"compile_s total {cells['compile_s'].sum():.2f}")
    ratio = figures["cold"][0] / figures["warm"][0]
    print(f"time to first timed cell, cold / warm: {ratio:.1f}x (target >= 5x): {'PASS' if ratio >= 5 else 'FAIL'}")
    print(f"whole sweep, cold / warm: {figures['cold'][1] / figures['warm'][1]:.2f}x")


def int8_ratio() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-int8-bench-"))
    cfg = config_from_dict({
        "name": "int8", "models": [{"name": "resnet50", "source": "zoo:resnet50", "input_shapes": {"input": ["batch", 3, 224, 224]}}],
        "backends": ["onnxruntime"], "precisions": ["fp32", "int8"], "batch_sizes": [1],
        "timing": {"warmup": 5, "min_iterations": 30, "min_time_s": 3.0}, "calibration": {"samples": 32},
    })
    cells = pd.read_csv(execute(plan(cfg, work / "models"), work / "results", cache_dir=work / "cache") / "cells.csv").set_index("precision")
    fp32, int8 = cells.loc["fp32"], cells.loc["int8"]
    print(f"ResNet-50 224x224 b1 ONNX Runtime CPU: fp32 p50 {fp32.p50_ms:.1f} ms, int8 p50 {int8.p50_ms:.1f} ms "
          f"(executes as {int8.executes_as}): fp32 / int8 = {fp32.p50_ms / int8.p50_ms:.2f}x")
    print(f"int8 drift: max abs {int8.max_abs_err:.3g}, cosine {int8.cosine:.5f}, top-1 agreement {int8.top1_agreement:.2f}, "
          f"accuracy_ok={int8.accuracy_ok}")


if __name__ == "__main__":
    cache_ratio()
    if "--skip-int8" not in sys.argv:
        int8_ratio()
