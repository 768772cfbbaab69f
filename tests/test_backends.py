"""One contract, run against every backend that is usable here, on tiny real models."""

from pathlib import Path

import numpy as np
import pytest

from bench.backends import BACKENDS, get_backend
from bench.backends.base import Backend, Compiled, CompileRequest
from bench.config import ModelSpec
from bench.inputs import seeded_feeds
from bench.models.prepare import inspect_model, materialize


def _usable(name):
    a = get_backend(name).availability()
    return pytest.param(name, marks=pytest.mark.skipif(not a.usable, reason=f"{name}: {a.reason}"))


BACKEND_PARAMS = [_usable(n) for n in BACKENDS]


@pytest.fixture(scope="module")
def tiny_models(models_dir, mlp_onnx):
    out = {}
    for name, source in (("cnn", "zoo:resnet18-tiny"), ("seg", "zoo:unet-tiny"), ("mlp", str(mlp_onnx))):
        out[name] = materialize(inspect_model(ModelSpec(name=name, source=source), 0, 0, [1, 2], models_dir))
    return out


def _request(model, batch, tmp_path, precision="fp32"):
    return CompileRequest(model, precision, batch, model.info.shapes(batch), threads=2, work_dir=tmp_path)


def _onnx_reference(model, feeds):
    """Outputs from ONNX's own reference evaluator: independent of every backend under test."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(model.path)).run(None, feeds)


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
@pytest.mark.parametrize("model_name, batch", [("cnn", 2), ("seg", 1), ("mlp", 2)])
def test_backend_contract(backend_name, model_name, batch, tiny_models, tmp_path):
    backend = get_backend(backend_name)
    assert isinstance(backend, Backend)
    assert "fp32" in backend.precisions
    model = tiny_models[model_name]
    compiled = backend.compile(_request(model, batch, tmp_path))
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
    with pytest.raises(KeyError, match="valid: onnxruntime, tvm, "):
        get_backend("tensorrtx")
