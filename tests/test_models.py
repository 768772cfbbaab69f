"""Zoo models (tiny variants, the default ONNX builder) and user ONNX files. tests/test_zoo_routes.py compares
the zoo's two builders."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.config import ModelSpec
from bench.errors import BenchError
from bench.models import prepare
from bench.models.prepare import inspect_model, materialize
from tests.conftest import make_mlp_onnx


def _spec(**kw):
    return ModelSpec(**{"name": "m", **kw})


@pytest.mark.parametrize("arch", ["resnet18-tiny", "resnet50-tiny", "googlenet-tiny", "mobilenet_v2-tiny",
                                  "densenet121-tiny", "unet-tiny", "efficientnet_b0-tiny", "vit_s16-tiny"])
def test_zoo_export_has_dynamic_batch_and_opset_17(arch, models_dir):
    info = inspect_model(_spec(source=f"zoo:{arch}"), 0, seed=0, batch_sizes=[1], models_dir=models_dir)
    pm = materialize(info)
    assert pm.opset == 17
    model = onnx.load(str(pm.path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(str(pm.path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        (out,) = sess.run(None, {"input": np.zeros(info.shapes(batch)["input"], np.float32)})
        assert out.shape[0] == batch
        assert np.all(np.isfinite(out))


def test_zoo_cache_is_keyed_and_reused(models_dir, monkeypatch):
    a = inspect_model(_spec(source="zoo:resnet18-tiny"), 0, seed=0, batch_sizes=[1], models_dir=models_dir)
    b = inspect_model(_spec(source="zoo:resnet18-tiny"), 0, seed=1, batch_sizes=[1], models_dir=models_dir)
    c = inspect_model(_spec(source="zoo:resnet18-tiny", input_shapes={"input": ["batch", 3, 48, 48]}), 0, 0, [1], models_dir)
    assert len({a.path, b.path, c.path}) == 3
    first = materialize(a)
    monkeypatch.setattr(prepare, "export_zoo", lambda info: pytest.fail("a cached model was rebuilt"))
    assert materialize(a).sha256 == first.sha256


def test_seeds_give_different_weights_and_same_seed_same_file(tmp_path):
    paths = []
    for seed, d in ((0, "x"), (0, "y"), (1, "z")):
        info = inspect_model(_spec(source="zoo:mobilenet_v2-tiny"), 0, seed, [1], tmp_path / d)
        paths.append(materialize(info).sha256)
    assert paths[0] == paths[1] != paths[2]


def test_user_onnx_batch_axis_inferred(mlp_onnx):
    info = inspect_model(_spec(source=str(mlp_onnx)), 0, 0, [1, 4], Path("unused"))
    assert info.shapes(4) == {"x": (4, 8)}
    assert info.inputs[0].dtype == "float32"


def test_user_onnx_dynamic_dims_need_input_shapes(tmp_path):
    path = make_mlp_onnx(tmp_path / "dyn.onnx", extra_dynamic=True)
    with pytest.raises(BenchError, match=r"models\[0\] \(m\): input 'x' of dyn.onnx has dynamic dimensions \[batch, features\] "
                                         r"\(1: 'features' unfixed\); fix them by position with input_shapes: \{x: \[batch, <features>\]\} "
                                         r"or by name with dims: \{features: ...\}"):
        inspect_model(_spec(source=str(path)), 0, 0, [1], tmp_path)
    info = inspect_model(_spec(source=str(path), input_shapes={"x": ["batch", 8]}), 0, 0, [1], tmp_path)
    assert info.shapes(2) == {"x": (2, 8)}
    assert inspect_model(_spec(source=str(path), dims={"features": 8}), 0, 0, [1], tmp_path).shapes(2) == {"x": (2, 8)}


def test_user_onnx_shape_mistakes(tmp_path, mlp_onnx):
    with pytest.raises(BenchError, match=r"input_shapes.x\[1\]: 9 given, the model fixes it at 8"):
        inspect_model(_spec(source=str(mlp_onnx), input_shapes={"x": ["batch", 9]}), 0, 0, [1], tmp_path)
    with pytest.raises(BenchError, match=r"rank 3 given"):
        inspect_model(_spec(source=str(mlp_onnx), input_shapes={"x": ["batch", 8, 1]}), 0, 0, [1], tmp_path)
    with pytest.raises(BenchError, match=r"\['image'\] not inputs of mlp.onnx; its inputs: \['x'\]"):
        inspect_model(_spec(source=str(mlp_onnx), input_shapes={"image": ["batch", 8]}), 0, 0, [1], tmp_path)
    fixed = make_mlp_onnx(tmp_path / "fixed.onnx", batch_dim=1)
    with pytest.raises(BenchError, match=r"fixed batch dimension 1"):
        inspect_model(_spec(source=str(fixed)), 0, 0, [1, 2], tmp_path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BenchError, match=r"model file 'nope.onnx' not found \(looked at: "):
        inspect_model(_spec(source="nope.onnx"), 0, 0, [1], tmp_path, config_dir=tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(BenchError, match=r"models\[0\] \(m\).source: .*bad.onnx is not a valid ONNX model"):
        inspect_model(_spec(source=str(bad)), 0, 0, [1], tmp_path)


def test_zoo_shape_rules(tmp_path):
    with pytest.raises(BenchError, match=r"zoo models take \[batch, 3, height, width\]"):
        inspect_model(_spec(source="zoo:resnet18", input_shapes={"input": [1, 3, 64, 64]}), 0, 0, [1], tmp_path)
    with pytest.raises(BenchError, match=r"one input named 'input'"):
        inspect_model(_spec(source="zoo:resnet18", input_shapes={"image": ["batch", 3, 64, 64]}), 0, 0, [1], tmp_path)


def test_a_vision_transformer_and_an_efficientnet_run_validated_on_both_cpu_backends(tmp_path):
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan

    from benchmarks.zoo_matrix import zoo_matrix_config

    # TVM's int8 and EfficientNet's fp16 compiles (about 40 s here) run in `make benchmark` (benchmarks/zoo_matrix.py)
    cfg = config_from_dict(zoo_matrix_config(exclude=[{"backend": "tvm", "precision": "int8"},
                                                      {"model": "effnet", "backend": "tvm", "precision": "fp16"}]))
    p = plan(cfg, tmp_path / "models")
    run_dir = execute(p, tmp_path / "results", run_id="zoo-now", isolate=False, cache_dir=tmp_path / "cache")
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 2 * 2 * 3 - 3
    bad = cells[(cells["status"] != "ok") | ~cells["validated"].astype(bool)]
    assert bad.empty, bad[["model", "backend", "precision", "status", "error"]].to_string()
    assert (cells["model_builder"] == "onnx").all()  # the row says how its zoo model was built
    int8 = cells["precision"] == "int8"
    assert cells.loc[~int8, "accuracy_ok"].astype(bool).all()
    assert (cells.loc[int8, "cosine"] < 1).all()  # really quantized
    assert (cells.loc[int8 & (cells["model"] == "vit"), "cosine"] > 0.98).all()  # and still close
    # EfficientNet's int8 (SiLU, squeeze-and-excitation gates, depthwise convs, at a quarter of the width) drifts by
    # how the weights fell: ONNX Runtime's cosine over seeds 0-3 was 0.81, 0.98, 0.96, 0.98 (0.96-0.99 with the
    # zoo's earlier weights), its largest logit error 1.0-2.6, beyond int8's default atol of 0.5. A cell outside
    # its tolerance is published and marked with the reason
    assert (cells.loc[int8 & (cells["model"] == "effnet"), "cosine"] > 0.75).all()  # a broken int8 route reads near 0
    outside = cells[int8 & ~cells["accuracy_ok"].astype(bool)]
    assert outside["accuracy_note"].str.startswith("elements beyond atol").all()
    assert not cells["precision_route"].fillna("").str.contains("BatchNormalization").any()  # named only where present
    ops = {name: {n.op_type for n in onnx.load(str(materialize(p.models[name]).path)).graph.node} for name in ("vit", "effnet")}
    # what makes each what it is: attention (MatMul, Softmax), LayerNorm and GELU; SiLU and squeeze-and-excitation
    assert {"MatMul", "Softmax", "LayerNormalization", "Erf"} <= ops["vit"]
    assert {"Sigmoid", "Mul", "ReduceMean"} <= ops["effnet"] or {"Sigmoid", "Mul", "GlobalAveragePool"} <= ops["effnet"]


def test_a_vision_transformer_takes_only_square_images_in_whole_patches(models_dir):
    with pytest.raises(BenchError, match=r"vit_s16-tiny takes square images whose side is a multiple of its patch size 8, got 32x40"):
        inspect_model(_spec(source="zoo:vit_s16-tiny", input_shapes={"input": ["batch", 3, 32, 40]}), 0, 0, [1], models_dir)
    with pytest.raises(BenchError, match=r"vit_s16 takes square images whose side is a multiple of its patch size 16, got 200x200"):
        inspect_model(_spec(source="zoo:vit_s16", input_shapes={"input": ["batch", 3, 200, 200]}), 0, 0, [1], models_dir)
    info = inspect_model(_spec(source="zoo:vit_s16", input_shapes={"input": ["batch", 3, 192, 192]}), 0, 0, [1], models_dir)
    assert info.shapes(2) == {"input": (2, 3, 192, 192)}
