"""Faults and bad input through the real CLI in a subprocess: nothing measured is lost, nothing
half-written passes for complete, every error is one clear line. Signals are sent at moments the
test controls (the worker's pid file and phase file say where it is), never after a hopeful sleep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests import fakes
from tests.conftest import FAST_TIMING, stderr_after, wait_gone, write_yaml


@pytest.fixture
def fake_backends(monkeypatch):
    fakes.install(monkeypatch)


def bench(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def _config(tmp_path, mlp_onnx, backends=("fake",), **kw):
    return write_yaml(tmp_path / "c.yaml", {"name": "f", "models": [{"name": "mlp", "source": str(mlp_onnx)}],
                                            "backends": list(backends), "batch_sizes": [1, 2, 3, 4],
                                            "reference": {"backend": "fake"}, "timing": FAST_TIMING, "repeats": 1, **kw})


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    return lines[0]


# --- the journal ------------------------------------------------------------------------------------


def test_a_torn_journal_is_healed_and_resumed_twice_without_loss_or_rerun(fake_backends, mlp_onnx, tmp_path):
    config = _config(tmp_path, mlp_onnx)
    assert bench("run", config, "--no-report", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "results").iterdir()
    journal = run_dir / "cells.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    lines[1] = lines[1][:-40] + "\n"  # a line cut short, records after it
    journal.write_text("".join(lines))

    proc = bench("run", config, "--no-report", "--resume", run_dir.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dropped 1 torn line(s)" in proc.stderr and "kept 3 whole records" in proc.stderr
    first = journal.read_text()
    records = [json.loads(x) for x in first.splitlines()]
    keys = [(r["row"]["backend"], r["row"]["batch_size"]) for r in records]
    assert sorted(keys) == [("fake", b) for b in (1, 2, 3, 4)]  # no loss, no duplicate
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 4 and json.loads((run_dir / "meta.json").read_text())["status"] == "complete"

    proc = bench("run", config, "--no-report", "--resume", run_dir.name, cwd=tmp_path)
    assert proc.returncode == 0 and "torn" not in proc.stderr
    assert journal.read_text() == first  # nothing re-run


# --- signals and workers ----------------------------------------------------------------------------


def _start_hanging_run(tmp_path, mlp_onnx):
    """A run whose second backend hangs while compiling; returns (process, run dir, worker pid) once
    the parent is waiting on that worker (its pid file exists and it announced `compile`)."""
    config = _config(tmp_path, mlp_onnx, backends=("fake", "fake_hang"), cell_timeout_s=300, batch_sizes=[1])
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(config), "--no-report"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid_files = list((tmp_path / "results").glob("*/work/*fake_hang*.pid")) if (tmp_path / "results").exists() else []
        phases = list((tmp_path / "results").glob("*/work/*fake_hang*.phase")) if pid_files else []
        if pid_files and phases and phases[0].read_text() == "compile":
            return proc, pid_files[0].parent.parent, int(pid_files[0].read_text().split()[0]), config
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the hanging cell's worker never started")


def test_killing_the_parent_kills_its_worker(fake_backends, mlp_onnx, tmp_path):
    proc, run_dir, worker, config = _start_hanging_run(tmp_path, mlp_onnx)
    assert psutil.pid_exists(worker)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # The hanging cell would run for minutes: gone within the bound means it died with its parent.
    assert wait_gone([worker]) == [], "the worker outlived its parent"
    # Nothing left to race with: the pid file a resume checks names no live process.
    from bench.worker import alive_worker

    assert [alive_worker(p) for p in (run_dir / "work").glob("*.pid")] in ([], [None])


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_interrupt_like_ctrl_c(fake_backends, mlp_onnx, tmp_path, sig, code):
    proc, run_dir, worker, config = _start_hanging_run(tmp_path, mlp_onnx)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"--resume {run_dir.name}" in stderr.replace("\n", "") and signal.Signals(sig).name in stderr
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    assert len(pd.read_csv(run_dir / "cells.csv")) == 1  # the finished cell is kept
    assert wait_gone([worker]) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_report_build_keeps_the_finished_run(fake_backends, mlp_onnx, tmp_path, sig, code):
    config = _config(tmp_path, mlp_onnx, batch_sizes=[1])
    marker = tmp_path / "report-building"
    # SIGINT as a terminal gives it: a suite started in the background (`make test &`) inherits SIGINT ignored, as
    # POSIX shells set it for background jobs, and bench rightly keeps an inherited SIG_IGN outside its sweep
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(config)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "FAKE_PAUSE_REPORT": str(marker)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()
    stderr = stderr_after(proc, sig)
    assert proc.returncode == code, stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    one_line = " ".join(stderr.split())
    assert signal.Signals(sig).name in one_line and f"build the report with: bench report results/{run_dir.name}" in one_line
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"  # the run itself finished
    assert len(pd.read_csv(run_dir / "cells.csv")) == 1
    assert not (tmp_path / "reports" / run_dir.name / "report.md").exists()  # no half report passes for one
    rebuilt = bench("report", run_dir, cwd=tmp_path)
    assert rebuilt.returncode == 0 and (tmp_path / "reports" / run_dir.name / "report.md").is_file(), rebuilt.stderr


def test_resume_refuses_while_a_worker_of_the_run_lives(fake_backends, mlp_onnx, tmp_path):
    config = _config(tmp_path, mlp_onnx)
    assert bench("run", config, "--no-report", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "results").iterdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (run_dir / "work" / "mlp-fake-fp32-b9.pid").write_text(f"{sleeper.pid} {start} mlp-fake-fp32-b9")
        line = _one_error_line(bench("run", config, "--resume", run_dir.name, cwd=tmp_path))
        assert f"still running (pid {sleeper.pid} (mlp-fake-fp32-b9))" in line
    finally:
        sleeper.kill()
        sleeper.wait()
    assert bench("run", config, "--no-report", "--resume", run_dir.name, cwd=tmp_path).returncode == 0


# --- bad input: one line, exit 2 ----------------------------------------------------------------------


def test_bad_paths_exit_2_with_one_line(fake_backends, mlp_onnx, tmp_path):
    config = _config(tmp_path, mlp_onnx, batch_sizes=[1])
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    line = _one_error_line(bench("run", config, "--results-dir", a_file, cwd=tmp_path))
    assert str(a_file) in line
    line = _one_error_line(bench("run", config, "--results-dir", tmp_path / "r", "--reports-dir", a_file, cwd=tmp_path))
    assert str(a_file) in line
    line = _one_error_line(bench("run", config, "--results-dir", tmp_path / "r2", cwd=tmp_path,
                                 env={**os.environ, "BENCH_CACHE_DIR": str(a_file)}))
    assert str(a_file) in line
    for meta in (tmp_path / "r2").glob("*/meta.json"):
        assert json.loads(meta.read_text())["status"] != "running"  # never left saying it runs
    assert not list((tmp_path / "r").iterdir())  # refused before anything ran
    assert bench("run", config, "--results-dir", tmp_path / "r3", "--no-report", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "r3").iterdir()
    line = _one_error_line(bench("export", run_dir, "-o", tmp_path, cwd=tmp_path))
    assert str(tmp_path) in line


@pytest.mark.parametrize("options, expected", [
    ({"onnxruntime": {"graph_optimization_level": "max"}}, "onnxruntime.graph_optimization_level: Input should be 'disabled', 'basic', 'extended' or 'all', got 'max'"),
    ({"tvm_tuned": {"trails": 8}}, "tvm_tuned.trails: unknown option; tvm_tuned takes: trials=64, min_trials_per_task=2"),
    ({"tvm_tuned": {"trials": "8"}}, "tvm_tuned.trials: Input should be a valid integer, got '8'"),
])
def test_backend_options_are_typed(tmp_path, options, expected):
    config = write_yaml(tmp_path / "c.yaml", {"name": "o", "models": [{"name": "m", "source": "zoo:resnet18-tiny"}],
                                              "backends": ["onnxruntime", "tvm_tuned"], "batch_sizes": [1], "backend_options": options})
    line = _one_error_line(bench("run", config, cwd=tmp_path))
    assert "c.yaml:" in line and expected in line
    assert not (tmp_path / "results").exists()


def test_duplicate_keys_and_loose_types_are_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("name: d\nmodels:\n  - {name: m, source: 'zoo:resnet18-tiny'}\nbackends: [onnxruntime]\n"
                                       "batch_sizes: [1]\nname: e\n")
    line = _one_error_line(bench("run", tmp_path / "dup.yaml", cwd=tmp_path))
    assert "dup.yaml:6: name: duplicate key (first at line 1)" in line
    config = write_yaml(tmp_path / "c.yaml", {"name": "t", "models": [{"name": "m", "source": "zoo:resnet18-tiny"}],
                                              "backends": ["onnxruntime"], "batch_sizes": [True, "4"]})
    proc = bench("run", config, cwd=tmp_path)
    assert proc.returncode == 2 and "batch_sizes[0]: Input should be a valid integer" in proc.stderr
    assert "batch_sizes[1]: Input should be a valid integer" in proc.stderr


def test_a_missing_model_names_the_config_and_entry(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {"name": "m", "models": [{"name": "a", "source": "zoo:resnet18-tiny"},
                                                                      {"name": "b", "source": "missing.onnx"}],
                                              "backends": ["onnxruntime"], "batch_sizes": [1]})
    line = _one_error_line(bench("run", config, "--dry-run", cwd=tmp_path))
    assert "c.yaml: models[1] (b).source: model file 'missing.onnx' not found" in line
    assert line.count(str(tmp_path / "missing.onnx")) == 1  # each place looked at, once


# --- the machine-wide timing lock ---------------------------------------------------------------------


def test_a_second_run_waits_for_the_timing_lock_or_refuses(fake_backends, mlp_onnx, tmp_path, monkeypatch):
    from bench import machine_lock

    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path))
    config = _config(tmp_path, mlp_onnx, batch_sizes=[1])
    with machine_lock.timing("run other-run, cell m onnxruntime fp32 b1"):
        line = _one_error_line(bench("run", config, "--no-wait", cwd=tmp_path))
        assert "another bench run is timing on this machine (run other-run, cell m onnxruntime fp32 b1" in line
        proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(config), "--no-report"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        deadline, waiting = time.monotonic() + 120, False
        while time.monotonic() < deadline and not waiting:
            phases = list((tmp_path / "results").glob("*/work/*.phase")) if (tmp_path / "results").exists() else []
            waiting = any(p.read_text().startswith("waiting to time: the machine's timing lock is held by run other-run")
                          for p in phases)
            time.sleep(0.05)
        assert waiting, "the second run never waited for the lock"
        assert proc.poll() is None  # still waiting while the lock is held
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (run_dir,) = [d for d in (tmp_path / "results").iterdir()]
    assert (pd.read_csv(run_dir / "cells.csv")["lock_wait_s"] > 0).all()


# --- the zoo's exports --------------------------------------------------------------------------------


def test_a_damaged_zoo_export_is_detected_and_exported_again(tmp_path):
    import os

    from bench.config import ModelSpec
    from bench.models.prepare import inspect_model, materialize, zoo_export_ok

    info = inspect_model(ModelSpec(name="m", source="zoo:resnet18-tiny"), 0, 0, [1], tmp_path)
    first = materialize(info)
    assert zoo_export_ok(info.path) and info.path.with_name(info.path.name + ".sha256").is_file()
    size = info.path.stat().st_size
    with open(info.path, "r+b") as f:  # truncated, as a full disk or a killed copy leaves it
        f.truncate(size // 2)
    assert not zoo_export_ok(info.path)
    stale = tmp_path / f".{info.path.name}.999999999.tmp"  # a killed export's leftover (no such pid)
    stale.write_bytes(b"")
    again = materialize(info)
    assert again.sha256 == first.sha256 and info.path.stat().st_size == size and zoo_export_ok(info.path)
    assert not stale.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
