"""A grid across a fleet: a real Dask cluster on this machine, loopback only (127.0.0.1, no
dashboard), two workers labelled as two machine classes; and --shard with bench merge."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.config import config_from_dict
from bench.errors import BenchError
from bench.runner import execute, plan
from tests import fakes
from tests.conftest import FAST_TIMING, wait_gone

distributed = pytest.importorskip("distributed")

TARGETS = ("epyc-a", "epyc-b")


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """Scheduler and two Nanny workers on 127.0.0.1, each offering one bench_slot and its target;
    the scheduler never re-runs a task whose worker died. Everything it started is stopped, by pid."""
    import dask
    from distributed import Client, Nanny, Scheduler, SpecCluster

    fakes.install(monkeypatch)  # workers import the fakes too (BENCH_PLUGINS, PYTHONPATH)
    monkeypatch.setenv("FAKE_HANG_ONCE", str(tmp_path / "hung-once"))
    env = {k: os.environ[k] for k in ("BENCH_PLUGINS", "PYTHONPATH", "BENCH_CACHE_DIR", "BENCH_LOCK_DIR", "FAKE_HANG_ONCE")}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False,
                          "distributed.nanny.environ": env}):
        workers = {t: {"cls": Nanny, "options": {"host": "127.0.0.1", "nthreads": 1, "dashboard": False,
                                                  "resources": {"bench_slot": 1, "compile_slot": 1, t: 1}}}
                   for t in TARGETS}
        spec = SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}},
                           workers=workers, silence_logs=True)
        client = Client(spec, set_as_default=False)
        started: set[int] = set()  # the scheduler and the nannies run in this process; the workers are children
        try:
            yield spec.scheduler_address, client
        finally:
            for proc in psutil.Process().children(recursive=True):
                started.add(proc.pid)
            client.close()
            spec.close(timeout=30)
            for pid in started:
                if psutil.pid_exists(pid):
                    try:
                        proc = psutil.Process(pid)
                        if proc.status() != psutil.STATUS_ZOMBIE and any("distributed" in a or "multiprocessing" in a for a in proc.cmdline()):
                            proc.kill()
                    except psutil.Error:
                        pass


def _fleet_config(mlp_onnx, backends=("onnxruntime",), **kw):
    return config_from_dict({"name": "fleet", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": list(backends),
                             "batch_sizes": [1, 2, 3], "targets": list(TARGETS), "timing": FAST_TIMING, "repeats": 2, **kw})


def test_each_cell_runs_alone_on_a_worker_of_its_target(cluster, mlp_onnx, models_dir, tmp_path):
    from bench.executors import DaskExecutor
    from bench.report import build_report

    address, client = cluster
    workers = {next(r for r in w["resources"] if r not in ("bench_slot", "compile_slot")): addr
               for addr, w in client.scheduler_info()["workers"].items()}
    fleet = DaskExecutor(address)
    try:
        assert fleet.parallelism == 2 and fleet.targets() == set(TARGETS) and not fleet.warnings
        run_dir = execute(plan(_fleet_config(mlp_onnx, batch_sizes=[1, 2]), models_dir), tmp_path / "results", executor=fleet,
                          cache_dir=tmp_path / "c")
        from bench.runner import compile_all  # bench tune on the fleet: compile_slot jobs, timing nothing

        built = compile_all(plan(_fleet_config(mlp_onnx, batch_sizes=[4]), models_dir), tmp_path / "tune", executor=fleet,
                            cache_dir=tmp_path / "c")
        assert [r["status"] for r in built] == ["ok", "ok"] and {r["target"] for r in built} == set(TARGETS)
    finally:
        fleet.close()
    cells = pd.read_parquet(run_dir / "cells.parquet")
    assert len(cells) == 4 and (cells["status"] == "ok").all() and cells["accuracy_ok"].all(), cells[["status", "error"]]
    spans = []
    for r in cells.itertuples():
        placements = json.loads(r.placements)
        assert len(placements) == 2 and {p["worker"] for p in placements} == {workers[r.target]}  # its target's worker only
        assert r.host and r.worker == workers[r.target] and len(r.env_fingerprint) == 12  # the machine's environment
        spans += [(p["worker"], p["started_at"], p["ended_at"]) for p in placements]
    for worker in workers.values():  # one timed process at a time per machine
        mine = sorted((s, e) for w, s, e in spans if w == worker)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(mine, mine[1:])), mine
    assert (run_dir / "outputs").is_dir() and len(list((run_dir / "outputs").glob("*.npz"))) == 4  # brought back to the driver
    md = (build_report(run_dir, tmp_path / "reports") / "report.md").read_text()
    assert "## Targets side by side" in md and all(t in md for t in TARGETS)


def test_a_worker_lost_mid_cell_costs_that_cell_and_resume_finishes_it(cluster, mlp_onnx, models_dir, tmp_path):
    from bench.executors import DaskExecutor

    address, client = cluster
    worker_pids = client.run(os.getpid)
    cfg = _fleet_config(mlp_onnx, backends=("fake", "fake_hang"), reference={"backend": "fake"}, repeats=1,
                        targets=["epyc-a"], batch_sizes=[1, 2])
    marker = Path(os.environ["FAKE_HANG_ONCE"])
    killed = {}

    def kill_when_hung():
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        cell_pid = int(marker.read_text())
        ancestors = {p.pid for p in psutil.Process(cell_pid).parents()}
        (victim,) = [pid for pid in worker_pids.values() if pid in ancestors]
        killed["pid"] = victim
        os.kill(victim, signal.SIGKILL)

    import threading

    killer = threading.Thread(target=kill_when_hung, daemon=True)
    killer.start()
    fleet = DaskExecutor(address)
    try:
        run_dir = execute(plan(cfg, models_dir), tmp_path / "results", executor=fleet, cache_dir=tmp_path / "c")
        killer.join(timeout=5)
        assert not killer.is_alive() and "pid" in killed  # the worker running the hung cell was killed
        cells = pd.read_csv(run_dir / "cells.csv").set_index(["backend", "batch_size"])
        lost = cells.loc[("fake_hang", 1)]
        assert lost["status"] == "crashed" and "Dask worker running it was lost" in lost["error"] and lost["resumable"]
        assert (cells.drop(index=("fake_hang", 1))["status"] == "ok").all()  # the rest complete
        assert wait_gone([int(marker.read_text())]) == []  # the cell's own process died with its worker
        resumed = execute(plan(cfg, models_dir), tmp_path / "results", run_id=run_dir.name, resume=True, executor=fleet,
                          cache_dir=tmp_path / "c")
    finally:
        fleet.close()
    cells = pd.read_csv(resumed / "cells.csv")
    assert len(cells) == 4 and (cells["status"] == "ok").all(), cells[["backend", "status", "error"]]
    assert json.loads((resumed / "meta.json").read_text())["status"] == "complete"


def test_targets_without_a_fleet_are_bad_input(mlp_onnx, models_dir, tmp_path):
    with pytest.raises(BenchError, match="targets epyc-a, epyc-b: no worker offers them.*--executor dask"):
        execute(plan(_fleet_config(mlp_onnx), models_dir), tmp_path / "results")


# --- shards ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_backends(monkeypatch):
    fakes.install(monkeypatch)


def _shard_config(mlp_onnx, **kw):
    return config_from_dict({"name": "sharded", "models": [{"name": "mlp", "source": str(mlp_onnx)}], "backends": ["fake", "fake_drift"],
                             "batch_sizes": [1, 2, 3], "reference": {"backend": "fake"}, "timing": FAST_TIMING, "repeats": 1, **kw})


def test_shards_merged_equal_the_whole_grid(fake_backends, mlp_onnx, models_dir, tmp_path):
    from bench.merge import merge_runs
    from bench.results import cell_key, load_run

    p = plan(_shard_config(mlp_onnx), models_dir)
    shards = [execute(p, tmp_path / "results", shard=(i, 2)) for i in (1, 2)]
    sizes = [len(pd.read_csv(d / "cells.csv")) for d in shards]
    assert sizes == [3, 3]
    merged = load_run(merge_runs(shards, tmp_path / "results"))
    assert sorted(cell_key(r) for _, r in merged.cells.iterrows()) == sorted(cell_key(c) for c in p.cells)
    assert merged.meta["status"] == "complete" and len(merged.meta["merged_from"]) == 2
    assert set(merged.cells["run_id"]) == {merged.run_id} and len(merged.samples) > 0
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "bench", "merge", str(shards[0]), str(shards[0]), "--results-dir", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "overlapping shards" in proc.stderr, proc.stderr
    import shutil

    other = shutil.copytree(shards[1], tmp_path / "other" / shards[1].name)  # the same cells, of another config
    meta = json.loads((other / "meta.json").read_text())
    meta["config"]["seed"], meta["config_hash"] = 1, "another"
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="another config.*seed: 0 -> 1"):
        merge_runs([shards[0], other], tmp_path / "results")
    lone = merge_runs([shards[0], execute(p, tmp_path / "r2", shard=(2, 4))], tmp_path / "results")
    assert json.loads((lone / "meta.json").read_text())["status"] == "incomplete"


def test_a_bad_shard_is_refused(fake_backends, mlp_onnx, models_dir, tmp_path):
    with pytest.raises(BenchError, match="--shard 3/2"):
        execute(plan(_shard_config(mlp_onnx), models_dir), tmp_path / "results", shard=(3, 2))
