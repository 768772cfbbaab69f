"""multi_stream: queries of `samples_per_query` samples, the next issued when the last completes;
the figure is the 99th percentile of query latency."""

from __future__ import annotations

from typing import Any

from bench import loadgen
from bench.config import LoadGenConfig
from bench.scenarios.loadgen_base import LoadGenScenario


class MultiStream(LoadGenScenario):
    name = "multi_stream"

    def settings(self, lgc: LoadGenConfig, capacity: float, rate: float | None) -> Any:
        import mlperf_loadgen as lg

        s = loadgen.base_settings(lgc)
        s.scenario = lg.TestScenario.MultiStream
        s.multi_stream_samples_per_query = lgc.samples_per_query
        s.multi_stream_expected_latency_ns = max(int(1e9 * lgc.samples_per_query / max(capacity, 1e-9)), 1)
        return s
