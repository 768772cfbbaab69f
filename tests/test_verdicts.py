"""The CI verdicts: accuracy gate, golden outputs, run comparison, pytest-benchmark export."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench import goldens
from bench.config import config_from_dict
from bench.results import SCHEMA_VERSION, finalize, load_run, write_meta
from bench.runner import execute, plan, save_goldens
from bench.verdicts import compare_runs, gate, verdict
from tests import fakes
from tests.conftest import FAST_TIMING, write_yaml


@pytest.fixture
def fake_backends(monkeypatch):
    fakes.install(monkeypatch)


def _cfg(mlp_onnx, backends, **kw):
    return config_from_dict({"name": "v", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": backends,
                             "batch_sizes": [1, 2], "reference": {"backend": "fake"}, "timing": FAST_TIMING, **kw})


def _run(cfg, tmp_path, run_id="r"):
    return execute(plan(cfg, tmp_path / "models"), tmp_path / "results", run_id=run_id, isolate=False)


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_gate_verdicts_and_exit_codes(fake_backends, mlp_onnx, tmp_path):
    clean = _run(_cfg(mlp_onnx, ["fake", "fake_absent"]), tmp_path, "clean")
    drifting = _run(_cfg(mlp_onnx, ["fake", "fake_drift"]), tmp_path, "drifting")

    g = gate(load_run(clean))
    assert g.exit_code == 1 and len(g.missing) == 2 and set(g.missing["verdict"]) == {"skipped"}
    assert gate(load_run(clean), allow_missing=True).exit_code == 0

    g = gate(load_run(drifting))
    assert g.exit_code == 1
    assert set(g.drifted["backend"]) == {"fake_drift"} and list(g.drifted["max_abs_err"]) == pytest.approx([0.5, 0.5], abs=1e-6)

    proc = bench("gate", drifting, cwd=tmp_path)
    assert proc.returncode == 1
    assert "cells that drifted" in proc.stdout and "fake_drift" in proc.stdout and "FAIL" in proc.stdout
    assert bench("gate", clean, cwd=tmp_path).returncode == 1
    assert bench("gate", clean, "--allow-missing", cwd=tmp_path).returncode == 0


def test_gate_refuses_incomplete_runs_and_counts_lost_cells(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_cfg(mlp_onnx, ["fake"], batch_sizes=[1, 2, 3, 4, 5, 6, 7, 8]), tmp_path)
    assert bench("gate", run_dir, cwd=tmp_path).returncode == 0
    meta = json.loads((run_dir / "meta.json").read_text())
    # A run still `running` with 2 of its 8 cells: refused (bad input), judged only when asked.
    lines = (run_dir / "cells.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "cells.jsonl").write_text("".join(lines[:2]))
    finalize(run_dir)
    write_meta(run_dir, {**meta, "status": "running"})
    proc = bench("gate", run_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "'running' with 2 of 8 planned cells" in proc.stderr, proc.stderr
    proc = bench("gate", run_dir, "--allow-incomplete", cwd=tmp_path)
    assert proc.returncode == 1 and "6 not judged" in proc.stdout
    # A `complete` run whose table lost 5 of 8 cells fails: the plan, not the table, says what to judge.
    (run_dir / "cells.jsonl").write_text("".join(lines[:3]))
    finalize(run_dir)
    write_meta(run_dir, meta)
    g = gate(load_run(run_dir))
    assert g.exit_code == 1 and (g.rows["verdict"] == "missing").sum() == 5
    assert gate(load_run(run_dir), allow_missing=True).exit_code == 0


def test_tables_are_rebuilt_from_the_journal_and_a_corrupt_run_is_bad_input(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_cfg(mlp_onnx, ["fake"]), tmp_path)
    rows = len(pd.read_csv(run_dir / "cells.csv"))
    # The journal is the record: a torn table beside it is rebuilt, never trusted over it.
    (run_dir / "cells.parquet").write_bytes(b"PAR1 torn")
    assert bench("gate", run_dir, cwd=tmp_path).returncode == 0
    assert len(pd.read_parquet(run_dir / "cells.parquet")) == rows
    # Without the journal a torn table is a corrupt run directory: one line naming the file, exit 2.
    (run_dir / "cells.jsonl").unlink()
    (run_dir / "cells.parquet").write_bytes(b"PAR1 torn")
    for cmd in (["gate", run_dir], ["report", run_dir], ["compare", run_dir, run_dir], ["export", run_dir, "-o", tmp_path / "x.json"]):
        proc = bench(*cmd, cwd=tmp_path)
        assert proc.returncode == 2, (cmd, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "cells.parquet: unreadable" in proc.stderr
    (run_dir / "meta.json").write_text('{"schema_version": 1, "run_id": ')
    proc = bench("gate", run_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "meta.json:1: not valid JSON" in proc.stderr


def test_an_internal_error_exits_3_with_one_line(monkeypatch, capsys, tmp_path):
    import bench.report
    from bench.cli import main

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(bench.report, "build_report", broken)
    assert main(["report", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err


def test_gate_rejudges_stored_outputs_under_other_tolerances(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_cfg(mlp_onnx, ["fake", "fake_drift"]), tmp_path)
    loose = write_yaml(tmp_path / "loose.yaml", {"fp32": {"atol": 0.6, "rtol": 0.0}})
    assert bench("gate", run_dir, "--tolerances", loose, cwd=tmp_path).returncode == 0
    tight = write_yaml(tmp_path / "tight.yaml", {"fp32": {"atol": 0.4, "rtol": 0.0}})
    assert bench("gate", run_dir, "--tolerances", tight, cwd=tmp_path).returncode == 1
    bad = write_yaml(tmp_path / "bad.yaml", {"fp33": {"atol": 0.1, "rtol": 0.1}})
    proc = bench("gate", run_dir, "--tolerances", bad, cwd=tmp_path)
    assert proc.returncode == 2 and "bad.yaml: fp33" in proc.stderr
    assert bench("gate", tmp_path / "nowhere", cwd=tmp_path).returncode == 2


def test_goldens_replace_the_reference_backend(fake_backends, mlp_onnx, tmp_path):
    cfg = _cfg(mlp_onnx, ["fake", "fake_drift"])
    paths = save_goldens(plan(cfg, tmp_path / "models"), tmp_path / "goldens", isolate=False)
    assert [p.name for p in paths] == ["mlp-b1.npz", "mlp-b2.npz"]
    stored = goldens.load(paths[1])
    assert stored.meta["batch_size"] == 2 and stored.meta["seed"] == 0 and stored.meta["producer"] == "fake/fp32"
    assert stored.iterations[0]["y"].shape == (2, 4)

    # The reference backend is unavailable: only the goldens can validate now.
    with_goldens = _cfg(mlp_onnx, ["fake", "fake_drift"], goldens=str(tmp_path / "goldens"), reference={"backend": "fake_absent"})
    cells = pd.read_csv(_run(with_goldens, tmp_path, "g") / "cells.csv")
    assert cells["validated"].all() and set(cells["reference"]) == {"goldens"}
    assert cells.set_index("backend")["accuracy_ok"].groupby(level=0).all().to_dict() == {"fake": True, "fake_drift": False}

    # Goldens for other inputs (another seed) are refused, not silently compared.
    stale = _cfg(mlp_onnx, ["fake"], goldens=str(tmp_path / "goldens"), seed=7)
    cells = pd.read_csv(_run(stale, tmp_path, "s") / "cells.csv")
    assert not cells["validated"].any()
    assert cells["accuracy_note"].str.contains("seed: stored 0, needed 7").all()


def _synthetic_run(root, name, samples_ms, cpu="cpu A", status=None):
    """A stored run; samples_ms per backend: one array (one process), or a list of arrays (processes)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_meta(run_dir, {"schema_version": SCHEMA_VERSION, "run_id": name, "status": "complete",
                         "environment": {"cpu_model": cpu, "libraries": {"onnxruntime": "1"}}, "config": {}})
    with open(run_dir / "cells.jsonl", "w") as f:
        for backend, ms in samples_ms.items():
            procs = ms if isinstance(ms, list) else [ms]
            st = (status or {}).get(backend, "ok")
            row = {"run_id": name, "model": "m", "backend": backend, "precision": "fp32", "batch_size": 1,
                   "variant": "v", "status": st, "error": None if st == "ok" else "worker killed by signal SIGSEGV",
                   "p50_ms": float(np.median(np.concatenate(procs)))}
            samples = [[int(v * 1e6) for v in p] for p in procs] if st == "ok" else []
            f.write(json.dumps({"row": row, "samples_ns": samples}) + "\n")
    finalize(run_dir)
    return run_dir


def test_compare_verdicts_on_known_shifts(tmp_path):
    rng = np.random.default_rng(1)
    base = 10 + rng.gamma(2.0, 0.1, size=400)  # right-skewed, like real latencies
    a = _synthetic_run(tmp_path, "a", {"same": base, "slow": base, "fast": base, "tiny": base})
    b = _synthetic_run(tmp_path, "b", {"same": base.copy(), "slow": base * 1.2, "fast": base * 0.8, "tiny": base * 1.01})
    table = compare_runs(load_run(a), load_run(b), threshold=0.05).set_index("backend")
    assert table.loc["same", "verdict"] == "no change" and table.loc["same", "change"] == 0
    assert table.loc["slow", "verdict"] == "slower" and table.loc["slow", "change"] == pytest.approx(0.2)
    assert table.loc["slow", "ci_low"] > 0.15
    assert table.loc["fast", "verdict"] == "faster"
    assert table.loc["tiny", "verdict"] == "no change"

    proc = bench("compare", a, b, "--fail-on-regression", "10%", cwd=tmp_path)
    assert proc.returncode == 1 and "1 cell(s) slower by more than 10.0%" in proc.stdout
    assert bench("compare", a, b, "--fail-on-regression", "25%", cwd=tmp_path).returncode == 0


def test_identical_samples_are_never_slower(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(5):
        ms = 1 + rng.exponential(0.3, size=int(rng.integers(5, 60)))  # small, noisy samples
        a = _synthetic_run(tmp_path / str(i), "a", {"x": ms})
        b = _synthetic_run(tmp_path / str(i), "b", {"x": ms.copy()})
        v = compare_runs(load_run(a), load_run(b)).iloc[0]["verdict"]
        assert v in ("no change", "inconclusive")


def test_process_level_noise_is_not_called_a_change(tmp_path):
    # Each process has its own level (as between processes on a shared machine) and tight samples.
    # Resampling pooled calls calls this pair `slower`; resampling processes first does not.
    from bench.verdicts import ratio_ci

    rng = np.random.default_rng(3)
    a_procs = [lv + rng.normal(0, 0.002, size=500) for lv in (1.00, 1.04, 0.97)]
    b_procs = [lv + rng.normal(0, 0.002, size=500) for lv in (1.08, 1.05, 1.10)]
    pooled_lo, pooled_hi = ratio_ci([np.concatenate(a_procs)], [np.concatenate(b_procs)])
    assert verdict(pooled_lo, pooled_hi, 0.05) == "slower"  # what the pooled bootstrap concluded
    a = _synthetic_run(tmp_path, "a", {"x": a_procs})
    b = _synthetic_run(tmp_path, "b", {"x": b_procs})
    assert sorted(load_run(a).samples["process"].unique()) == [0, 1, 2]
    row = compare_runs(load_run(a), load_run(b)).iloc[0]
    assert row["verdict"] == "inconclusive" and row["ci_low"] < 0.05 < row["ci_high"]


def test_cells_lost_in_either_run_are_listed_and_fail_the_regression_gate(tmp_path):
    ms = np.full(50, 1.0)
    a = _synthetic_run(tmp_path, "a", {"x": ms, "y": ms, "z": ms})
    b = _synthetic_run(tmp_path, "b", {"x": ms, "y": ms}, status={"y": "crashed"})
    table = compare_runs(load_run(a), load_run(b)).set_index("backend")
    assert table.loc["x", "verdict"] == "no change"
    assert table.loc["y", "verdict"] == "missing" and "B: crashed" in table.loc["y", "note"]
    assert table.loc["z", "verdict"] == "missing" and "B: not in the run" in table.loc["z", "note"]
    proc = bench("compare", a, b, "--fail-on-regression", "5%", cwd=tmp_path)
    assert proc.returncode == 1 and "2 cell(s) missing or not ok" in proc.stdout, proc.stdout
    assert bench("compare", a, b, "--fail-on-regression", "5%", "--allow-missing", cwd=tmp_path).returncode == 0
    # No cell in common is bad input, not a pass.
    c = _synthetic_run(tmp_path, "c", {"w": ms})
    proc = bench("compare", a, c, "--fail-on-regression", "5%", cwd=tmp_path)
    assert proc.returncode == 2 and "no cell was timed in both runs" in proc.stderr


def test_verdict_rule():
    assert verdict(0.06, 0.2, 0.05) == "slower"
    assert verdict(-0.2, -0.06, 0.05) == "faster"
    assert verdict(-0.04, 0.04, 0.05) == "no change"
    assert verdict(0.01, 0.09, 0.05) == "inconclusive"


def test_compare_warns_or_refuses_on_different_environments(tmp_path):
    a = _synthetic_run(tmp_path, "a", {"x": np.full(20, 1.0)})
    b = _synthetic_run(tmp_path, "b", {"x": np.full(20, 1.0)}, cpu="cpu B")
    proc = bench("compare", a, b, cwd=tmp_path)
    assert proc.returncode == 0 and "WARNING: environments differ" in proc.stderr and "cpu_model" in proc.stderr
    proc = bench("compare", a, b, "--strict-env", cwd=tmp_path)
    assert proc.returncode == 2 and "environments differ" in proc.stderr


def test_export_is_pytest_benchmark_json(tmp_path):
    ms = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    run_dir = _synthetic_run(tmp_path, "a", {"x": ms})
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["environment"].update(hostname="gpu-box-7", machine="aarch64")
    write_meta(run_dir, meta)
    with open(run_dir / "cells.jsonl") as f:
        entry = json.loads(f.readline())
    entry["row"]["timer"] = "cuda_event_pair"
    (run_dir / "cells.jsonl").write_text(json.dumps(entry) + "\n")
    finalize(run_dir)
    out = tmp_path / "pb.json"
    assert bench("export", run_dir, "-o", out, cwd=tmp_path).returncode == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    (b,) = data["benchmarks"]
    assert b["name"] == "m[x-fp32-b1]" and b["group"] == "m" and b["params"]["batch_size"] == 1
    # The machine and the timer that measured it, not the exporting machine's name and a fixed timer.
    assert data["machine_info"]["node"] == "gpu-box-7" and data["machine_info"]["machine"] == "aarch64"
    assert b["options"]["timer"] == "cuda_event_pair" and b["extra_info"]["host"] == "gpu-box-7"
    s = b["stats"]
    assert s["rounds"] == 5 and s["median"] == pytest.approx(0.003) and s["min"] == pytest.approx(0.001)
    assert s["iqr_outliers"] == 1 and s["ops"] == pytest.approx(1 / 0.022)


def test_the_gate_never_fails_open_when_the_grid_cannot_be_planned_again(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_cfg(mlp_onnx, ["fake"]), tmp_path)
    # Without the plugin that ran it, the run's config names an unknown backend: the cells it lacks
    # cannot be named, so the gate refuses (2) instead of judging only what the table holds.
    import os

    env = {k: v for k, v in os.environ.items() if k != "BENCH_PLUGINS"}
    proc = subprocess.run([sys.executable, "-m", "bench", "gate", str(run_dir)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2 and "cannot be planned again" in proc.stderr and "unknown backend 'fake'" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bench", "gate", str(run_dir), "--allow-missing"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    with_plugin = bench("gate", run_dir, cwd=tmp_path)
    assert with_plugin.returncode == 0, with_plugin.stderr


def test_the_ci_workflow_bench_steps_run(mlp_onnx, tmp_path):
    """.github/workflows/bench.yml's own bench commands, on a tiny config instead of the quickstart."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    workflow = yaml.safe_load((root / ".github" / "workflows" / "bench.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if ".venv/bin/bench" in s.get("run", "")]
    assert [s["name"] for s in steps] == ["Benchmark the quickstart grid", "Gate accuracy drift", "Export for dashboards",
                                          "A/B against the base"]
    installs = [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if s.get("name") == "Install"]
    assert len(installs) == len(workflow["jobs"]) and all("make install" in i for i in installs)  # every extra the tests need
    config = write_yaml(tmp_path / "tiny.yaml", {"name": "ci", "models": [{"name": "mlp", "source": str(mlp_onnx)}],
                                                  "backends": ["onnxruntime"], "batch_sizes": [1], "timing": FAST_TIMING,
                                                  "repeats": 1})
    for step in steps:
        command = re.sub(r"\S*configs/quickstart\.yaml", str(config), re.sub(r"\.venv/bin/bench", f"{sys.executable} -m bench", step["run"]))
        command = command.replace("--fail-on-regression 5%", "--fail-on-regression 50%")  # the A/A here: the exit path, not the noise
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "PYTHONPATH": str(root)})
        assert proc.returncode == 0, (step["name"], proc.stderr[-2000:])
    assert (tmp_path / "results" / "pytest-benchmark.json").is_file()
    assert len(list((tmp_path / "results").glob("*/ab.csv"))) == 2


def test_ab_of_one_config_with_itself_on_onnxruntime_is_never_a_change(mlp_onnx, tmp_path):
    """The A/A check, on a real engine, through the CLI: the same cells twice, interleaved."""
    cfg = write_yaml(tmp_path / "c.yaml", {"name": "aa", "models": [{"name": "mlp", "source": str(mlp_onnx)}],
                                           "backends": ["onnxruntime"], "batch_sizes": [1, 4], "threads": 1, "timing": FAST_TIMING})
    proc = bench("ab", cfg, cfg, "--rounds", "6", "--max-rounds", "6", "--threshold", "25%", "--fail-on-regression", "25%",
                 "--results-dir", tmp_path / "results", "--models-dir", tmp_path / "models", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted((tmp_path / "results").iterdir())
    assert [r.name[-2:] for r in runs] == ["-A", "-B"]
    table = pd.read_csv(runs[1] / "ab.csv")
    assert len(table) == 2 and set(table["verdict"]) <= {"no change", "inconclusive"}
    assert (table["rounds"] == 6).all() and table["ci_low"].le(table["change"]).all() and table["change"].le(table["ci_high"]).all()
    for r in runs:  # each variant a run like any other: validated rows, as many processes as rounds
        cells = pd.read_csv(r / "cells.csv")
        assert (cells["status"] == "ok").all() and cells["validated"].all()
        assert cells.set_index("batch_size")["repeats"].to_dict() == table.set_index("batch_size")["rounds"].to_dict()


def test_cross_run_intervals_include_the_drift_seen_between_repeated_runs(tmp_path):
    """Six runs of one grid whose level drifts from run to run (as on a shared VM) while each run's
    processes agree closely: within-run intervals call two of them different; the drift estimated
    from the other runs does not, and says where it came from."""
    from bench.history import estimate, similar_runs

    rng = np.random.default_rng(4)
    levels = [1.00, 1.11, 0.95, 1.04, 0.92, 1.07]  # run-to-run drift, about 7% sd
    runs = [_synthetic_run(tmp_path / "results", f"r{i}", {"x": [lv + rng.normal(0, 0.003, 300) for _ in range(3)],
                                                            "y": [2 * lv + rng.normal(0, 0.006, 300) for _ in range(3)]})
            for i, lv in enumerate(levels)]
    a, b = load_run(runs[0]), load_run(runs[1])
    bare = compare_runs(a, b).set_index("backend")
    assert set(bare["verdict"]) == {"slower"}  # the within-run interval alone: a false alarm on identical code
    drift = estimate(similar_runs(a, [tmp_path / "results"], exclude=[b.run_dir]))
    assert drift.runs == 5 and drift.pooled == pytest.approx(np.std(np.log([1.00, 0.95, 1.04, 0.92, 1.07]), ddof=1), rel=0.1)
    table = compare_runs(a, b, drift=drift).set_index("backend")
    assert table["verdict"].isin(["no change", "inconclusive"]).all()
    assert table["note"].str.contains(r"run-to-run drift sd .* \(this cell in 5 of 5 similar runs; pooled over cells\)").all()
    assert (table["ci_low"] < bare["ci_low"]).all() and (table["ci_high"] > bare["ci_high"]).all()
    # a change far beyond the drift is still called
    c = _synthetic_run(tmp_path / "results", "slow", {"x": [1.6 + rng.normal(0, 0.003, 300) for _ in range(3)],
                                                      "y": [3.2 + rng.normal(0, 0.006, 300) for _ in range(3)]})
    assert set(compare_runs(a, load_run(c), drift=drift)["verdict"]) == {"slower"}
    # through the CLI: history from the runs' own directory by default; none when asked, or when there is none
    proc = bench("compare", runs[0], runs[1], cwd=tmp_path)
    assert proc.returncode == 0 and "slower" not in proc.stdout and "run-to-run drift from 6 similar runs" in proc.stdout
    assert "slower: 2" in bench("compare", runs[0], runs[1], "--no-history", cwd=tmp_path).stdout
    lonely = [_synthetic_run(tmp_path / "alone", n, {"x": [np.full(50, 1.0)]}) for n in ("p", "q")]
    proc = bench("compare", *lonely, cwd=tmp_path)
    assert "no run-to-run history (1 similar run(s), 3 needed)" in proc.stderr.replace("\n", " ")
