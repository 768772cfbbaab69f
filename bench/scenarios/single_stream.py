"""single_stream: one caller in a loop, timed call by call by bench's own loop (bench.timing)."""

from __future__ import annotations

from typing import Any, Mapping

from bench.config import Config
from bench.scenarios.base import Prepared, TimedCell
from bench.timing import measure, summarize, timer_name


class SingleStream:
    name = "single_stream"

    def prepare(self, timed: TimedCell) -> Prepared:
        compiled = timed.compiled
        fn = compiled.prepare(timed.feeds[0])

        def run() -> tuple[dict[str, Any], list[int]]:
            return {}, measure(fn, compiled.clock, timed.config.timing, compiled.interval)

        return Prepared(run, {"timed_region": compiled.timed_region, "timer": timer_name(compiled.clock, compiled.interval)},
                        comparable_calls=True)

    def summarize(self, row: Mapping[str, Any], parts: list[dict[str, Any]], per_process: list[list[int]],
                  config: Config, peak: Mapping[str, Any]) -> dict[str, Any]:
        if not any(per_process):
            return {}
        out = summarize(per_process, int(row["batch_size"])).as_row()
        return {**out, **work_rate({**row, **out}, peak)}


def work_rate(row: Mapping[str, Any], peak: Mapping[str, Any]) -> dict[str, Any]:
    """achieved_gflops (gflop / median seconds) and, for a cell computed on this host's CPU, its
    share of the host's theoretical fp32 peak for the threads the cell used."""
    gflop, p50_ms = row.get("gflop"), row.get("p50_ms")
    if not gflop or not p50_ms:
        return {"achieved_gflops": None, "pct_of_peak": None}
    achieved = gflop / (p50_ms / 1e3)
    per_core, threads = peak.get("fp32_peak_gflops_per_core"), row.get("threads")
    pct = None
    if row.get("device") == "cpu" and per_core and threads:
        pct = 100.0 * achieved / (per_core * min(int(threads), peak.get("cores") or int(threads)))
    return {"achieved_gflops": achieved, "pct_of_peak": pct}
