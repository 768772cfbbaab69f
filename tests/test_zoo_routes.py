"""The zoo's two builders compute the same model: the ONNX builder (numpy, no PyTorch; the default) and
PyTorch's exporter. Same seeded weights, same operators once frozen to a cell's shapes, same outputs."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.config import ModelSpec
from bench.errors import BenchError
from bench.models import prepare, weights
from bench.models.freeze import freeze
from bench.models.prepare import inspect_model, materialize

TINY = ["resnet18-tiny", "resnet50-tiny", "googlenet-tiny", "mobilenet_v2-tiny", "densenet121-tiny", "unet-tiny",
        "efficientnet_b0-tiny", "vit_s16-tiny"]
QUICKSTART = ["resnet18", "mobilenet_v2"]  # the README's main job: full width, at a small input here


def _info(arch: str, builder: str, models_dir, side: int | None = None, seed: int = 0):
    shapes = {"input_shapes": {"input": ["batch", 3, side, side]}} if side else {}
    return inspect_model(ModelSpec(name="m", source=f"zoo:{arch}", builder=builder, **shapes), 0, seed, [1], models_dir)


def _frozen_ops(path, shape) -> Counter:
    frozen, _ = freeze(onnx.load(str(path)), {"input": list(shape)})
    return Counter(n.op_type for n in frozen.graph.node)


@pytest.mark.parametrize("arch", TINY + QUICKSTART)
def test_both_builders_compute_the_same_model(arch, models_dir):
    pytest.importorskip("torch")
    side = 32 if arch in QUICKSTART else None
    a, b = (materialize(_info(arch, builder, models_dir, side)) for builder in ("onnx", "torch"))
    assert a.path != b.path and a.opset == b.opset == 17
    x = np.random.RandomState(7).standard_normal(a.info.shapes(3)["input"]).astype(np.float32)
    ya, yb = (ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0] for m in (a, b))
    assert ya.shape == yb.shape
    scale = float(np.abs(yb).max())
    assert scale > 0.1  # batch norm calibrated: logits of order one, not vanished
    # float32 rounding: the routes fold batch norm in their own order and calibrate with different sums. Over these
    # models, and odd input sizes (17x23, 21x21, 19x45), the outputs differed by at most 8e-5 of their scale;
    # a weight out of place moves them by the scale itself.
    np.testing.assert_allclose(ya, yb, rtol=0, atol=2e-4 * scale)
    # what the backends get: both frozen to a cell's shapes, operator for operator
    assert _frozen_ops(a.path, x.shape) == _frozen_ops(b.path, x.shape)


def test_the_onnx_builder_needs_no_pytorch(tmp_path):
    """The quickstart's environment has no torch: the default builder must not import it."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pathlib import Path\n"
            "from bench.config import ModelSpec\n"
            "from bench.models.prepare import inspect_model, materialize\n"
            f"info = inspect_model(ModelSpec(name='m', source='zoo:mobilenet_v2-tiny'), 0, 0, [1], Path({str(tmp_path)!r}))\n"
            "print(materialize(info).sha256)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.strip()) == 64


def test_the_torch_builder_without_pytorch_is_a_clear_error(tmp_path, monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", missing)
    with pytest.raises(BenchError, match=r"models\[0\] \(m\)\.builder: 'torch' exports the model with PyTorch, which is not "
                                         r"installed here; pip install 'bench\[models\]', or use builder: onnx"):
        _info("resnet18-tiny", "torch", tmp_path)
    assert _info("resnet18-tiny", "onnx", tmp_path).builder == "onnx"


def test_the_onnx_builder_without_onnx_runtime_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BenchError, match=r"models\[0\] \(m\): zoo models are built with ONNX Runtime .* pip install 'bench\[ort\]'"):
        _info("resnet18-tiny", "onnx", tmp_path)


def test_builder_is_for_zoo_models_only(mlp_onnx):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"builder is for zoo models \(zoo:<arch>\); '.*mlp.onnx' is an ONNX file already"):
        ModelSpec(name="m", source=str(mlp_onnx), builder="onnx")
    with pytest.raises(ValidationError, match=r"builder"):
        ModelSpec(name="m", source="zoo:resnet18", builder="keras")
    # a config travels to workers as its dump: a file's spec must survive the round trip
    spec = ModelSpec(name="m", source=str(mlp_onnx))
    assert ModelSpec.model_validate(spec.model_dump()) == spec


def test_the_builder_travels_to_workers_and_keys_the_file(tmp_path):
    a, b = _info("resnet18-tiny", "onnx", tmp_path), _info("resnet18-tiny", "torch", tmp_path) if _has_torch() else None
    assert prepare.ModelInfo.from_dict(a.to_dict()) == a
    if b is not None:
        assert prepare.ModelInfo.from_dict(b.to_dict()).builder == "torch" and b.path != a.path


def _has_torch() -> bool:
    try:
        md.version("torch")
        return True
    except md.PackageNotFoundError:
        return False


def test_weights_are_pytorchs_default_distributions_and_fixed_per_seed():
    w = weights.draw(0, 3, (64, 32, 3, 3), "weight")
    bound = 1 / np.sqrt(32 * 9)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.array_equal(w, weights.draw(0, 3, (64, 32, 3, 3), "weight"))  # the same draw every time
    assert not np.array_equal(w, weights.draw(1, 3, (64, 32, 3, 3), "weight"))
    assert not np.array_equal(w, weights.draw(0, 4, (64, 32, 3, 3), "weight"))
    # RandomState's stream is fixed across numpy releases: these values are the zoo's
    assert np.allclose(weights.draw(0, 0, (3,), "bias", fan_in=4), [-0.34928274, -0.30445728, -0.33467463])
    assert np.allclose(weights.draw(5, 1, (2,), "normal"), [-0.00978575, -0.01541903])
    assert np.allclose(weights.calibration_batch(0, (3, 2, 2)).ravel()[:3], [0.35052383, 1.68224728, -0.22437626])
    with pytest.raises(ValueError, match=r"a bias is drawn from its weight's fan-in: none given"):
        weights.draw(0, 0, (3,), "bias")
    with pytest.raises(ValueError, match=r"unknown parameter kind 'gamma'; valid: weight, bias, ones, zeros, normal"):
        weights.draw(0, 0, (3,), "gamma")
    # any seed the config takes (seed >= 0, no upper bound): RandomState alone refuses 2**32 and above
    big = weights.draw(2**64 + 5, 0, (4,), "weight")
    assert not np.array_equal(big, weights.draw(5, 0, (4,), "weight")) and np.isfinite(big).all()
