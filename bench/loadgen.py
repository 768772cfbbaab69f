"""Throughput and latency under load, measured by MLPerf's own LoadGen (`mlcommons-loadgen`).

The harness the LoadGen scenarios share (bench.scenarios: offline, server, multi_stream, max_qps,
each a module; their minimum query counts for LoadGen's early stopping are in bench.registry).

LoadGen decides arrivals, durations, query counts, early stopping and VALID/INVALID; this module
is its system under test (SUT). `streams` compiled instances of the cell each serve queries on a
thread of their own: a thread takes the samples waiting in the queue, up to the batch size, and
runs one call of its instance (dynamic batching; a call with fewer samples waiting still runs the
full batch, since a compiled shape is static). The call is the single-stream timed region: the
instance's inputs are placed before the run (the seeded validation inputs), so the figures are the
engine's under concurrency, not a data pipeline's. Both engines release the GIL while they compute:
ONNX Runtime in `run`, TVM in every FFI call (tvm_ffi releases it by default,
TVM_FFI_RELEASE_GIL_BY_DEFAULT=1), so streams overlap on the cores.
"""

from __future__ import annotations

import json
import queue
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench.config import Cell, LoadGenConfig

QSL_SIZE = 1024  # sample indices LoadGen draws from; inputs are pre-placed, so the indices pick nothing
TIMED_REGION = ("LoadGen {scenario}: from LoadGen issuing a query to the SUT's completion callback, queueing included; "
                "{streams} stream thread(s), each calling its own instance with {threads} thread(s) on its pre-placed batch")


def available() -> str | None:
    """None when LoadGen imports, else why not and how to install it."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError as e:
        return f"MLPerf LoadGen is not installed ({e}); pip install 'bench[loadgen]' (mlcommons-loadgen)"
    return None


def completing(call: Callable[[], object], compiled: Any) -> Callable[[], None]:
    """`call`, run to completion: through the instance's own interval timer when it has one (a GPU
    engine's event pair), else followed by its clock, which synchronizes a device."""
    interval = compiled.interval
    if interval is not None:
        return lambda: interval(call)
    clock = compiled.clock

    def run() -> None:
        call()
        clock()

    return run


def service_time_s(call: Callable[[], None], min_time_s: float = 0.2, min_calls: int = 5) -> float:
    """Median seconds of one call of one instance, alone: the basis of the capacity estimate."""
    for _ in range(2):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
        if len(times) >= 10_000:
            break
    return statistics.median(times)


class _SUT:
    """LoadGen's system under test: stream threads serving a shared queue of samples."""

    def __init__(self, calls: list[Callable[[], None]], batch: int):
        import mlperf_loadgen as lg

        self.lg = lg
        self.batch = batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.latencies_ns: list[int] = []  # per sample: issued to completed
        self.service_ns: list[int] = []  # per call
        self.completed = 0
        self.first_issue: int | None = None
        self.last_done: int | None = None
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._serve, args=(c,), daemon=True, name=f"bench-stream-{i}")
                        for i, c in enumerate(calls)]
        for t in self.threads:
            t.start()

    def issue(self, samples: list[Any]) -> None:
        # chunks of up to a batch: an offline query of N samples is N / batch queue items, not N
        now = time.perf_counter_ns()
        if self.first_issue is None:
            self.first_issue = now
        ids = [s.id for s in samples]
        for i in range(0, len(ids), self.batch):
            self.queue.put((ids[i:i + self.batch], now))

    def flush(self) -> None: ...

    def _serve(self, call: Callable[[], None]) -> None:
        lg, batch, get_nowait = self.lg, self.batch, self.queue.get_nowait
        while True:
            item = self.queue.get()
            if item is None:
                return
            chunks, n, stop = [item], len(item[0]), False
            while n < batch:  # dynamic batching: whatever else is waiting, up to the batch size
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if n + len(more[0]) > batch:
                    self.queue.put(more)  # does not fit this call: back for the next one
                    break
                chunks.append(more)
                n += len(more[0])
            t0 = time.perf_counter_ns()
            if self.error is None:
                try:
                    call()
                except BaseException as e:  # answered anyway, so LoadGen ends; the run fails with it
                    self.error = e
            t1 = time.perf_counter_ns()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for ids, _ in chunks for i in ids])
            self.service_ns.append(t1 - t0)
            for ids, t in chunks:
                self.latencies_ns.extend([t1 - t] * len(ids))
            self.completed += n
            self.last_done = t1
            if stop:
                return

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()


_NS = r"\(ns\)\s*:\s*(\d+)"
_FIGURES = {
    "samples_per_s": r"(?:Completed samples per second|Samples per second)\s*:\s*([\d.]+)",
    "scheduled_qps": r"Scheduled samples per second\s*:\s*([\d.]+)",
    "mean_ns": r"Mean latency " + _NS,
    "min_ns": r"Min latency " + _NS,
    "max_ns": r"Max latency " + _NS,
    "p50_ns": r"50\.00 percentile latency " + _NS,
    "p90_ns": r"90\.00 percentile latency " + _NS,
    "p95_ns": r"95\.00 percentile latency " + _NS,
    "p99_ns": r"99\.00 percentile latency " + _NS,
}


def parse_summary(text: str) -> dict[str, Any]:
    """LoadGen's verdict and figures from mlperf_log_summary.txt: valid, reason (every constraint
    it reports unsatisfied, and its early-stopping note), and the latency figures in ns."""
    m = re.search(r"Result is\s*:\s*(\w+)", text)
    out: dict[str, Any] = {"valid": bool(m and m.group(1) == "VALID")}
    failed = [ln.split(":")[0].strip() for ln in text.splitlines() if re.search(r"satisfied\s*:\s*NO\b", ln)]
    notes = re.search(r"Early Stopping Result:\n((?: \*.*\n?)+)", text)
    reason = "; ".join(f"{f}: no" for f in failed)
    if notes and not out["valid"]:
        reason += " (" + " ".join(ln.strip(" *") for ln in notes.group(1).splitlines()) + ")"
    out["reason"] = reason if not out["valid"] else ""
    if m is None:
        out["reason"] = "LoadGen wrote no result"
    for key, pattern in _FIGURES.items():
        found = re.search(pattern, text)
        out[key] = float(found.group(1)) if found else None
    return out


def base_settings(lgc: LoadGenConfig) -> Any:
    """LoadGen's TestSettings common to every scenario (performance only, the config's duration and
    query count); each scenario (bench.scenarios) sets its own LoadGen scenario and figures."""
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.mode = lg.TestMode.PerformanceOnly
    s.min_duration_ms = int(lgc.min_duration_s * 1000)
    s.min_query_count = max(lgc.min_query_count, 1)
    return s


def run_test(calls: list[Callable[[], None]], batch: int, settings: Any, out_dir: Path) -> dict[str, Any]:
    """One LoadGen run against `calls` (one per stream); LoadGen's logs land in out_dir."""
    import mlperf_loadgen as lg

    out_dir.mkdir(parents=True, exist_ok=True)
    sut = _SUT(calls, batch)
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl = lg.ConstructQSL(QSL_SIZE, QSL_SIZE, lambda ids: None, lambda ids: None)
    log = lg.LogSettings()
    log.log_output.outdir = str(out_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(handle, qsl, settings, log)
    finally:
        sut.close()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(handle)
    if sut.error is not None:
        raise RuntimeError(f"a stream's call failed under LoadGen: {type(sut.error).__name__}: {sut.error}") from sut.error
    summary = out_dir / "mlperf_log_summary.txt"
    got = parse_summary(summary.read_text() if summary.is_file() else "")
    span = (sut.last_done or 0) - (sut.first_issue or 0)
    got["measured_samples_per_s"] = sut.completed / (span / 1e9) if span > 0 else None
    got["latencies_ns"] = sut.latencies_ns
    got["service_ns"] = sut.service_ns
    return got


def ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's figures from every process's LoadGen part: the median of each figure across
    processes, VALID only when every process was, and how far the processes' throughputs spread."""
    def med(key: str) -> float | None:
        vals = [p[key] for p in parts if p.get(key) is not None]
        return statistics.median(vals) if vals else None

    qps = [p["achieved_qps"] for p in parts if p.get("achieved_qps")]
    spread = (max(qps) - min(qps)) / statistics.median(qps) if len(qps) > 1 else 0.0
    p50s = [p["p50_ms"] for p in parts if p.get("p50_ms") is not None]
    lat_spread = (max(p50s) - min(p50s)) / statistics.median(p50s) if len(p50s) > 1 else None
    reasons = [f"process {i + 1}: {p['reason']}" for i, p in enumerate(parts) if not p.get("valid")]
    row: dict[str, Any] = {
        "achieved_qps": med("achieved_qps"), "throughput_ips": med("achieved_qps"), "target_qps": med("target_qps"),
        "loadgen_valid": all(p.get("valid") for p in parts) if parts else None,
        "loadgen_reason": "; ".join(reasons) or None,
        "process_qps": json.dumps([round(q, 3) for q in qps]), "qps_spread": spread,
        "capacity_estimate_qps": med("capacity_estimate_qps"), "capacity_qps": med("capacity_qps"),
        **{k: med(k) for k in ("mean_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")},
        "process_p50_ms": json.dumps([round(x, 6) for x in p50s]) if p50s else None, "repeat_p50_spread": lat_spread,
    }
    if any("probes" in p for p in parts):
        row["probes"] = json.dumps([p.get("probes") for p in parts])
    worst = max([spread] + ([lat_spread] if lat_spread is not None else []))
    row["unstable"] = bool(worst >= 0.10)
    row["unstable_reason"] = f"processes' figures spread {worst:.0%} (>= 10%)" if row["unstable"] else None
    row["ci_method"] = "none: LoadGen's percentiles, median of processes" if row["p50_ms"] is not None else None
    return row


def timed_region(cell: Cell, threads: int) -> str:
    return TIMED_REGION.format(scenario=cell.scenario, streams=cell.streams, threads=threads)
