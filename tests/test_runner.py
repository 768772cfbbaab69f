"""The harness with a fake backend and a fake clock: statuses, journaling, exact timing figures."""

import json

import pandas as pd
import pytest

from bench.config import config_from_dict
from bench.errors import BenchError
from bench.rundir import _RunLock
from bench.runner import Reporter, execute, plan
from tests import fakes
from tests.conftest import FAST_TIMING


@pytest.fixture
def fake_backends(monkeypatch):
    fakes.install(monkeypatch)


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


def _run(cfg, tmp_path, isolate=False, run_id="r1", **kw):
    """In-process by default: these tests are about the harness's bookkeeping, not isolation."""
    return execute(plan(cfg, tmp_path / "models"), tmp_path / "results", run_id=run_id, isolate=isolate, **kw)


class InterruptAfter(Reporter):
    """Ctrl-C after `n` finished cells, as a user would press it between two cells."""

    def __init__(self, n):
        self.n = n

    def done(self, row):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_a_profile_that_cannot_run_or_is_interrupted_keeps_the_timed_row(fake_backends, mlp_onnx, tmp_path):
    import json

    from bench.results import read_journal

    run_dir = _run(_config(mlp_onnx, ["fake"], precisions=["fp32"], batch_sizes=[1], profile=True), tmp_path)
    cells = pd.read_csv(run_dir / "cells.csv")
    assert cells["status"].tolist() == ["ok"] and "has no per-layer profiler" in cells["profile_error"].iloc[0]
    saved = json.loads((run_dir / "profiles" / "mlp-fake-fp32-b1.json").read_text())
    assert saved["status"] == "skipped" and "profile" not in saved
    # Ctrl-C while the first cell is profiled: its timed row is journaled, the sweep stops there, the run says so
    cfg = _config(mlp_onnx, ["fake_profile_interrupt", "fake"], precisions=["fp32"], batch_sizes=[1], profile=True)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path, run_id="r2")
    rows = [e["row"] for e in read_journal(tmp_path / "results" / "r2")]
    assert [(r["backend"], r["status"], r["profile_error"]) for r in rows] == [("fake_profile_interrupt", "ok", "interrupted")]
    assert rows[0]["p50_ms"] > 0
    assert json.loads((tmp_path / "results" / "r2" / "meta.json").read_text())["status"] == "interrupted"


def test_one_bad_cell_never_loses_the_sweep(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_config(mlp_onnx, ["fake_broken", "fake", "fake_drift", "fake_absent"]), tmp_path)
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 4 * 2 * 2
    by = {(r.backend, r.precision, r.batch_size): r for r in cells.itertuples()}

    broken = by[("fake_broken", "fp32", 1)]
    assert broken.status == "failed" and broken.phase == "compile"
    assert broken.error == "RuntimeError: unsupported operator FancyConv more detail last line of the compiler log"  # short: whole
    assert (run_dir / "logs" / "mlp-fake_broken-fp32-b1.txt").read_text().count("FancyConv") >= 1

    good = by[("fake", "fp32", 3)]
    assert good.status == "ok" and good.accuracy_ok and good.validated
    assert (good.repeats, good.iterations, good.mean_ms, good.p99_ms, good.std_ms) == (3, 12, 1.0, 1.0, 0.0)  # 3 processes by default
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
    assert len(samples) == 2 * 3 * 4  # two timed cells, three processes each (the default), four samples each
    assert samples.groupby(["batch_size", "process"]).size().to_dict() == {(b, i): 4 for b in (1, 3) for i in range(3)}
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


def test_interrupt_keeps_finished_cells_and_resume_matches_an_uninterrupted_run(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake", "fake_drift", "fake_absent"])
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path, reporter=InterruptAfter(5))
    run_dir = tmp_path / "results" / "r1"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert len(pd.read_csv(run_dir / "cells.csv")) == 5

    _run(cfg, tmp_path, resume=True)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"
    resumed = pd.read_csv(run_dir / "cells.csv")
    whole = pd.read_csv(_run(cfg, tmp_path, run_id="r2") / "cells.csv")
    volatile = ["run_id", "compile_s", "peak_rss_mb", "lock_wait_s", "worker_ready_s"]  # wall-clock facts of the attempt
    key = ["model", "backend", "precision", "batch_size"]
    pd.testing.assert_frame_equal(
        resumed.drop(columns=volatile).sort_values(key).reset_index(drop=True),
        whole.drop(columns=volatile).sort_values(key).reset_index(drop=True),
    )
    assert len(resumed) == 12 and not resumed.duplicated(key).any()


def test_resume_refuses_a_changed_config(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake"])
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path, reporter=InterruptAfter(1))
    changed = _config(mlp_onnx, ["fake"], timing={**FAST_TIMING, "min_iterations": 9})
    with pytest.raises(BenchError, match=r"config changed since that run.*timing.min_iterations: 4 -> 9"):
        _run(changed, tmp_path, resume=True)


def test_a_run_being_written_is_locked(fake_backends, mlp_onnx, tmp_path):
    run_dir = _run(_config(mlp_onnx, ["fake"]), tmp_path)
    lock = _RunLock(run_dir)
    try:
        with pytest.raises(BenchError, match="another bench process is writing this run"):
            _run(_config(mlp_onnx, ["fake"]), tmp_path, resume=True)
    finally:
        lock.release()


def test_repeats_pool_samples_from_fresh_processes(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake"], precisions=["fp32"], batch_sizes=[1], repeats=3)
    (row,) = pd.read_csv(_run(cfg, tmp_path, isolate=True) / "cells.csv").itertuples()
    assert (row.repeats, row.iterations, row.repeat_p50_spread) == (3, 12, 0.0)
    assert row.status == "ok" and row.accuracy_ok and not row.unstable
    assert (row.p50_ci_low_ms, row.p50_ci_high_ms, row.outliers) == (1.0, 1.0, 0)
    assert row.peak_rss_mb > 10


def test_crashing_hanging_and_raising_cells_cost_only_themselves(fake_backends, mlp_onnx, tmp_path):
    import psutil

    cfg = _config(mlp_onnx, ["fake_segfault", "fake", "fake_hang", "fake_killed", "fake_broken"],
                  precisions=["fp32"], batch_sizes=[1], cell_timeout_s=8)
    run_dir = _run(cfg, tmp_path, isolate=True)
    by = {r.backend: r for r in pd.read_csv(run_dir / "cells.csv").itertuples()}
    assert by["fake"].status == "ok" and by["fake"].accuracy_ok and by["fake"].mean_ms == 1.0
    assert by["fake_segfault"].status == "crashed"
    assert by["fake_segfault"].error.startswith("worker killed by signal SIGSEGV")
    assert by["fake_killed"].status == "crashed" and "SIGKILL (also what the out-of-memory killer sends)" in by["fake_killed"].error
    assert by["fake_hang"].status == "timeout" and "cell_timeout_s=8s" in by["fake_hang"].error
    assert by["fake_broken"].status == "failed" and by["fake_broken"].phase == "compile"
    from bench.worker import service_pids

    left = [c for c in psutil.Process().children(recursive=True) if c.pid not in service_pids()]
    assert left == []  # the hung worker's group is gone (the fork server stays, for the next cells)
    assert "Fatal Python error: Segmentation fault" in (run_dir / "logs" / "mlp-fake_segfault-fp32-b1.txt").read_text()


def test_report_from_stored_run_marks_drift_and_skips(fake_backends, mlp_onnx, tmp_path):
    from bench.report import PLOTS, build_report

    run_dir = _run(_config(mlp_onnx, ["fake", "fake_drift", "fake_absent"]), tmp_path)
    out = build_report(run_dir, tmp_path / "reports")
    for key in ("latency", "throughput", "speedup", "accuracy"):  # single-stream cells only: no load plots
        assert (out / PLOTS[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / PLOTS["latency_throughput"]).exists() and not (out / PLOTS["max_qps"]).exists()
    md = (out / "report.md").read_text()
    # GFLOP/s: the mlp's two MatMuls are 2 x (8 x 16 + 16 x 4) = 384 FLOPs per sample, at 1 ms; a fake
    # backend names no device, so no share of the CPU's peak
    assert "| mlp | fake_drift | fp32 | 1 | fake | ok | 1 | 1 – 1 | 1 ± 0 | 1000 | 0.000384 | – | 5.00e-01 | DRIFTED | stable |" in md
    assert "fake_absent is not installed here" in md
    assert "outputs **DRIFTED**" in md


def test_cached_references_are_kept_apart_by_input_shape(fake_backends, tmp_path):
    # One ONNX file with dynamic height and width, run at two sizes against one artifact cache: the
    # second run must compute its own reference, not reuse (and then refuse as stale) the first's.
    from tests import foreign

    model = foreign.save(foreign.dynamic_resize(), tmp_path / "resize.onnx")
    for i, hw in enumerate(([12, 16], [32, 32])):
        cfg = config_from_dict({"name": "s", "models": [{"name": "m", "source": str(model),
                                                         "input_shapes": {"x": ["batch", 3, *hw]}}],
                                "backends": ["fake"], "batch_sizes": [1], "reference": {"backend": "fake"},
                                "timing": FAST_TIMING, "repeats": 1})
        run_dir = execute(plan(cfg, tmp_path / "models"), tmp_path / "results", run_id=f"s{i}", isolate=False,
                          cache_dir=tmp_path / "cache")
        cells = pd.read_csv(run_dir / "cells.csv")
        assert cells["validated"].all(), cells["accuracy_note"].tolist()


def test_adaptive_repeats_add_processes_until_the_interval_is_narrow_or_the_budget_is_spent(fake_backends, mlp_onnx, tmp_path):
    cfg = _config(mlp_onnx, ["fake", "fake_jitter"], precisions=["fp32"], batch_sizes=[1], repeats=2, max_repeats=6,
                  interval_target=0.02)
    cells = pd.read_csv(_run(cfg, tmp_path) / "cells.csv").set_index("backend")
    # every fake call takes exactly 1 ms: the interval is a point after the first `repeats` processes
    assert cells.loc["fake", "repeats"] == 2
    assert cells.loc["fake", "repeats_stop"] == "adaptive: interval +-0.0% within +-2.0% after 2 processes"
    # processes 8-12% apart: never within 2%, so every process of the budget is spent, and the row says so
    assert cells.loc["fake_jitter", "repeats"] == 6
    assert cells.loc["fake_jitter", "repeats_stop"].startswith("adaptive: max_repeats 6 reached with interval +-")
    assert len(json.loads(cells.loc["fake_jitter", "process_p50_ms"])) == 6
    with pytest.raises(Exception, match="max_repeats \\(1\\) must be at least repeats \\(2\\)"):
        _config(mlp_onnx, ["fake"], repeats=2, max_repeats=1)


def test_interleaved_sweep_shuffles_the_processes_of_different_cells(fake_backends, mlp_onnx, tmp_path, monkeypatch):
    from bench import runner

    order = []
    cell_run = runner._Sweep._cell_run

    def recorded(self, cell, ref, validate, name, process=1):
        order.append((cell.backend, cell.precision, cell.batch_size, process))
        return cell_run(self, cell, ref, validate, name, process)

    monkeypatch.setattr(runner._Sweep, "_cell_run", recorded)
    cfg = _config(mlp_onnx, ["fake", "fake_jitter"], precisions=["fp32"], repeats=4, interleave=True, seed=3)
    cells = pd.read_csv(_run(cfg, tmp_path) / "cells.csv")
    grid = [(c.backend, c.precision, c.batch_size) for c in cfg.grid()]
    assert len(cells) == 4 and (cells["repeats"] == 4).all() and len(order) == 16
    assert [o[:3] for o in order[:4]] == grid and {o[3] for o in order[:4]} == {1}  # first processes validate, in grid order
    rounds = [order[4 + 4 * r: 8 + 4 * r] for r in range(3)]
    for r, got in enumerate(rounds):
        assert sorted(o[:3] for o in got) == sorted(grid) and {o[3] for o in got} == {r + 2}  # every cell once a round
    assert any([o[:3] for o in got] != grid for got in rounds)  # in a shuffled order
    assert [o[:3] for o in rounds[0]] != [o[:3] for o in rounds[1]]
    # the same seed, the same order: a rerun of the config interleaves identically
    first = list(order)
    order.clear()
    _run(cfg, tmp_path, run_id="r2")
    assert order == first


def test_an_interrupted_interleaved_sweep_keeps_every_started_cell(fake_backends, mlp_onnx, tmp_path, monkeypatch):
    from bench import runner

    calls = []
    add_process = runner._Sweep.add_process

    def interrupting(self, state):
        calls.append(1)
        if len(calls) == 6:  # in the second round of extra processes
            raise KeyboardInterrupt
        return add_process(self, state)

    monkeypatch.setattr(runner._Sweep, "add_process", interrupting)
    cfg = _config(mlp_onnx, ["fake", "fake_jitter"], precisions=["fp32"], repeats=3, interleave=True)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path)
    cells = pd.read_csv(tmp_path / "results" / "r1" / "cells.csv")
    assert len(cells) == 4 and (cells["status"] == "ok").all()
    assert sorted(cells["repeats"]) == [2, 2, 2, 3]  # the fifth extra process finished, the sixth was interrupted
    unfinished = cells["repeats_stop"].str.startswith("interrupted after 2 processes")
    assert unfinished.sum() == 3 and cells.loc[unfinished, "resumable"].all()  # the cell with all 3 is not redone
    assert (cells.loc[~unfinished, "repeats_stop"] == "fixed: 3 processes (repeats)").all()
    assert json.loads((tmp_path / "results" / "r1" / "meta.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(runner._Sweep, "add_process", add_process)
    _run(cfg, tmp_path, run_id="r1", resume=True)  # the unfinished cells run again, whole
    cells = pd.read_csv(tmp_path / "results" / "r1" / "cells.csv")
    assert len(cells) == 4 and (cells["repeats"] == 3).all() and "resumable" not in cells  # every row whole now
    assert json.loads((tmp_path / "results" / "r1" / "meta.json").read_text())["status"] == "complete"


def _ab(tmp_path, a, b, **kw):
    from bench.ab import Rounds, run_ab

    return run_ab(plan(a, tmp_path / "models"), plan(b, tmp_path / "models"), tmp_path / "results", Rounds(**kw),
                  ab_id="ab", isolate=False)


def test_ab_pairs_cells_interleaves_rounds_and_calls_a_10_percent_slowdown(fake_backends, mlp_onnx, tmp_path):
    import shutil

    slow = tmp_path / "mlp-slow.onnx"
    shutil.copy(mlp_onnx, slow)
    a = _config(mlp_onnx, ["fake"], precisions=["fp32"])
    b = config_from_dict({**a.canonical(), "models": [{"name": "mlp", "source": str(slow)}]})
    dir_a, dir_b, table = _ab(tmp_path, a, b, min_rounds=6, max_rounds=8)
    assert list(table["verdict"]) == ["slower", "slower"]
    assert table["change"].tolist() == pytest.approx([0.10, 0.10], abs=1e-6)  # the fake clock is exact: +10% every round
    assert (table["rounds"] == 6).all() and table["note"].str.endswith("decided").all()
    for order in table["order"]:
        rounds = [order[i:i + 2] for i in range(0, len(order), 2)]
        assert all(sorted(r) == ["A", "B"] for r in rounds) and len(set(rounds)) == 2  # each round both, in either order
    for d, side in ((dir_a, "A"), (dir_b, "B")):
        cells = pd.read_csv(d / "cells.csv")
        assert (cells["repeats"] == 6).all() and cells["validated"].all()
        assert json.loads((d / "meta.json").read_text())["ab"]["role"] == side
        assert pd.read_csv(d / "ab.csv")["verdict"].tolist() == ["slower", "slower"]


def test_ab_refuses_configs_with_no_common_cell_and_says_which_cells_pair(fake_backends, mlp_onnx, tmp_path):
    a = _config(mlp_onnx, ["fake"], precisions=["fp32"], batch_sizes=[1])
    b = _config(mlp_onnx, ["fake"], precisions=["fp32"], batch_sizes=[2])
    with pytest.raises(BenchError, match="share no cell .* A only: mlp fake fp32 b1"):
        _ab(tmp_path, a, b)
    from bench.ab import Rounds

    with pytest.raises(BenchError, match="needs at least 6 rounds"):
        Rounds(min_rounds=5)


def test_ab_of_identical_processes_says_no_change_and_of_jittering_ones_takes_more_rounds(fake_backends, mlp_onnx, tmp_path, monkeypatch):
    a = _config(mlp_onnx, ["fake", "fake_jitter"], precisions=["fp32"], batch_sizes=[1])
    fakes._compiles[0] = 0  # the jitter sequence from its start, whatever ran before
    _, _, table = _ab(tmp_path, a, a, min_rounds=6, max_rounds=10, threshold=0.02)
    t = table.set_index("backend")
    assert t.loc["fake", "verdict"] == "no change" and t.loc["fake", "rounds"] == 6
    assert t.loc["fake", "ci_low"] == pytest.approx(0.0) and t.loc["fake", "ci_high"] == pytest.approx(0.0)
    # each process 8-12% off at random: six rounds cannot decide within 2%, so rounds are added
    jitter = t.loc["fake_jitter"]
    assert jitter["rounds"] > 6 and jitter["verdict"] == "inconclusive", jitter.to_dict()


def test_a_run_made_before_an_upgrade_resumes_when_only_new_defaults_differ(fake_backends, mlp_onnx, tmp_path):
    """Settings added to bench since a run was made (interleave, max_repeats, ...) are absent from its
    stored config; with their defaults they are the same config, and --resume must accept it."""
    cfg = _config(mlp_onnx, ["fake"], precisions=["fp32"])
    run_dir = _run(cfg, tmp_path)
    meta = json.loads((run_dir / "meta.json").read_text())
    for key in ("interleave", "max_repeats", "interval_target"):
        del meta["config"][key]
    del meta["config"]["timing"]["max_warmup_extensions"]
    meta.update(config_hash="0" * 64, status="interrupted")  # the hash the older version computed
    (run_dir / "meta.json").write_text(json.dumps(meta))
    assert json.loads((_run(cfg, tmp_path, resume=True) / "meta.json").read_text())["status"] == "complete"
    changed = config_from_dict({**cfg.canonical(), "seed": 9})
    with pytest.raises(BenchError, match="the config changed since that run"):
        _run(changed, tmp_path, resume=True)


def test_an_interrupted_ab_keeps_what_it_measured_and_calls_the_pair_missing(fake_backends, mlp_onnx, tmp_path, monkeypatch):
    from bench import runner
    from bench.ab import Rounds, run_ab
    from bench.results import try_run_lock

    calls = []
    add_process = runner._Sweep.add_process

    def interrupting(self, state):
        calls.append(1)
        if len(calls) == 3:  # in the third round of the first pair (the first round starts both cells)
            raise KeyboardInterrupt
        return add_process(self, state)

    monkeypatch.setattr(runner._Sweep, "add_process", interrupting)
    a = _config(mlp_onnx, ["fake"], precisions=["fp32"])
    with pytest.raises(KeyboardInterrupt):
        run_ab(plan(a, tmp_path / "models"), plan(a, tmp_path / "models"), tmp_path / "results", Rounds(min_rounds=6),
               ab_id="ab", isolate=False)
    for side in ("A", "B"):
        d = tmp_path / "results" / f"ab-{side}"
        assert json.loads((d / "meta.json").read_text())["status"] == "interrupted"
        assert try_run_lock(d) is not None  # the lock was released
        table = pd.read_csv(d / "ab.csv")
        assert list(table["verdict"]) == ["missing"] and table["note"][0] == "interrupted after 2 paired rounds"
        assert len(pd.read_csv(d / "cells.csv")) == 1  # what the pair measured is journaled, once


def test_ab_refuses_targets_it_cannot_reach_before_writing_anything(fake_backends, mlp_onnx, tmp_path):
    a = _config(mlp_onnx, ["fake"], precisions=["fp32"])
    b = config_from_dict({**a.canonical(), "targets": ["epyc-b"]})
    with pytest.raises(BenchError, match="targets epyc-b: no worker offers them"):
        _ab(tmp_path, a, b)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_the_paired_interval_is_the_sign_tests_and_shrugs_off_a_spoiled_round():
    import numpy as np

    from bench.ab import _sign_test_k, paired_interval

    assert [_sign_test_k(n) for n in (5, 6, 9, 10, 12, 16)] == [0, 1, 2, 2, 3, 4]  # binomial tables, two-sided 5%
    assert paired_interval([1.0] * 5, [1.1] * 5)[1:] == (-1.0, float("inf"))  # 5 rounds decide nothing at 95%
    change, lo, hi = paired_interval([1.0] * 6, [1.1] * 6)
    assert change == lo == hi == pytest.approx(0.1)
    # ten rounds of +-1% noise around no change, one of them hit by a burst (+60% on one side)
    d = np.array([0.004, -0.008, 0.011, -0.003, 0.006, -0.010, 0.002, 0.007, -0.005, 0.6])
    change, lo, hi = paired_interval([1.0] * 10, list(np.exp(d)))
    assert (lo, hi) == pytest.approx((np.expm1(-0.008), np.expm1(0.011)))  # the 2nd smallest and 2nd largest
    assert change == pytest.approx(np.expm1(0.003))
    t_half = 2.262 * d.std(ddof=1) / np.sqrt(10)
    assert np.expm1(d.mean() + t_half) > 0.05 > hi  # a t-interval would not call this `no change` at 5%; this does
