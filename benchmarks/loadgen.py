"""The LoadGen harness's cost, and streams against threads, measured through `bench run` itself.

1. Harness cost: offline throughput at 1 stream (LoadGen, the SUT's queue and threads, dynamic
   batching) against the single-stream loop's throughput (batch / mean latency) at the same batch
   size, ONNX Runtime on ResNet-18-tiny, in one run, with 2 engine threads and with 1. Target: the
   harness costs under 5%.
2. 2 streams x 1 thread against 1 stream x 2 threads: offline throughput on the quickstart models
   (ResNet-18 and MobileNetV2 at 112x112) on ONNX Runtime and TVM. Which wins is a finding.

Usage: python -m benchmarks.loadgen
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from bench.config import config_from_dict
from bench.runner import execute, plan

LOADGEN = {"min_duration_s": 3.0, "min_query_count": 64}


def _run(cfg: dict, work: Path, models: Path) -> pd.DataFrame:
    cfg = config_from_dict(cfg)
    return pd.read_parquet(execute(plan(cfg, models), work, cache_dir=work / "cache") / "cells.parquet")


def harness_cost(work: Path, models: Path, threads: int) -> None:
    cells = _run({"name": f"lg-cost-{threads}", "models": [{"name": "r18", "source": "zoo:resnet18-tiny"}], "backends": ["onnxruntime"],
                  "batch_sizes": [1, 8], "scenarios": ["single_stream", "offline"], "threads": threads, "repeats": 3,
                  "timing": {"warmup": 10, "min_iterations": 100, "min_time_s": 3.0}, "loadgen": LOADGEN}, work, models)
    print(f"1. LoadGen harness cost: offline at 1 stream against the single-stream loop, ONNX Runtime, resnet18-tiny, {threads} thread(s)")
    for batch, g in cells.groupby("batch_size"):
        loop = g[g["scenario"] == "single_stream"].iloc[0]
        off = g[g["scenario"] == "offline"].iloc[0]
        loop_ips = batch / (loop["mean_ms"] / 1e3)
        ratio = off["achieved_qps"] / loop_ips
        print(f"   batch {batch}: loop {loop_ips:,.0f} samples/s (mean {loop['mean_ms']:.4f} ms), offline {off['achieved_qps']:,.0f} "
              f"samples/s ({'VALID' if off['loadgen_valid'] else 'INVALID'}); offline/loop = {ratio:.3f}, harness cost "
              f"{1 - ratio:+.1%} (target under 5%)")


def streams_vs_threads(work: Path, models: Path) -> None:
    cells = _run({"name": "lg-streams", "models": [
        {"name": "resnet18", "source": "zoo:resnet18", "input_shapes": {"input": ["batch", 3, 112, 112]}},
        {"name": "mobilenet_v2", "source": "zoo:mobilenet_v2", "input_shapes": {"input": ["batch", 3, 112, 112]}}],
        "backends": ["onnxruntime", "tvm"], "batch_sizes": [1], "scenarios": ["offline"], "streams": [1, 2], "threads": 2,
        "repeats": 2, "loadgen": LOADGEN}, work, models)
    print("2. offline throughput, 2 streams x 1 thread against 1 stream x 2 threads (quickstart models, 112x112, batch 1)")
    for (model, backend), g in cells.groupby(["model", "backend"], sort=False):
        one = g[g["streams"] == 1].iloc[0]
        two = g[g["streams"] == 2].iloc[0]
        print(f"   {model} {backend}: 1x2 {one['achieved_qps']:,.1f} samples/s, 2x1 {two['achieved_qps']:,.1f} samples/s "
              f"(2x1 / 1x2 = {two['achieved_qps'] / one['achieved_qps']:.2f}; "
              f"valid {bool(one['loadgen_valid'])}/{bool(two['loadgen_valid'])})")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-loadgen-"))
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    for threads in (2, 1):  # 1: a core left to LoadGen's own threads and the stream's Python
        harness_cost(work / f"cost{threads}", models, threads)
    streams_vs_threads(work / "streams", models)


if __name__ == "__main__":
    main()
