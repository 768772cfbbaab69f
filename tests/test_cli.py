"""End to end through the command line, with both real CPU backends on a tiny model."""

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import FAST_TIMING, stderr_after, wait_gone, write_yaml

PNG = b"\x89PNG\r\n\x1a\n"


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, models_dir):
    work = tmp_path_factory.mktemp("e2e")
    config = write_yaml(work / "tiny.yaml", {
        "name": "tiny",
        "models": [{"name": "r18", "source": "zoo:resnet18-tiny"}, {"name": "mnv2", "source": "zoo:mobilenet_v2-tiny"}],
        "backends": ["onnxruntime", "tvm"],
        "batch_sizes": [1, 2],
        "timing": FAST_TIMING,
    })
    proc = bench("run", config, "--models-dir", models_dir, cwd=work)
    return work, proc


def test_run_writes_validated_rows_for_both_backends(e2e):
    work, proc = e2e
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (work / "results").iterdir()
    assert f"results: results/{run_dir.name}" in proc.stdout
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 8
    assert set(cells["status"]) == {"ok"}
    assert cells["accuracy_ok"].all() and cells["validated"].all()
    assert (cells["max_abs_err"] < 1e-4).all() and (cells["cosine"] > 0.9999).all()
    assert (cells["top1_agreement"] == 1.0).all()
    assert (cells["iterations"] >= 3).all() and (cells["p50_ms"] > 0).all()
    mean_ms = pd.read_parquet(run_dir / "samples.parquet").groupby(["model", "backend", "batch_size"])["latency_ms"].mean()
    expected = [b * 1e3 / mean_ms[(m, be, b)] for m, be, b in zip(cells["model"], cells["backend"], cells["batch_size"])]
    assert list(cells["throughput_ips"]) == pytest.approx(expected)  # batch / mean latency of the raw samples
    tvm = cells[cells.backend == "tvm"]
    assert set(tvm["variant"]) == {"untuned"} and tvm["provider"].str.startswith("llvm").all()
    ort = cells[cells.backend == "onnxruntime"]
    assert set(ort["provider"]) == {"CPUExecutionProvider"}
    # One timed region, stated: ONNX Runtime through a pre-bound IOBinding, TVM with inputs converted once.
    assert ort["timed_region"].str.startswith("session.run_with_iobinding: inputs pre-bound").all()
    assert tvm["timed_region"].str.contains("inputs converted to TVM tensors on the device once").all()
    assert (tvm["threads"] == cells["threads"].max()).all()  # TVM's pool in a forked worker took the cell's threads
    assert (cells["worker_ready_s"] > 0).all()
    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert len(samples) == cells["iterations"].sum()
    assert (cells["repeats"] == 3).all() and (samples.groupby(["model", "backend", "batch_size"])["process"].nunique() == 3).all()
    # Off a terminal, progress is plain lines: one per finished cell, with its status, p50 and ETA.
    done = [line for line in proc.stderr.splitlines() if line.startswith("[") and "] " in line]
    assert len(done) == 8 and done[0].startswith("[1/8] r18 onnxruntime fp32 b1: ok, p50 ") and "ETA 0:" in done[-1], proc.stderr


def test_report_has_real_plots_and_is_rebuilt_from_results(e2e):
    work, _ = e2e
    (run_dir,) = (work / "results").iterdir()
    report_dir = work / "reports" / run_dir.name
    pngs = sorted(report_dir.glob("*.png"))
    models = sorted({p.name for p in pngs if p.name.startswith("pareto_")})  # accuracy against latency, per model
    assert len(pngs) == 4 + len(models) and models and all(p.read_bytes()[:8] == PNG for p in pngs)
    md = (report_dir / "report.md").read_text()
    assert "tvm rows are untuned" in md and "![latency](latency_vs_batch.png)" in md
    assert all(f"({m})" in md for m in models)
    for p in pngs:
        p.unlink()
    (report_dir / "report.md").unlink()
    proc = bench("report", f"results/{run_dir.name}", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert len(list(report_dir.glob("*.png"))) == len(pngs)
    assert (report_dir / "report.md").read_text() == md


def test_dry_run_prints_one_line_per_cell_and_writes_nothing(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {
        "name": "d", "models": [{"name": "r", "source": "zoo:resnet50"}], "backends": ["onnxruntime", "tvm"],
        "batch_sizes": [1, 8, 32], "exclude": [{"backend": "tvm", "batch_size": 32}],
    })
    proc = bench("run", config, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    assert lines[0].split("\t")[:4] == ["r", "onnxruntime", "fp32", "batch=1"]
    assert "(32, 3, 224, 224)" in lines[2]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(colour="blue"), "c.yaml:9: colour: unknown key"),
    (lambda c: c.update(batch_sizes="many"), "c.yaml:7: batch_sizes: Input should be a valid list"),
    (lambda c: c["models"][0].update(source="missing.onnx"), "model file 'missing.onnx' not found"),
    (lambda c: c["models"][0].update(source="corrupt.onnx"), "corrupt.onnx is not a valid ONNX model"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, mutate, expected):
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    cfg = {"name": "b", "models": [{"name": "m", "source": "zoo:resnet18-tiny"}], "backends": ["onnxruntime"],
           "batch_sizes": [1]}
    mutate(cfg)
    proc = bench("run", write_yaml(tmp_path / "c.yaml", cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert not (tmp_path / "results").exists()


def test_report_of_a_non_run_is_bad_input(tmp_path):
    proc = bench("report", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and "not a run directory (no meta.json)" in proc.stderr


def test_doctor_lists_backends_with_versions(tmp_path):
    proc = bench("doctor", cwd=tmp_path)
    assert proc.returncode == 0
    assert "onnxruntime" in proc.stdout and "tvm" in proc.stdout
    assert "0.27.0" in proc.stdout  # the pinned TVM


def test_ctrl_c_keeps_finished_cells_and_says_how_to_resume(tmp_path, mlp_onnx, monkeypatch):
    import json
    import os
    import signal
    import time

    import psutil

    from tests import fakes

    fakes.install(monkeypatch)  # BENCH_PLUGINS reaches the CLI process and its workers
    config = write_yaml(tmp_path / "c.yaml", {
        "name": "int", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": ["fake", "fake_hang"],
        "batch_sizes": [1, 2], "reference": {"backend": "fake"}, "timing": FAST_TIMING, "cell_timeout_s": 120,
    })
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    # Signal at a known moment, not after a hopeful sleep: the two fast cells are journaled and the
    # hanging cell's worker is registered (its pid file) and compiling (its phase file).
    deadline = time.monotonic() + 120
    journal = None
    while time.monotonic() < deadline:
        found = list((tmp_path / "results").glob("*/cells.jsonl")) if (tmp_path / "results").exists() else []
        pid_files = list((tmp_path / "results").glob("*/work/*fake_hang*.pid")) if found else []
        phases = [p.with_suffix(".phase") for p in pid_files]
        if (found and len(found[0].read_text().splitlines()) == 2 and phases and phases[0].is_file()
                and phases[0].read_text() == "compile"):
            journal = found[0]
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert journal is not None, "the two fast cells never finished, or the hanging cell never started"
    workers = psutil.Process(proc.pid).children(recursive=True)
    stderr = stderr_after(proc, signal.SIGINT)
    assert proc.returncode == 130
    run_dir = journal.parent
    assert f"bench run {config} --resume {run_dir.name}" in stderr.replace("\n", "")
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    assert len(pd.read_csv(run_dir / "cells.csv")) == 2
    assert wait_gone([w.pid for w in workers]) == []


def test_an_inherited_tvm_num_threads_does_not_override_the_configs_threads(tmp_path, mlp_onnx):
    import os

    config = write_yaml(tmp_path / "threads.yaml", {
        "name": "threads", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": ["tvm"], "batch_sizes": [1],
        "timing": FAST_TIMING, "repeats": 1, "threads": 1, "reference": {"backend": "tvm"},
    })
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(config), "--no-report"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TVM_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    cells = pd.read_csv(run_dir / "cells.csv")
    assert list(cells["threads"]) == [1]  # the pool TVM really started (tvm.runtime.num_threads in the worker)
