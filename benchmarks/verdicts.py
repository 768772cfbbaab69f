"""False alarms and power of `bench compare`, on real runs (tiny models, ONNX Runtime).

1. False alarms: the same config run K times as separate runs (each cell in fresh worker processes,
   `repeats` of them, as `bench run` does); every consecutive pair compared. Any `faster` or
   `slower` verdict between identical code is a false alarm. Target: 0.
2. Power: a deliberate slowdown (ONNX Runtime with graph optimizations disabled, measured first to
   be 20% slower or more) run as separate runs too; each compared with a baseline run. Every pair
   must say `slower`.

Usage: python -m benchmarks.verdicts [K] [REPEATS]   (default 6 runs of 3 processes per cell)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict
from bench.results import load_run
from bench.runner import execute, plan
from bench.verdicts import compare_runs

MODELS = [{"name": "r18", "source": "zoo:resnet18-tiny"}, {"name": "mnv2", "source": "zoo:mobilenet_v2-tiny"}]
TIMING = {"warmup": 20, "min_iterations": 200, "min_time_s": 0.3}
THRESHOLD = 0.05


def _runs(name: str, k: int, options: dict, work: Path, models: Path, repeats: int) -> list[Path]:
    # the same timed seconds per cell whatever the number of processes
    timing = {**TIMING, "min_time_s": TIMING["min_time_s"] * 3 / repeats, "min_iterations": TIMING["min_iterations"] * 3 // repeats}
    cfg = config_from_dict({"name": name, "models": MODELS, "backends": ["onnxruntime"], "batch_sizes": [1, 4], "repeats": repeats,
                            "timing": timing, "threads": 1, "backend_options": {"onnxruntime": options}})
    return [execute(plan(cfg, models), work, run_id=f"{name}{i}") for i in range(k)]


def main(k: int, repeats: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-verdicts-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    base = _runs("base", k, {}, work, models, repeats)
    slow = _runs("slow", 3, {"graph_optimization_level": "basic"}, work, models, repeats)
    for r in base:
        print(f"{r.name} per-process medians (ms): " + "; ".join(f"{c.model} b{c.batch_size} {c.process_p50_ms}"
                                                               for c in load_run(r).cells.itertuples()))

    alarms, pairs = 0, 0
    for a, b in zip(base, base[1:]):
        t = compare_runs(load_run(a), load_run(b), THRESHOLD)
        n = int(t["verdict"].isin(["faster", "slower"]).sum())
        alarms += n
        pairs += len(t)
        print(f"{a.name} vs {b.name}: " + ", ".join(f"{r.model} b{r.batch_size} {r.change:+.1%} [{r.ci_low:+.1%}, {r.ci_high:+.1%}] {r.verdict}"
                                                      for r in t.itertuples()))
    slowdown = pd.concat([load_run(r).cells for r in slow]).groupby(["model", "batch_size"])["p50_ms"].median() / \
        pd.concat([load_run(r).cells for r in base]).groupby(["model", "batch_size"])["p50_ms"].median() - 1
    print("deliberate slowdown (graph optimizations basic instead of all), median over runs: "
          + ", ".join(f"{m} b{b} {v:+.0%}" for (m, b), v in slowdown.items()))
    called, compared = 0, 0
    for a, b in zip(base, slow):
        t = compare_runs(load_run(a), load_run(b), THRESHOLD).set_index(["model", "batch_size"])
        for key, r in t.iterrows():
            if slowdown[key] >= 0.20:
                compared += 1
                called += r["verdict"] == "slower"
        print(f"{a.name} vs {b.name}: " + ", ".join(f"{m} b{bs} {r.change:+.1%} {r.verdict}" for (m, bs), r in t.iterrows()))
    print(f"FALSE ALARMS: {alarms} faster/slower verdicts in {pairs} comparisons of identical runs ({k} runs of {repeats} processes, "
          f"consecutive pairs; target 0): {'PASS' if alarms == 0 else 'FAIL'}")
    print(f"POWER: {called} of {compared} comparisons with a slowdown of 20% or more called `slower` (target all): "
          f"{'PASS' if compared and called == compared else 'FAIL'}")
    return 0 if alarms == 0 and compared and called == compared else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 6, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
