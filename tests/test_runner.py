"""The harness with a fake backend and a fake clock: statuses, journaling, exact timing figures."""

import json

import pandas as pd
import pytest

from bench.config import config_from_dict
from bench.runner import execute, plan
from tests import fakes
from tests.conftest import FAST_TIMING


@pytest.fixture
def fake_backends(monkeypatch):
    fakes.register(monkeypatch)


def _config(mlp_onnx, backends, **kw):
    return config_from_dict({
        "name": "h",
        "models": [{"name": "mlp", "source": str(mlp_onnx)}],
        "backends": backends,
        "precisions": ["fp32", "fp16"],
        "batch_sizes": [1, 3],
        "reference": {"backend": "fake"},
        "timing": {**FAST_TIMING, "min_iterations": 4},
        **kw,
    })


def _run(cfg, tmp_path):
    return execute(plan(cfg, tmp_path / "models"), tmp_path / "results", run_id="r1")


def test_one_bad_cell_never_loses_the_sweep(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_config(mlp_onnx, ["fake_broken", "fake", "fake_drift", "fake_absent"]), tmp_path)
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 4 * 2 * 2
    by = {(r.backend, r.precision, r.batch_size): r for r in cells.itertuples()}

    broken = by[("fake_broken", "fp32", 1)]
    assert broken.status == "failed" and broken.phase == "compile"
    assert broken.error.startswith("RuntimeError: unsupported operator FancyConv ... last line of the compiler log")
    assert (run_dir / "logs" / "mlp-fake_broken-fp32-b1.txt").read_text().count("FancyConv") >= 1

    good = by[("fake", "fp32", 3)]
    assert good.status == "ok" and good.accuracy_ok and good.validated
    assert (good.iterations, good.mean_ms, good.p99_ms, good.std_ms) == (4, 1.0, 1.0, 0.0)
    assert good.throughput_ips == pytest.approx(3000.0)
    assert good.max_abs_err == 0.0 and good.variant == "fake" and good.provider == "numpy"

    drift = by[("fake_drift", "fp32", 1)]
    assert drift.status == "ok" and drift.validated and not drift.accuracy_ok
    assert drift.max_abs_err == pytest.approx(0.5)
    assert drift.mean_ms == 1.0  # still timed, and published marked as drifted
    assert "beyond atol" in drift.accuracy_note

    absent = by[("fake_absent", "fp32", 1)]
    assert absent.status == "skipped" and "fake_absent is not installed here" in absent.error

    fp16 = by[("fake", "fp16", 1)]
    assert fp16.status == "skipped" and fp16.error == "fake does not build fp16; it builds fp32"


def test_samples_and_meta_are_stored(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake"])
    run_dir = _run(cfg, tmp_path)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert len(samples) == 2 * 4  # two timed cells, four samples each
    assert set(samples["latency_ms"]) == {1.0}
    assert pd.read_parquet(run_dir / "cells.parquet").shape[0] == 4
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["schema_version"] == 1
    assert meta["config_hash"] == cfg.digest()
    assert meta["config"]["tolerances"]["fp32"]["atol"] == 1e-4
    env = meta["environment"]
    assert env["threads"] == cfg.threads and env["cpu_count"] >= 1 and "onnx" in env["libraries"]
    assert meta["backends"]["fake"]["versions"] == {"fake": "0"}


def test_unavailable_reference_leaves_cells_timed_but_unvalidated(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake"], reference={"backend": "fake_absent"})
    cells = pd.read_csv(_run(cfg, tmp_path) / "cells.csv")
    ok = cells[cells.status == "ok"]
    assert len(ok) == 2
    assert not ok["validated"].any() and ok["accuracy_ok"].isna().all()
    assert ok["accuracy_note"].str.contains("reference backend fake_absent is unavailable").all()
    assert (ok["mean_ms"] == 1.0).all()


def test_interrupt_keeps_finished_cells(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake", "fake_interrupt"], precisions=["fp32"])
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path)
    run_dir = tmp_path / "results" / "r1"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    cells = pd.read_csv(run_dir / "cells.csv")
    assert list(cells["backend"]) == ["fake", "fake"] and (cells["status"] == "ok").all()


def test_report_from_stored_run_marks_drift_and_skips(fake_backends, mlp_onnx, tmp_path):
    from bench.report import PLOTS, build_report

    run_dir = _run(_config(mlp_onnx, ["fake", "fake_drift", "fake_absent"]), tmp_path)
    out = build_report(run_dir, tmp_path / "reports")
    for name in PLOTS.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| mlp | fake_drift | fp32 | 1 | fake | ok | 1 | 1 ± 0 | 1000 | 5.00e-01 | DRIFTED |" in md
    assert "fake_absent is not installed here" in md
    assert "outputs **DRIFTED**" in md
