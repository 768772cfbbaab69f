"""One contract, run against every backend that is usable here, on tiny real models."""


import numpy as np
import pytest

from bench.backends import BACKENDS, get_backend
from bench.backends.base import Backend, Compiled, CompileRequest, Unsupported
from bench.cache import ArtifactCache
from bench.config import ModelSpec
from bench.inputs import seeded_feeds
from bench.models.prepare import for_cell, inspect_model, materialize


def _usable(name):
    a = get_backend(name).availability()
    return pytest.param(name, marks=pytest.mark.skipif(not a.usable, reason=f"{name}: {a.reason}"))


BACKEND_PARAMS = [_usable(n) for n in BACKENDS]
# Tuning: one trial per task of one tiny model (the builder pool starts once per tuning run).
OPTIONS = {"tvm_tuned": {"trials": 2, "min_trials_per_task": 1, "trials_per_iter": 2, "search": "replay-trace"}}
TUNING = {"tvm_tuned"}


@pytest.fixture(scope="module")
def mini_cnn(tmp_path_factory):
    from tests.conftest import make_cnn_onnx

    return make_cnn_onnx(tmp_path_factory.mktemp("cnn") / "mini_cnn.onnx")


@pytest.fixture(scope="module")
def tiny_models(models_dir, mlp_onnx, mini_cnn):
    out = {}
    for name, source in (("cnn", "zoo:resnet18-tiny"), ("seg", "zoo:unet-tiny"), ("mlp", str(mlp_onnx)), ("mini_cnn", str(mini_cnn))):
        out[name] = materialize(inspect_model(ModelSpec(name=name, source=source), 0, 0, [1, 2], models_dir))
    return out


def _request(model, batch, tmp_path, backend, cache_root, precision="fp32"):
    return CompileRequest(model, precision, batch, model.info.shapes(batch), threads=2, work_dir=tmp_path,
                          cache=ArtifactCache(cache_root), options=OPTIONS.get(backend, {}))


@pytest.fixture(scope="module")
def tuned_run(models_dir, tmp_path_factory, mini_cnn):
    """One real tuning (one trial per task) of the mini cnn at batch 2 (four tasks: the fewest that
    still show coverage), shared by the tests that need it."""
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan
    from tests.conftest import FAST_TIMING

    work = tmp_path_factory.mktemp("tuned")
    cfg = config_from_dict({"name": "t", "models": [{"name": "mini_cnn", "source": str(mini_cnn)}],
                            "backends": ["tvm_tuned"], "batch_sizes": [2], "timing": FAST_TIMING, "repeats": 1,
                            "backend_options": {"tvm_tuned": OPTIONS["tvm_tuned"]}})
    run = lambda rid: pd.read_csv(execute(plan(cfg, models_dir), work / "r", run_id=rid, cache_dir=work / "c") / "cells.csv").iloc[0]  # noqa: E731
    return work / "c", run


def _onnx_reference(model, feeds):
    """Outputs from ONNX's own reference evaluator: independent of every backend under test."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(model.path)).run(None, feeds)


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
@pytest.mark.parametrize("model_name, batch", [("cnn", 2), ("seg", 1), ("mlp", 2)])
def test_backend_contract(backend_name, model_name, batch, tiny_models, tmp_path, request):
    if backend_name in TUNING and model_name != "cnn":
        pytest.skip("tuning is exercised on one model only, to keep the suite fast")
    cache_root = tmp_path / "cache"
    if backend_name in TUNING:
        model_name = "mini_cnn"  # what tuned_run tuned: a tiny CNN of four tasks
        cache_root, run = request.getfixturevalue("tuned_run")
        run("contract")  # tunes once, or finds it tuned
    backend = get_backend(backend_name)
    assert isinstance(backend, Backend)
    assert "fp32" in backend.precisions
    # what a cell hands a backend: the model frozen to the cell's shapes (bench.models.freeze)
    model = for_cell(tiny_models[model_name], batch, ArtifactCache(cache_root), backend.keeps_dynamic_batch)
    try:
        compiled = backend.compile(_request(model, batch, tmp_path, backend_name, cache_root))
    except Unsupported as e:  # a device backend with no device (or arch) here
        pytest.skip(f"{backend_name} cannot build here: {e}")
    try:
        assert isinstance(compiled, Compiled)
        for key in ("variant", "provider", "threads", "backend_version", "executes_as"):
            assert compiled.facts[key] not in (None, ""), key
        assert compiled.facts["variant"] == backend.variant
        assert compiled.facts["threads"] >= 1

        feeds = seeded_feeds(model.info, batch, seed=0, iterations=1)[0]
        outputs = compiled.run(feeds)
        assert list(outputs) == list(model.outputs)
        expected = _onnx_reference(model, feeds)
        for got, want in zip(outputs.values(), expected):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

        fn = compiled.prepare(feeds)
        t0 = compiled.clock()
        fn()
        t1 = compiled.clock()
        assert isinstance(t0, int) and t1 > t0
    finally:
        compiled.release()


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
def test_availability_reports_versions(backend_name):
    a = get_backend(backend_name).availability()
    assert a.usable and a.versions and all(a.versions.values())


def test_tuned_tvm_without_its_tuning_libraries_says_what_to_install(monkeypatch):
    """`make bench` installs TVM without MetaSchedule's cost model (xgboost) and pools (cloudpickle)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a))
    a = get_backend("tvm_tuned").availability()
    assert not a.usable and a.reason == "MetaSchedule's tuning needs xgboost, not installed here; pip install 'bench[tvm-tune]'"
    assert get_backend("tvm").availability().usable


def test_unknown_backend_names_valid_ones():
    with pytest.raises(KeyError, match="valid: onnxruntime, tvm, tvm_tuned, "):
        get_backend("tensorrtx")


def test_tuned_tvm_covers_every_task_records_it_and_never_retunes(tuned_run, tmp_path):
    import json

    from bench.report import TUNING_PLOT, build_report

    cache_root, run = tuned_run
    first = run("a")
    assert first.status == "ok" and first.accuracy_ok
    # a budget of 2 is below one trial for each task: raised to the minimum, every task covered
    assert first.total_tasks > 2 and first.tuned_tasks == first.total_tasks and first.variant == "tuned"
    assert first.tuning_trials_spent == first.total_tasks and first.tuning_budget == 2 and first.tuning_s > 0
    assert first.tuning_trials == first.total_tasks  # one record per trial
    assert first.executes_as == "fp32"  # read from the module before scheduling, not "unknown"
    curve = json.loads(first.tuning_curve)
    assert [p["tuned_tasks"] for p in curve] == list(range(1, first.total_tasks + 1))
    assert curve[-1]["trials"] == first.total_tasks and curve[-1]["estimated_ms"] > 0
    report = build_report(cache_root.parent / "r" / "a", tmp_path)
    assert (report / TUNING_PLOT).read_bytes()[:4] == b"\x89PNG" and TUNING_PLOT in (report / "report.md").read_text()
    db = next((cache_root / "tvm-tuning").iterdir())
    records = (db / "database_tuning_record.json").read_text()
    second = run("b")
    assert second.cache_hit and second.tuned_tasks == first.total_tasks
    assert (db / "database_tuning_record.json").read_text() == records  # nothing re-tuned


def test_budget_is_spread_over_every_task_by_weight_and_flops():
    from bench.backends.tvm_tuning import allocate_trials

    assert allocate_trials([1, 1, 1], 9, 1) == [3, 3, 3]
    assert allocate_trials([8, 1, 1], 12, 2) == [7, 3, 2]  # 2 each, the other 6 by score (largest remainders)
    assert sum(allocate_trials([5, 3, 2, 7], 101, 4)) == 101
    assert allocate_trials([100, 0, 0], 4, 2) == [2, 2, 2]  # too small: raised to the minimum each
    assert allocate_trials([3, 1], 5, 0) == [4, 1]  # extending a tuned database: no minimum
    assert allocate_trials([], 10, 1) == []


def test_a_task_without_a_flop_estimate_is_not_starved_of_trials():
    from bench.backends.tvm_tuning import allocate_trials, task_scores

    # Three tasks, the middle one's FLOPs unknown: scored at the median of the others (not at 1.0,
    # which gave it the minimum only), and counted.
    scores, unknown = task_scores([1, 1, 1], [4e8, None, 1e8])
    assert unknown == 1 and scores == [4e8, 4e8, 1e8]
    assert allocate_trials(scores, 90, 2) == [39, 39, 12]  # scored 1.0 it got [69, 2, 19]: the minimum only
    assert task_scores([2, 1], [None, None]) == ([2.0, 1.0], 2)  # nothing known: by weight alone


def test_tuning_measures_while_holding_the_machines_timing_lock(tiny_models, tmp_path, monkeypatch):
    """MetaSchedule's runner times candidates: another run's timed loop must not run beside it, so
    the tuning process runs inside the machine's timing lock (seen from it, the lock is held)."""
    if not get_backend("tvm_tuned").availability().usable:
        pytest.skip("TVM is not usable here")
    from bench import machine_lock
    from bench.backends import tvm as tvm_backend

    (tmp_path / "lock").mkdir()
    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path / "lock"))
    seen = []

    def fake_tuning(job):  # what the tuning process would see of the lock, without tuning
        seen.append(machine_lock.holder())
        return {"trials": job.trials, "trials_per_minute": 0.0, "builder_pool_starts": 0}

    monkeypatch.setattr(tvm_backend, "_run_tuning", fake_tuning)
    model = for_cell(tiny_models["mini_cnn"], 2, ArtifactCache(tmp_path / "c"), False)
    compiled = get_backend("tvm_tuned").compile(_request(model, 2, tmp_path, "tvm_tuned", tmp_path / "c"))
    compiled.release()
    assert len(seen) == 1 and seen[0] and "MetaSchedule tuning of mini_cnn fp32" in seen[0]
    assert machine_lock.holder() is None  # released after
