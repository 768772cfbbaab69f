"""Models written the way other exporters write them (tests/foreign.py), through the whole pipeline:
shape parsing, the preparation stage, every backend at every precision, FLOP counting, inspect."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from bench.backends.base import CompileRequest, ImportFailed
from bench.cache import ArtifactCache
from bench.config import ModelSpec, config_from_dict
from bench.errors import BenchError
from bench.models.flops import count_flops, cpu_peak
from bench.models.freeze import model_sha256
from bench.models.prepare import for_cell, inspect_model, materialize
from bench.runner import execute, plan
from tests import foreign
from tests.conftest import FAST_TIMING


@pytest.fixture(scope="module")
def foreign_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    for name, build in foreign.FOREIGN.items():
        foreign.save(build(), d / f"{name}.onnx")
    foreign.save(foreign.shape_chain(seed=3), d / "external" / "weights_outside.onnx", external_data=True)
    return d


def _info(path, **kw):
    return inspect_model(ModelSpec(name="m", source=str(path), **kw), 0, seed=0, batch_sizes=[1, 2], models_dir=path.parent)


# --- dimensions as exporters write them -------------------------------------------------------------


def test_minus_one_and_unnamed_dims_are_dynamic(foreign_dir):
    info = _info(foreign_dir / "minus_one_batch.onnx")  # batch written as dim_value -1
    assert info.inputs[0].dims == ("batch", 3, 16, 16)
    info = _info(foreign_dir / "dynamic_resize.onnx", input_shapes={"x": ["batch", 3, 12, 16]})
    assert info.shapes(2) == {"x": (2, 3, 12, 16)}


def test_named_dims_fix_every_input_that_uses_them(foreign_dir):
    info = _info(foreign_dir / "two_inputs.onnx", dims={"seq": 7}, input_ranges={"ids": [0, 50]})
    assert info.shapes(2) == {"ids": (2, 7), "mask": (2, 7)}
    assert [i.dtype for i in info.inputs] == ["int64", "bool"]
    assert info.inputs[0].value_range == (0.0, 50.0)


def test_unfixed_dims_are_an_error_that_says_how_to_fix_them(foreign_dir):
    with pytest.raises(BenchError) as e:
        _info(foreign_dir / "shape_chain.onnx")
    msg = str(e.value)
    assert "[N, 3, height, width]" in msg and "input_shapes: {x: [batch, 3, <height>, <width>]}" in msg
    assert "dims: {height: ..., width: ...}" in msg
    with pytest.raises(BenchError, match=r"dims: \['heigth'\] are not dynamic dimensions .* \['N', 'height', 'width'\]"):
        _info(foreign_dir / "shape_chain.onnx", dims={"heigth": 20, "width": 20})
    with pytest.raises(BenchError, match=r"input_ranges: \['idz'\] not inputs"):
        _info(foreign_dir / "two_inputs.onnx", dims={"seq": 4}, input_ranges={"idz": [0, 5]})


def test_seeded_inputs_follow_each_inputs_dtype_and_range(foreign_dir):
    from bench.inputs import seeded_feeds

    info = _info(foreign_dir / "two_inputs.onnx", dims={"seq": 64}, input_ranges={"ids": [40, 50]})
    (feed,) = seeded_feeds(info, 3, seed=0, iterations=1)
    assert feed["ids"].dtype == np.int64 and feed["ids"].min() >= 40 and feed["ids"].max() < 50
    assert feed["mask"].dtype == np.bool_ and 0 < feed["mask"].mean() < 1


# --- the preparation stage ----------------------------------------------------------------------------


def test_preparation_folds_shape_subgraphs_and_keeps_outputs_exact(foreign_dir, tmp_path):
    info = _info(foreign_dir / "shape_chain.onnx", dims={"height": 20, "width": 24})
    source = materialize(info)
    prepared = for_cell(source, 2, ArtifactCache(tmp_path))
    model = onnx.load(str(prepared.path))
    assert not {"Shape", "Gather", "Concat", "Sub", "Cast"} & {n.op_type for n in model.graph.node}
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 20, 24]
    assert prepared.source_sha256 == source.sha256 != prepared.sha256
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 24)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(source.path), run(prepared.path))
    again = for_cell(source, 2, ArtifactCache(tmp_path))
    assert again.facts["prepared_cache_hit"] and again.sha256 == prepared.sha256
    assert for_cell(source, 1, ArtifactCache(tmp_path)).sha256 != prepared.sha256  # one model per cell shape


def test_a_backend_with_profiles_keeps_the_batch_axis_dynamic(foreign_dir, tmp_path):
    info = _info(foreign_dir / "shape_chain.onnx", dims={"height": 20, "width": 24})
    prepared = for_cell(materialize(info), 2, ArtifactCache(tmp_path), keep_batch_dynamic=True)
    dims = onnx.load(str(prepared.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 20, 24]
    assert prepared.facts["gflop"] == pytest.approx(2 * 2 * 8 * 20 * 24 * 27 / 1e9 + 2 * 2 * 10 * 8 / 1e9)


def test_external_data_is_hashed_loaded_and_cached(foreign_dir, tmp_path):
    path = foreign_dir / "external" / "weights_outside.onnx"
    data = path.parent / "weights_outside.data"
    graph_only = onnx.load(str(path), load_external_data=False)
    assert data.is_file() and all(t.data_location == TensorProto.EXTERNAL for t in graph_only.graph.initializer)
    before = model_sha256(path)
    info = _info(path, dims={"height": 16, "width": 16})
    prepared = for_cell(materialize(info), 1, ArtifactCache(tmp_path))
    assert prepared.facts["gflop"] > 0
    raw = data.read_bytes()
    try:
        data.write_bytes(bytes(b ^ 0xFF for b in raw[:4]) + raw[4:])  # same graph file, other weights
        assert model_sha256(path) != before
        assert for_cell(materialize(info), 1, ArtifactCache(tmp_path)).sha256 != prepared.sha256
    finally:
        data.write_bytes(raw)
    assert model_sha256(path) == before


# --- every backend, every precision -------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_run(foreign_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("foreign-run")
    cfg = config_from_dict({
        "name": "foreign",
        "models": [
            {"name": "shape_chain", "source": str(foreign_dir / "shape_chain.onnx"), "dims": {"height": 20, "width": 24}},
            {"name": "dynamic_resize", "source": str(foreign_dir / "dynamic_resize.onnx"), "input_shapes": {"x": ["batch", 3, 12, 16]}},
            {"name": "minus_one_batch", "source": str(foreign_dir / "minus_one_batch.onnx")},
            {"name": "two_inputs", "source": str(foreign_dir / "two_inputs.onnx"), "dims": {"seq": 7}, "input_ranges": {"ids": [0, 50]}},
            {"name": "external", "source": str(foreign_dir / "external" / "weights_outside.onnx"), "dims": {"height": 16, "width": 16}},
        ],
        "backends": ["onnxruntime", "tvm"], "precisions": ["fp32", "fp16", "int8"], "batch_sizes": [2],
        "timing": FAST_TIMING, "calibration": {"samples": 16}, "repeats": 1,  # conversions under test, not statistics
    })
    run_dir = execute(plan(cfg, work), work / "results", run_id="foreign", isolate=False, cache_dir=work / "cache")
    return run_dir, pd.read_csv(run_dir / "cells.csv")


def test_foreign_models_run_validated_on_every_backend_and_precision(foreign_run):
    _, cells = foreign_run
    bad = cells[(cells["status"] != "ok") | ~cells["validated"].astype(bool) | ~cells["accuracy_ok"].astype(bool)]
    assert bad.empty, bad[["model", "backend", "precision", "status", "error", "accuracy_note"]].to_string()
    assert len(cells) == 5 * 2 * 3
    assert (cells.loc[cells["precision"] == "int8", "cosine"] < 1).all()  # really quantized


def test_rows_record_both_hashes_and_the_work_done(foreign_run):
    _, cells = foreign_run
    assert (cells["model_sha256"] != cells["prepared_sha256"]).all()
    # one prepared model per (model, shape), whatever the backend and precision
    assert (cells.groupby("model")["prepared_sha256"].nunique() == 1).all()
    chain = cells[cells["model"] == "shape_chain"]
    assert chain["gflop"].iloc[0] == pytest.approx((2 * 2 * 8 * 20 * 24 * 27 + 2 * 2 * 10 * 8) / 1e9)
    samples = pd.read_parquet(foreign_run[0] / "samples.parquet")
    p50 = samples.groupby(["model", "backend", "precision", "batch_size"])["latency_ms"].median()  # from the raw samples
    key = pd.MultiIndex.from_frame(cells[["model", "backend", "precision", "batch_size"]])
    assert np.allclose(cells["achieved_gflops"], cells["gflop"].to_numpy() / (p50.loc[key].to_numpy() / 1e3))
    if cpu_peak()["fp32_peak_gflops_per_core"]:
        assert (cells["pct_of_peak"] > 0).all()
    else:
        assert cells["pct_of_peak"].isna().all()
    meta = json.loads((foreign_run[0] / "meta.json").read_text())
    assert "cpu_peak" in meta["environment"]


# --- what cannot be built fails with the node named -----------------------------------------------------


def test_an_importer_failure_names_the_offending_node(tmp_path):
    from bench.backends.tvm import TvmBackend
    from bench.models.prepare import InputInfo, ModelInfo, PreparedModel

    w = numpy_helper.from_array(np.ones((1, 1, 1, 1, 1, 1), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2, 2, 2])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_4d")], "g", [x], [y], [w])
    path = tmp_path / "conv4d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    info = ModelInfo("conv4d", str(path), (InputInfo("x", "float32", (1, 1, 2, 2, 2, 2)),), "unknown", path)
    model = PreparedModel(info, path, "0" * 64, 17)
    with pytest.raises(ImportFailed, match=r"TVM's ONNX importer failed at node 'conv_4d' \(Conv\): NotImplementedError: Ndim > 5"):
        TvmBackend().compile(CompileRequest(model, "fp32", 1, info.shapes(1), 1, tmp_path / "w", ArtifactCache(tmp_path, enabled=False)))


# --- FLOPs against hand-computed counts ------------------------------------------------------------------


def _single(op, x_shape, w_shape, out_shape, **attrs):
    w = numpy_helper.from_array(np.zeros(w_shape, np.float32), "w")
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op, x, w, out, attrs, expected", [
    # 2 x N x Cout x Ho x Wo x Cin x kh x kw
    ("Conv", [2, 3, 8, 8], [4, 3, 3, 3], [2, 4, 8, 8], {"pads": [1, 1, 1, 1]}, 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3),
    # stride 2, no padding: 3x3 output
    ("Conv", [1, 3, 7, 7], [5, 3, 3, 3], [1, 5, 3, 3], {"strides": [2, 2]}, 2 * 5 * 3 * 3 * 27),
    # depthwise (groups = channels): each output sees 1 channel
    ("Conv", [1, 8, 6, 6], [8, 1, 3, 3], [1, 8, 6, 6], {"pads": [1, 1, 1, 1], "group": 8}, 2 * 8 * 6 * 6 * 9),
    # transposed: 2 x N x Cin x Hi x Wi x Cout x kh x kw
    ("ConvTranspose", [1, 4, 5, 5], [4, 2, 2, 2], [1, 2, 10, 10], {"strides": [2, 2]}, 2 * 4 * 5 * 5 * 2 * 4),
    # batched matmul: 2 x batch x M x N x K
    ("MatMul", [3, 5, 7], [7, 11], [3, 5, 11], {}, 2 * 3 * 5 * 11 * 7),
    # Gemm with transB: 2 x M x N x K
    ("Gemm", [6, 9], [4, 9], [6, 4], {"transB": 1}, 2 * 6 * 4 * 9),
])
def test_flop_counts_match_hand_computed(op, x, w, out, attrs, expected):
    counted = count_flops(_single(op, x, w, out, **attrs))
    assert counted == {"flops": expected, "by_op": {op: expected}, "uncounted": []}


def test_peak_is_a_product_of_its_stated_factors():
    peak = cpu_peak(cores=2)
    if peak["fp32_peak_gflops"] is None:
        pytest.skip(f"no clock readable here: {peak['peak_basis']}")
    assert peak["fp32_peak_gflops"] == pytest.approx(2 * peak["fp32_peak_gflops_per_core"], rel=1e-3)
    assert peak["peak_basis"].startswith("2 cores x ")


# --- bench inspect -----------------------------------------------------------------------------------------


def test_inspect_prints_a_pasteable_input_shapes_block(foreign_dir, tmp_path):
    import yaml

    from bench.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["inspect", str(foreign_dir / "shape_chain.onnx"), "--dim", "height=224", "--dim", "width=224", "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert "x: float32 [N, 3, height, width]  dynamic: 0 (N), 2 (height), 3 (width)" in res.output
    assert "Conv x1" in res.output and "parameters 324" in res.output
    assert f"{2 * 4 * 8 * 224 * 224 * 27 / 1e9 + 2 * 4 * 10 * 8 / 1e9:.4g} GFLOP" in res.output
    block = res.output[res.output.index("input_shapes:"):]
    pasted = yaml.safe_load(block)
    assert pasted == {"input_shapes": {"x": ["batch", 3, 224, 224]}}
    # the block works in a config as printed
    spec = ModelSpec(name="m", source=str(foreign_dir / "shape_chain.onnx"), **pasted)
    assert inspect_model(spec, 0, 0, [1], tmp_path).shapes(4) == {"x": (4, 3, 224, 224)}

    res = runner.invoke(app, ["inspect", str(foreign_dir / "two_inputs.onnx"), "--json"])
    desc = json.loads(res.output)
    assert [i["dtype"] for i in desc["inputs"]] == ["int64", "bool"] and desc["gflop"] is None
    assert "dims: {seq: ...}" in desc["flops_note"]
    res = runner.invoke(app, ["inspect", str(foreign_dir / "shape_chain.onnx"), "--dim", "height"])
    assert res.exit_code == 2 and "expected NAME=SIZE" in res.output
