"""single_stream: one caller in a loop, timed call by call by bench's own loop (bench.timing)."""

from __future__ import annotations

from typing import Any, Mapping

from bench.config import Config
from bench.scenarios.base import Prepared, TimedCell
from bench.timing import measure_steady, summarize, timer_name


class SingleStream:
    name = "single_stream"

    def prepare(self, timed: TimedCell) -> Prepared:
        compiled = timed.compiled
        fn = compiled.prepare(timed.feeds[0])

        def run() -> tuple[dict[str, Any], list[int]]:
            samples, note = measure_steady(fn, compiled.clock, timed.config.timing, compiled.interval)
            return {"steady_state": note}, samples

        return Prepared(run, {"timed_region": compiled.timed_region, "timer": timer_name(compiled.clock, compiled.interval)},
                        comparable_calls=True)

    def summarize(self, row: Mapping[str, Any], parts: list[dict[str, Any]], per_process: list[list[int]],
                  config: Config, peak: Mapping[str, Any]) -> dict[str, Any]:
        if not any(per_process):
            return {}
        out = summarize(per_process, int(row["batch_size"])).as_row()
        out.update(steady_state(parts, out))
        return {**out, **work_rate({**row, **out}, peak)}


def steady_state(parts: list[dict[str, Any]], stats: Mapping[str, Any]) -> dict[str, Any]:
    """The row's `steady_state` from each process's note (bench.timing.trend): `steady` when every
    process was, else each other process's note. A trend that remained (warm-up never over, or calls
    slowing down) makes the row unstable, with the reason."""
    notes = [(i + 1, p["steady_state"]) for i, p in enumerate(parts) if p.get("steady_state")]
    if not notes:
        return {}
    odd = [(i, n) for i, n in notes if n != "steady"]
    text = "; ".join(f"process {i}: {n}" for i, n in odd) if odd else "steady"
    trends = [f"process {i} {n.split(':')[0]}" for i, n in odd if n.startswith(("warming", "slowing"))]
    if not trends:
        return {"steady_state": text}
    reason = "; ".join(filter(None, [stats.get("unstable_reason"), "trend within a process (" + ", ".join(trends) + ")"]))
    return {"steady_state": text, "unstable": True, "unstable_reason": reason}


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
