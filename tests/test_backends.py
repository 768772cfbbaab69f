"""One contract, run against every backend that is usable here, on tiny real models."""


import numpy as np
import pytest

from bench.backends import BACKENDS, get_backend
from bench.backends.base import Backend, Compiled, CompileRequest
from bench.cache import ArtifactCache
from bench.config import ModelSpec
from bench.inputs import seeded_feeds
from bench.models.prepare import inspect_model, materialize


def _usable(name):
    a = get_backend(name).availability()
    return pytest.param(name, marks=pytest.mark.skipif(not a.usable, reason=f"{name}: {a.reason}"))


BACKEND_PARAMS = [_usable(n) for n in BACKENDS]
# Tuning costs a builder pool start (~40 s here) per batch of trials: a handful, on one model.
OPTIONS = {"tvm_tuned": {"trials": 2, "max_trials_per_task": 2, "trials_per_iter": 2}}
TUNING = {"tvm_tuned"}


@pytest.fixture(scope="module")
def tiny_models(models_dir, mlp_onnx):
    out = {}
    for name, source in (("cnn", "zoo:resnet18-tiny"), ("seg", "zoo:unet-tiny"), ("mlp", str(mlp_onnx))):
        out[name] = materialize(inspect_model(ModelSpec(name=name, source=source), 0, 0, [1, 2], models_dir))
    return out


def _request(model, batch, tmp_path, backend, cache_root, precision="fp32"):
    return CompileRequest(model, precision, batch, model.info.shapes(batch), threads=2, work_dir=tmp_path,
                          cache=ArtifactCache(cache_root), options=OPTIONS.get(backend, {}))


@pytest.fixture(scope="module")
def tuned_run(models_dir, tmp_path_factory):
    """One real tuning (a handful of trials) of the cnn at batch 2, shared by the tests that need it."""
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan
    from tests.conftest import FAST_TIMING

    work = tmp_path_factory.mktemp("tuned")
    cfg = config_from_dict({"name": "t", "models": [{"name": "cnn", "source": "zoo:resnet18-tiny"}],
                            "backends": ["tvm_tuned"], "batch_sizes": [2], "timing": FAST_TIMING,
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
        pytest.skip("tuning is exercised on the cnn model only, to keep the suite fast")
    cache_root = tmp_path / "cache"
    if backend_name in TUNING:
        cache_root, run = request.getfixturevalue("tuned_run")
        run("contract")  # tunes once, or finds it tuned
    backend = get_backend(backend_name)
    assert isinstance(backend, Backend)
    assert "fp32" in backend.precisions
    model = tiny_models[model_name]
    compiled = backend.compile(_request(model, batch, tmp_path, backend_name, cache_root))
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


def test_unknown_backend_names_valid_ones():
    with pytest.raises(KeyError, match="valid: onnxruntime, tvm, tvm_tuned, "):
        get_backend("tensorrtx")


def test_tuned_tvm_rows_record_trials_and_never_retune(tuned_run):
    cache_root, run = tuned_run
    first = run("a")
    assert first.status == "ok" and first.variant == "tuned" and first.accuracy_ok
    assert first.tuning_trials == 2 and first.tuning_budget == 2 and first.tuning_s > 0
    db = next((cache_root / "tvm-tuning").iterdir())
    records = (db / "database_tuning_record.json").read_text()
    second = run("b")
    assert second.cache_hit and second.compile_s < 5 and second.tuning_trials == 2
    assert (db / "database_tuning_record.json").read_text() == records  # nothing re-tuned
