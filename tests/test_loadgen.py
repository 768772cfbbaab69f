"""The load scenarios, with MLPerf's real LoadGen driving real backends on tiny models (short
minimum durations), and the harness's own parts on their own."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from bench import loadgen
from bench.config import config_from_dict
from bench.errors import BenchError
from bench.runner import execute, plan
from tests.conftest import FAST_TIMING, write_yaml

lg = pytest.importorskip("mlperf_loadgen")

BOUND_MS = 200.0


def _config(mlp_onnx, backends, scenarios, **loadgen):
    return config_from_dict({
        "name": "load", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": backends, "batch_sizes": [2],
        "scenarios": scenarios, "streams": loadgen.pop("streams", [1]), "timing": FAST_TIMING, "repeats": 1, "threads": 2,
        "exclude": loadgen.pop("exclude", []),
        "loadgen": {"min_duration_s": 0.2, "min_query_count": 64, "latency_bound_ms": BOUND_MS, "max_qps_probes": 3, **loadgen},
    })


@pytest.fixture(scope="module")
def load_run(mlp_onnx, models_dir, tmp_path_factory):
    """One run of every LoadGen scenario on ONNX Runtime, streams 1 and 2; the server at a tenth of
    the measured capacity and at ten times it."""
    out = tmp_path_factory.mktemp("load")
    cfg = _config(mlp_onnx, ["onnxruntime"], ["offline", "server", "multi_stream", "max_qps"], streams=[1, 2], load=[0.1, 10.0],
                  exclude=[{"scenario": "multi_stream", "streams": 2}, {"scenario": "max_qps", "streams": 2}])
    run_dir = execute(plan(cfg, models_dir), out / "results", cache_dir=out / "cache")
    cells = pd.read_parquet(run_dir / "cells.parquet")
    return run_dir, cells.set_index(["scenario", "rate", "streams"])


def test_every_scenario_runs_validated_under_loadgen_with_its_logs(load_run):
    run_dir, cells = load_run
    assert len(cells) == 8  # offline, 2 server rates: x 2 streams; multi_stream and max_qps x 1
    assert (cells["status"] == "ok").all() and cells["accuracy_ok"].all(), cells[["status", "error"]]
    for (scenario, rate, streams), r in cells.iterrows():
        assert r["threads_per_stream"] == 2 // streams and r["achieved_qps"] > 0 and r["throughput_ips"] == r["achieved_qps"]
        assert f"LoadGen {scenario}" in r["timed_region"]
        logs = run_dir / "loadgen" / f"mlp-onnxruntime-fp32-b2-{scenario}" f"{'-' + rate if rate else ''}-s{streams}" / "process1"
        summary = (logs / ("probe1" if scenario == "max_qps" else "") / "mlperf_log_summary.txt").read_text()
        if scenario in ("offline", "server"):  # the row's figure is LoadGen's own summary's (one process)
            assert r["achieved_qps"] == pytest.approx(loadgen.parse_summary(summary)["samples_per_s"])
        assert "Result is" in summary and (logs / ("probe1" if scenario == "max_qps" else "") / "mlperf_log_detail.txt").is_file()
    for scenario in ("offline", "multi_stream"):
        assert cells.loc[(scenario, "", 1), "loadgen_valid"], cells.loc[(scenario, "", 1), "loadgen_reason"]
    offline = cells.loc[("offline", "", 1)]
    assert pd.isna(offline["p99_ms"])  # the one offline query's latency says nothing of the engine
    assert cells.loc[("multi_stream", "", 1), "p99_ms"] > 0


def test_a_server_far_below_capacity_is_valid_and_far_above_is_invalid_on_latency(load_run):
    _, cells = load_run
    for streams in (1, 2):
        low, high = cells.loc[("server", "load0.1", streams)], cells.loc[("server", "load10", streams)]
        assert low["loadgen_valid"], low["loadgen_reason"]
        assert low["p99_ms"] < BOUND_MS and low["target_qps"] == pytest.approx(0.1 * low["capacity_qps"])
        assert not high["loadgen_valid"]
        assert high["p99_ms"] > BOUND_MS and "over the 200 ms bound" in high["loadgen_reason"]
        assert high["achieved_qps"] < high["target_qps"]


def test_max_qps_records_every_probe_and_keeps_the_best_valid_rate(load_run):
    _, cells = load_run
    for streams in (1,):
        r = cells.loc[("max_qps", "", streams)]
        (probes,) = json.loads(r["probes"])  # one process
        assert len(probes) == 3
        valid = [p["target_qps"] for p in probes if p["valid"]]
        assert r["loadgen_valid"] == bool(valid)
        if valid:  # the row's rate is the highest VALID probe, its p99 within the bound
            assert r["target_qps"] == pytest.approx(max(valid), rel=1e-3) and r["p99_ms"] <= BOUND_MS
        else:  # no rate to publish
            assert pd.isna(r["target_qps"]) and "no rate probed was VALID" in r["loadgen_reason"]
        assert all(p["valid"] or p["reason"] for p in probes)


def test_the_report_draws_the_load_plots_and_compare_reads_throughput(load_run, tmp_path):
    from bench.report import PLOTS, build_report
    from bench.results import load_run as load
    from bench.verdicts import compare_runs

    run_dir, _ = load_run
    out = build_report(run_dir, tmp_path)
    md = (out / "report.md").read_text()
    for plot in ("latency_throughput", "max_qps"):
        assert (out / PLOTS[plot]).read_bytes()[:4] == b"\x89PNG" and PLOTS[plot] in md
    assert "INVALID" in md and "over the 200 ms bound" in md  # the overloaded server, with its reason
    assert not (out / PLOTS["latency"]).exists()  # no single-stream cells: no empty latency-vs-batch plot
    run = load(run_dir)
    table = compare_runs(run, run).set_index(["scenario", "rate", "streams"])
    offline = table.loc[("offline", "", 1)]
    assert offline["metric"].startswith("ms per sample") and offline["qps_a"] == offline["qps_b"] > 0
    assert offline["change"] == 0 and offline["verdict"] == "no change"
    assert table.loc[("server", "load0.1", 1), "metric"] == "latency p50 under load"


def test_tvm_streams_serve_concurrently_under_loadgen(mlp_onnx, models_dir, tmp_path):
    cfg = _config(mlp_onnx, ["tvm"], ["offline"], streams=[2])
    cells = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "results", cache_dir=tmp_path / "cache") / "cells.csv")
    (r,) = cells.itertuples()
    assert r.status == "ok" and r.accuracy_ok and r.loadgen_valid, (r.error, r.loadgen_reason)
    assert r.streams == 2 and r.threads_per_stream == 1 and r.achieved_qps > 0


# --- the harness's parts ------------------------------------------------------------------------------


def test_streams_batch_what_is_waiting_and_answer_every_sample(tmp_path):
    """The SUT: each stream takes up to a batch of waiting samples per call, and every sample
    LoadGen issued is answered (an offline run is VALID only then)."""
    from bench import loadgen

    calls = []
    lock = threading.Lock()

    def call():
        with lock:
            calls.append(time.perf_counter())
        time.sleep(0.002)

    settings = lg.TestSettings()
    settings.scenario, settings.mode = lg.TestScenario.Offline, lg.TestMode.PerformanceOnly
    settings.min_duration_ms, settings.min_query_count, settings.offline_expected_qps = 200, 1, 2000
    got = loadgen.run_test([call, call], 8, settings, tmp_path)
    samples = int(2000 * 0.2 * 1.1)  # LoadGen issues expected qps x min duration, with a 10% margin
    assert len(got["latencies_ns"]) == samples
    full = -(-samples // 8)
    # full batches of 8, bar the last and at most one per stream that woke before LoadGen had issued them all
    assert len(calls) == len(got["service_ns"]) and full <= len(calls) <= full + 2
    # 440 samples in batches of 8 at 2 ms a call on 2 streams take about 60 ms, under the 200 ms minimum
    assert got["samples_per_s"] and got["valid"] is False and "Min duration satisfied: no" in got["reason"]


def test_parse_summary_reads_the_verdict_reasons_and_figures():
    from bench.loadgen import parse_summary

    text = """Scenario : Server
Completed samples per second    : 89.89
Result is : INVALID
  Performance constraints satisfied : NO
  Min duration satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
Early Stopping Result:
 * Run unsuccessful.
 * Processed 93 queries.

Additional Stats
50.00 percentile latency (ns)   : 5360749
99.00 percentile latency (ns)   : 9280651
"""
    got = parse_summary(text)
    assert got["valid"] is False and got["samples_per_s"] == 89.89
    assert got["reason"].startswith("Performance constraints satisfied: no; Early stopping satisfied: no")
    assert "Processed 93 queries" in got["reason"]
    assert got["p50_ns"] == 5360749 and got["p99_ns"] == 9280651
    assert parse_summary("")["reason"] == "LoadGen wrote no result"


@pytest.mark.parametrize("data, expected", [
    ({"scenarios": ["server"], "loadgen": {"latency_bound_ms": 10}}, "needs loadgen.target_qps"),
    ({"scenarios": ["max_qps"]}, "needs loadgen.latency_bound_ms"),
    ({"scenarios": ["server"], "loadgen": {"load": [0], "latency_bound_ms": 10}}, "loadgen.load: rates must be > 0"),
    ({"scenarios": ["batch_stream"]}, "single_stream"),
    ({"streams": [0]}, "streams must be >= 1"),
    ({"loadgen": {"min_duration": 1}}, "loadgen.min_duration: unknown key"),
])
def test_scenario_config_errors_name_the_key(mlp_onnx, tmp_path, data, expected):
    path = write_yaml(tmp_path / "c.yaml", {"name": "x", "models": [{"name": "m", "source": str(mlp_onnx)}],
                                            "backends": ["onnxruntime"], "batch_sizes": [1], **data})
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and expected in proc.stderr and str(path) in proc.stderr, proc.stderr


def test_more_streams_than_cores_is_a_warning_and_single_stream_ignores_streams(mlp_onnx):
    import os

    cores = len(os.sched_getaffinity(0))
    cfg = config_from_dict({"name": "x", "models": [{"name": "m", "source": str(mlp_onnx)}], "backends": ["onnxruntime"],
                            "batch_sizes": [1], "scenarios": ["single_stream", "offline"], "streams": [1, cores + 1]})
    assert any(f"{cores + 1} streams on {cores} available cores" in w for w in cfg.warnings())
    assert [(c.scenario, c.streams) for c in cfg.grid()] == [("single_stream", 1), ("offline", 1), ("offline", cores + 1)]
    assert cfg.threads_per_stream("onnxruntime", cores + 1) == 1


def test_a_missing_loadgen_is_named_before_anything_runs(mlp_onnx, models_dir, monkeypatch):
    from bench import loadgen

    monkeypatch.setattr(loadgen, "available", lambda: "MLPerf LoadGen is not installed (x); pip install 'bench[loadgen]'")
    with pytest.raises(BenchError, match=r"scenarios offline run under MLPerf LoadGen is not installed"):
        plan(_config(mlp_onnx, ["onnxruntime"], ["offline"]), models_dir)
