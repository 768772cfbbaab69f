"""max_qps: server runs searching for the highest rate that is VALID under the bound, from 90% of
the cell's measured offline capacity; every probe is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench import loadgen
from bench.config import Cell, LoadGenConfig
from bench.scenarios.loadgen_base import Calls, LoadGenScenario, capacity
from bench.scenarios.server import server_settings


class MaxQps(LoadGenScenario):
    name = "max_qps"

    def run_load(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, estimate: float, part: dict[str, Any], out_dir: Path,
                 on_phase: Callable[[str], None]) -> tuple[dict[str, Any], float | None]:
        part["capacity_qps"] = capacity(calls, cell.batch_size, lgc, estimate, out_dir, on_phase)
        result, rate, part["probes"] = self.search(cell, lgc, calls, part["capacity_qps"], out_dir, on_phase)
        return result, rate

    def reason(self, result: dict[str, Any], lgc: LoadGenConfig) -> str:
        return result["reason"]  # the search's own, already led by the bound

    def search(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, cap: float, out_dir: Path,
               on_phase: Callable[[str], None]) -> tuple[dict[str, Any], float | None, list[dict[str, Any]]]:
        """Highest VALID server rate within lgc.max_qps_probes runs: from 90% of the offline capacity,
        up by a quarter while VALID, then bisect between the best VALID and the lowest INVALID rate."""
        lo: tuple[float, dict[str, Any]] | None = None
        hi: float | None = None
        rate, probes, last = cap * 0.9, [], {}
        for i in range(lgc.max_qps_probes):
            on_phase(f"loadgen: max_qps probe {i + 1}/{lgc.max_qps_probes} at {rate:.4g} qps")
            last = loadgen.run_test(calls, cell.batch_size, server_settings(lgc, rate), out_dir / f"probe{i + 1}")
            last["reason"] = super().reason(last, lgc)
            probes.append({"target_qps": round(rate, 3), "achieved_qps": last["samples_per_s"], "p99_ms": loadgen.ms(last["p99_ns"]),
                           "valid": last["valid"], "reason": last["reason"]})
            if last["valid"]:
                lo = (rate, last)
            else:
                hi = rate if hi is None else min(hi, rate)
            if hi is None:
                rate *= 1.25
            elif lo is None:
                rate = hi / 2
            elif (hi - lo[0]) / hi < 0.02:
                break
            else:
                rate = (lo[0] + hi) / 2
        if lo is None:
            lowest = min(p["target_qps"] for p in probes)
            return {**last, "valid": False, "reason": f"no rate probed was VALID (lowest {lowest:.4g} qps: {last['reason']})"}, None, probes
        return lo[1], lo[0], probes
