"""Fixed cost per cell: the wall time of a grid of tiny cells minus their timed loops, divided by
the cells, with workers forked from the preloaded server (the default) and started as fresh
interpreters (`BENCH_WORKER_START=exec`, how every worker started before). Each cell runs
`repeats` = 3 worker processes plus its validation, as `bench run` does. Target: under 1 s per cell.

Usage: python -m benchmarks.fixed_cost
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict
from bench.runner import execute, plan

CFG = {"name": "fixed", "models": [{"name": "r18", "source": "zoo:resnet18-tiny"}, {"name": "mnv2", "source": "zoo:mobilenet_v2-tiny"}],
       "backends": ["onnxruntime"], "precisions": ["fp32", "fp16"], "batch_sizes": [1, 2, 4], "repeats": 3,
       "timing": {"warmup": 1, "min_iterations": 5, "min_time_s": 0.0}}


def per_cell(mode: str, work: Path, models: Path) -> tuple[float, float, int]:
    os.environ["BENCH_WORKER_START"] = mode
    cfg = config_from_dict({**CFG, "name": f"fixed-{mode}"})
    p = plan(cfg, models)
    execute(p, work / "warm", run_id=f"warm-{mode}")  # the caches (models, references) are warm for both modes
    t0 = time.perf_counter()
    run_dir = execute(p, work, run_id=mode)
    wall = time.perf_counter() - t0
    samples = pd.read_parquet(run_dir / "samples.parquet")
    timed = samples["latency_ms"].sum() / 1e3
    cells = len(pd.read_csv(run_dir / "cells.csv"))
    ready = pd.read_csv(run_dir / "cells.csv")["worker_ready_s"].median()
    return (wall - timed) / cells, ready, cells


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-fixed-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    # each mode in a process of its own: the fork server, once started, serves the rest of a process
    if len(sys.argv) > 2 and sys.argv[1] == "--mode":
        cost, ready, cells = per_cell(sys.argv[2], work, models)
        print(f"{cost:.4f} {ready:.4f} {cells}")
        return 0
    import subprocess

    out = {}
    for mode in ("exec", "forkserver"):
        res = subprocess.run([sys.executable, "-m", "benchmarks.fixed_cost", "--mode", mode], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-3000:])
            return 1
        cost, ready, cells = res.stdout.split()[-3:]
        out[mode] = (float(cost), float(ready), int(cells))
        print(f"{mode:>10}: {float(cost):.2f} s fixed cost per cell ({cells} cells, 3 worker processes each), "
              f"median worker ready in {float(ready):.3f} s")
    ratio = out["exec"][0] / out["forkserver"][0]
    ok = out["forkserver"][0] < 1.0
    print(f"fixed cost per cell: {out['exec'][0]:.2f} s before (fresh interpreters), {out['forkserver'][0]:.2f} s after "
          f"(fork server), {ratio:.1f}x less; target under 1 s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
