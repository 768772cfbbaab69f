"""server: queries of one sample arrive as a Poisson process at a target rate (absolute, or a
fraction of the cell's measured capacity); the figures are the latency percentiles including
queueing, and whether the percentile met the bound (VALID)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench import loadgen
from bench.config import Cell, LoadGenConfig
from bench.scenarios.loadgen_base import Calls, LoadGenScenario, capacity


def server_settings(lgc: LoadGenConfig, rate: float | None) -> Any:
    import mlperf_loadgen as lg

    s = loadgen.base_settings(lgc)
    s.scenario = lg.TestScenario.Server
    s.server_target_qps = float(rate or 1.0)
    s.server_target_latency_ns = int(lgc.latency_bound_ms * 1e6)
    s.server_target_latency_percentile = lgc.latency_percentile
    return s


class Server(LoadGenScenario):
    name = "server"

    def run_load(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, estimate: float, part: dict[str, Any], out_dir: Path,
                 on_phase: Callable[[str], None]) -> tuple[dict[str, Any], float | None]:
        rate = None
        if cell.server_rate is not None:
            kind, value = cell.server_rate
            rate = value
            if kind == "load":
                part["capacity_qps"] = capacity(calls, cell.batch_size, lgc, estimate, out_dir, on_phase)
                rate = value * part["capacity_qps"]
        on_phase("loadgen: server" + (f" at {rate:.4g} qps" if rate else ""))
        return loadgen.run_test(calls, cell.batch_size, server_settings(lgc, rate), out_dir), rate
