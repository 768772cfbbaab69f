"""Wall time of one grid on a Dask fleet of one worker against two, on this machine's loopback
(127.0.0.1, no dashboard): 8 tiny ONNX Runtime cells, 3 processes each, every worker offering one
bench_slot of the same machine class, 1 thread per cell so that two workers fit 2 cores.
Everything started is stopped when it ends.

Usage: python -m benchmarks.fleet
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.config import config_from_dict
from bench.executors import DaskExecutor
from bench.runner import execute, plan

CFG = {"name": "fleet-bench", "models": [{"name": "r18", "source": "zoo:resnet18-tiny"}, {"name": "mnv2", "source": "zoo:mobilenet_v2-tiny"}],
       "backends": ["onnxruntime"], "batch_sizes": [1, 2, 4, 8], "targets": ["epyc"], "threads": 1, "repeats": 3,
       "timing": {"warmup": 5, "min_iterations": 50, "min_time_s": 1.0}}


def wall(workers: int, work: Path, models: Path) -> float:
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False}):
        spec = SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}},
                           workers={f"w{i}": {"cls": Nanny, "options": {"host": "127.0.0.1", "nthreads": 1, "dashboard": False,
                                                                         "resources": {"bench_slot": 1, "epyc": 1}}}
                                    for i in range(workers)}, silence_logs=True)
        fleet = DaskExecutor(spec.scheduler_address)
        try:
            p = plan(config_from_dict(CFG), models)
            execute(p, work / f"warm{workers}", executor=fleet, cache_dir=work / "cache")  # exports, references, compiles
            t0 = time.perf_counter()
            execute(p, work / f"timed{workers}", executor=fleet, cache_dir=work / "cache")
            return time.perf_counter() - t0
        finally:
            fleet.close()
            spec.close(timeout=30)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    one, two = wall(1, work, models), wall(2, work, models)
    print(f"one grid of 8 cells x 3 processes on a loopback Dask fleet: 1 worker {one:.1f} s, 2 workers {two:.1f} s "
          f"(speedup {one / two:.2f}x; the two workers share this machine's 2 cores)")


if __name__ == "__main__":
    main()
