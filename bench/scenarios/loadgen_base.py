"""What the LoadGen scenarios share (bench.loadgen is the harness: its SUT, run_test, combine):
`streams` compiled instances, each on a thread of its own, a capacity estimate from one call's
latency, and the row's figures as LoadGen reports them. A subclass says how its LoadGen run goes
(`run_load`), with the settings of its LoadGen scenario (`settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from bench import loadgen
from bench.config import Cell, Config, LoadGenConfig
from bench.registry import ScenarioSpec, scenario
from bench.scenarios.base import Prepared, TimedCell

Calls = list[Callable[[], None]]
LATENCY_FIGURES = ("mean_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")


class LoadGenScenario:
    name = ""

    @property
    def spec(self) -> ScenarioSpec:
        return scenario(self.name)

    def prepare(self, timed: TimedCell) -> Prepared:
        cell = timed.cell
        timed.on_phase(f"compile {cell.streams - 1} more instance(s) for the streams")
        instances: list[Any] = []
        try:
            for _ in range(cell.streams - 1):
                instances.append(timed.backend.compile(timed.request))
            calls = [loadgen.completing(c.prepare(timed.feeds[i % len(timed.feeds)]), c)
                     for i, c in enumerate([timed.compiled, *instances])]
        except BaseException:  # the job releases only what a returned Prepared names
            for c in instances:
                c.release()
            raise
        lgc = timed.config.loadgen
        lgc = lgc.model_copy(update={"min_query_count": max(lgc.min_query_count, self.spec.min_queries)})
        facts = {"timed_region": loadgen.timed_region(cell, timed.request.threads), "threads_per_stream": timed.request.threads,
                 "timer": "loadgen_issue_to_complete_perf_counter_ns"}
        return Prepared(lambda: self.measure(cell, lgc, calls, timed.out_dir, timed.on_phase), facts, instances)

    def measure(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, out_dir: Path,
                on_phase: Callable[[str], None]) -> tuple[dict[str, Any], list[int]]:
        """This process's LoadGen figures, and its samples: per-sample latencies (ns), or per-call
        service times for a throughput scenario."""
        on_phase("loadgen: one call's latency")
        one = loadgen.service_time_s(calls[0])
        estimate = len(calls) * cell.batch_size / one  # samples/s if the streams scaled perfectly and the harness cost nothing
        part: dict[str, Any] = {"capacity_estimate_qps": estimate, "service_ms": one * 1e3}
        result, rate = self.run_load(cell, lgc, calls, estimate, part, out_dir, on_phase)
        part.update(valid=result["valid"], reason=self.reason(result, lgc), target_qps=rate,
                    achieved_qps=result["samples_per_s"] or result["measured_samples_per_s"],
                    **{k: loadgen.ms(result[k.replace("_ms", "_ns")]) for k in LATENCY_FIGURES})
        return part, result["service_ns"] if self.spec.throughput else result["latencies_ns"]

    def run_load(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, estimate: float, part: dict[str, Any], out_dir: Path,
                 on_phase: Callable[[str], None]) -> tuple[dict[str, Any], float | None]:
        """One LoadGen run of this scenario: (run_test's result, the target rate if any)."""
        on_phase(f"loadgen: {self.name}")
        return loadgen.run_test(calls, cell.batch_size, self.settings(lgc, estimate, None), out_dir), None

    def settings(self, lgc: LoadGenConfig, capacity: float, rate: float | None) -> Any:
        raise NotImplementedError

    def reason(self, result: dict[str, Any], lgc: LoadGenConfig) -> str:
        """LoadGen's reason, led by the latency against the bound when that is what failed."""
        reason = result["reason"]
        if reason and self.spec.bounded and lgc.latency_percentile == 0.99 and result.get("p99_ns"):
            p99 = result["p99_ns"] / 1e6
            if p99 > lgc.latency_bound_ms:
                reason = f"p99 {p99:.4g} ms over the {lgc.latency_bound_ms:g} ms bound; {reason}"
        return reason

    def summarize(self, row: Mapping[str, Any], parts: list[dict[str, Any]], per_process: list[list[int]],
                  config: Config, peak: Mapping[str, Any]) -> dict[str, Any]:
        if not parts or row.get("status") != "ok":  # LoadGen's figures only for a cell every process completed
            return {}
        return {**loadgen.combine(parts), "iterations": sum(len(p) for p in per_process),
                "latency_bound_ms": config.loadgen.latency_bound_ms if self.spec.bounded else None}


def capacity(calls: Calls, batch: int, lgc: LoadGenConfig, estimate: float, out_dir: Path,
             on_phase: Callable[[str], None]) -> float:
    """The cell's capacity: the samples per second of an offline LoadGen run through the same
    harness (its logs under capacity/), not an estimate from one call's latency, which leaves out
    the harness and the streams' contention for the cores."""
    measured = offline_run(calls, batch, lgc, estimate, out_dir / "capacity", on_phase)
    return measured["samples_per_s"] or measured["measured_samples_per_s"]


def offline_settings(lgc: LoadGenConfig, capacity: float) -> Any:
    import mlperf_loadgen as lg

    s = loadgen.base_settings(lgc)
    s.scenario = lg.TestScenario.Offline
    # LoadGen issues expected_qps x min_duration samples at once: overestimate, so the run lasts
    # at least min_duration (an underestimate ends early and is INVALID)
    s.offline_expected_qps = max(capacity * 1.5, 1.0)
    return s


def offline_run(calls: Calls, batch: int, lgc: LoadGenConfig, estimate: float, out_dir: Path,
                on_phase: Callable[[str], None]) -> dict[str, Any]:
    """An offline run, sized from the estimate; run again with more samples if the engine got
    through them before LoadGen's minimum duration (an INVALID run that says nothing of the engine)."""
    on_phase("loadgen: offline")
    result = loadgen.run_test(calls, batch, offline_settings(lgc, estimate), out_dir)
    if not result["valid"] and result["samples_per_s"] and "Min duration" in result["reason"]:
        on_phase("loadgen: offline again, with more samples")
        result = loadgen.run_test(calls, batch, offline_settings(lgc, result["samples_per_s"] * 1.5), out_dir)
    return result
