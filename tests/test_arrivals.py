"""The models people bring, round 2 (issue 21): each class of failure seen on real files from other
exporters, reproduced by a model written here (tests/foreign.py), through preparation, precision
conversion and both CPU backends."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.cache import ArtifactCache
from bench.config import AS_GIVEN, config_from_dict
from bench.models.freeze import prepare
from bench.models.graph import graph_problem, quantized_ops
from bench.precision import ConversionRefused, fp16_onnx, int8_onnx, route_of
from bench.runner import execute, plan
from tests import foreign
from tests.conftest import FAST_TIMING


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _calibration(n=4, shape=(1, 3, 16, 16)):
    rng = np.random.default_rng(1)
    return [{"x": rng.random(shape, dtype=np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory):
    d = tmp_path_factory.mktemp("arrivals")
    return {
        "resize11": foreign.save(foreign.small_cnn(opset=11, resize=True), d / "resize11.onnx"),
        "cnn11": foreign.save(foreign.small_cnn(opset=11, seed=2), d / "cnn11.onnx"),
        "lstm": foreign.save(foreign.lstm_head(), d / "lstm.onnx"),
        "quantized": foreign.dynamically_quantized(d / "quantized.onnx"),
    }


# --- preparation is opset-aware and proven safe ----------------------------------------------------------


def test_preparation_keeps_an_input_the_models_opset_requires(arrivals, tmp_path):
    # Resize-11's roi is required: dropping the empty one to "absent" made a graph ONNX Runtime refuses
    path, _, facts = prepare(arrivals["resize11"], "r11", {"x": [2, 3, 16, 16]}, ArtifactCache(tmp_path))
    assert facts["preparation"] == "prepared" and path != arrivals["resize11"]
    assert graph_problem(path) == ""
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(_run(path, x)[0], _run(arrivals["resize11"], x)[0])


def test_a_prepared_model_that_fails_its_check_falls_back_to_the_original(arrivals, tmp_path, monkeypatch):
    # the old rule (drop an empty input whatever the opset) brought back: the check catches its result
    monkeypatch.setattr("bench.models.graph.input_is_optional", lambda *a, **k: True)
    monkeypatch.setattr("bench.models.freeze._upgrade_for_absent_inputs", lambda model: (model, None))
    path, _, facts = prepare(arrivals["resize11"], "r11", {"x": [2, 3, 16, 16]}, ArtifactCache(tmp_path))
    assert path == arrivals["resize11"]
    assert facts["preparation"].startswith("original file: the prepared model failed its check")
    assert "input 1 is marked single but has an empty string" in facts["preparation"]


@pytest.mark.parametrize("name", ["shape_chain", "dynamic_resize", "minus_one_batch", "resize11", "lstm", "quantized"])
def test_each_prepared_model_computes_what_the_original_does(name, arrivals, tmp_path):
    src = arrivals.get(name) or foreign.save(foreign.FOREIGN[name](), tmp_path / f"{name}.onnx")
    shape = {"minus_one_batch": (2, 3, 16, 16), "shape_chain": (2, 3, 20, 24), "dynamic_resize": (2, 3, 12, 16)}.get(name, (2, 3, 16, 16))
    path, _, facts = prepare(src, name, {"x": list(shape)}, ArtifactCache(tmp_path))
    assert facts["preparation"] == "prepared", facts
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    for got, want in zip(_run(path, x), _run(src, x)):
        np.testing.assert_array_equal(got, want)


# --- int8 and fp16 on any opset, graphs checked before a backend sees them ------------------------------


def test_int8_below_opset_13_is_upgraded_first_and_loads(arrivals, tmp_path):
    path, _ = int8_onnx(arrivals["cnn11"], "c11", _calibration(), ArtifactCache(tmp_path))
    assert route_of(path) == "int8 QDQ per-channel; opset 11 -> 13 (ONNX version converter)"
    model = onnx.load(str(path))
    assert graph_problem(path) == ""
    assert any(a.name == "axis" for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute)
    x = _calibration(1)[0]["x"]
    assert np.corrcoef(_run(path, x)[0].ravel(), _run(arrivals["cnn11"], x)[0].ravel())[0, 1] > 0.95


def test_int8_is_per_tensor_where_the_opset_cannot_be_upgraded(arrivals, tmp_path, monkeypatch):
    def refuse(model, target):
        raise RuntimeError("ConvertError: Input w1 is undefined!")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    path, _ = int8_onnx(arrivals["cnn11"], "c11", _calibration(), ArtifactCache(tmp_path))
    assert route_of(path).startswith("int8 QDQ per-tensor at opset 11 (per-channel needs opset 13; the version converter "
                                     "could not upgrade it: RuntimeError: ConvertError: Input w1 is undefined!")
    assert graph_problem(path) == ""
    model = onnx.load(str(path))
    assert not any(a.name == "axis" for n in model.graph.node for a in n.attribute if n.op_type == "DequantizeLinear")
    # below opset 10 there is no QuantizeLinear at all: refused, with the reason
    old = foreign.save(foreign.small_cnn(opset=9, ir_version=4), tmp_path / "cnn9.onnx")
    with pytest.raises(ConversionRefused, match="int8 needs opset 10 or more .* this model is opset 9"):
        int8_onnx(old, "c9", _calibration(), ArtifactCache(tmp_path))


def test_fp16_leaves_quantization_operators_and_their_inputs_alone(arrivals, tmp_path):
    path, _ = fp16_onnx(arrivals["quantized"], "q", ArtifactCache(tmp_path))
    assert graph_problem(path) == ""
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    dql = [n for n in inferred.node if n.op_type == "DynamicQuantizeLinear"]
    assert dql and all(types[n.input[0]] == TensorProto.FLOAT for n in dql)


def test_a_graph_that_mixes_float_types_is_refused_before_any_backend():
    w = numpy_helper.from_array(np.ones((4,), np.float16), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"], name="add_3")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from bench.models.graph import _type_mix

    assert _type_mix(model) == "node 'add_3' (Add) mixes float, float16 inputs"


# --- a whole sweep: every class, both CPU backends ----------------------------------------------------


@pytest.fixture(scope="module")
def arrivals_run(arrivals, tmp_path_factory):
    work = tmp_path_factory.mktemp("arrivals-run")
    cfg = config_from_dict({
        "name": "arrivals",
        "models": [{"name": name, "source": str(path)} for name, path in arrivals.items()],
        "backends": ["onnxruntime", "tvm"], "precisions": ["fp32", "fp16", "int8"], "batch_sizes": [2],
        "timing": FAST_TIMING, "calibration": {"samples": 8}, "repeats": 1,
    })
    p = plan(cfg, work)
    run_dir = execute(p, work / "results", run_id="arrivals", isolate=False, cache_dir=work / "cache")
    return p, run_dir, pd.read_csv(run_dir / "cells.csv")


def _cell(cells, model, backend, precision):
    (row,) = cells[(cells["model"] == model) & (cells["backend"] == backend) & (cells["precision"] == precision)].to_dict("records")
    return row


def test_every_cell_is_ok_and_validated_or_refused_with_the_engines_limit(arrivals_run):
    _, _, cells = arrivals_run
    ok = (cells["status"] == "ok") & cells["validated"].astype(bool) & cells["accuracy_ok"].astype(bool)
    # refused only where the engine has no converter, or the model arrives quantized
    refused = (cells["status"] == "skipped") & (
        ((cells["model"] == "lstm") & (cells["backend"] == "tvm") & cells["error"].str.contains("no converter for LSTM"))
        | ((cells["model"] == "quantized") & cells["error"].str.contains("no converter for ConvInteger|arrives quantized")))
    assert (ok | refused).all(), cells.loc[~(ok | refused), ["model", "backend", "precision", "status", "error", "accuracy_note"]].to_string()
    assert ok[cells["model"].isin(["resize11", "cnn11"])].all()
    assert _cell(cells, "cnn11", "tvm", "int8")["precision_route"].endswith("opset 11 -> 13 (ONNX version converter)")


def test_the_importer_names_the_nodes_it_refused(arrivals_run):
    _, _, cells = arrivals_run
    for precision in ("fp32", "fp16", "int8"):
        row = _cell(cells, "lstm", "tvm", precision)
        assert row["status"] == "skipped" and row["error"] == "TVM's ONNX importer has no converter for LSTM (node 'LSTM_3')"
    assert _cell(cells, "lstm", "onnxruntime", "fp32")["status"] == "ok"
    row = _cell(cells, "quantized", "tvm", AS_GIVEN)
    assert "no converter for" in row["error"] and "ConvInteger (2 nodes:" in row["error"] and "Reshape" not in row["error"]


def test_a_model_that_arrives_quantized_runs_as_given_and_is_not_converted(arrivals_run, arrivals):
    p, _, cells = arrivals_run
    assert p.models["quantized"].quantized == quantized_ops(onnx.load(str(arrivals["quantized"]))) == "ConvInteger x2, DynamicQuantizeLinear x2"
    q = cells[cells["model"] == "quantized"]
    assert sorted(q["precision"]) == sorted([AS_GIVEN, "fp16", "int8"] * 2)
    given = _cell(cells, "quantized", "onnxruntime", AS_GIVEN)
    assert given["status"] == "ok" and given["validated"] and given["accuracy_ok"] and given["cosine"] == pytest.approx(1.0)
    assert given["model_sha256"] != "" and pd.isna(given.get("precision_route"))  # no conversion
    for precision in ("fp16", "int8"):
        row = _cell(cells, "quantized", "onnxruntime", precision)
        assert row["status"] == "skipped"
        assert row["error"] == (f"{precision} conversion skipped: quantized arrives quantized (ConvInteger x2, DynamicQuantizeLinear x2); "
                                f"it runs as given in its '{AS_GIVEN}' cells")


def test_inspect_says_a_model_arrives_quantized(arrivals):
    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(app, ["inspect", str(arrivals["quantized"]), "--shape", "x=batch,3,16,16"])
    assert res.exit_code == 0, res.output
    assert (f"arrives quantized (ConvInteger x2, DynamicQuantizeLinear x2): a sweep runs it as given, under precision "
            f"'{AS_GIVEN}', and skips fp16 and int8 conversions of it") in res.output
    plain = CliRunner().invoke(app, ["inspect", str(arrivals["cnn11"])])
    assert plain.exit_code == 0 and "arrives quantized" not in plain.output


def test_a_long_error_keeps_its_cause_at_the_end():
    from bench.jobs import ERROR_HEAD, ERROR_TAIL, error_text

    # what ONNX Runtime says of an invalid int8 graph: the node first, the reason last
    message = ("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from model.onnx failed:This is an invalid model. In Node, "
               + "(\"ConvBnFusion_BN_B_bias_DequantizeLinear\", DequantizeLinear, \"\", -1) : " * 12
               + "Error Unrecognized attribute: axis for operator DequantizeLinear")
    text = error_text(RuntimeError(message))
    assert text.startswith("RuntimeError: [ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model")
    assert text.endswith("Error Unrecognized attribute: axis for operator DequantizeLinear")
    assert "the whole message is in the cell's log" in text and len(text) < ERROR_HEAD + ERROR_TAIL + 120
    assert error_text(ValueError("short\n  and two lines")) == "ValueError: short and two lines"
    try:
        raise AssertionError  # a library's bare assert (no message): the row says where it stopped
    except AssertionError as e:
        assert error_text(e).startswith("AssertionError at test_arrivals.py:")
        assert error_text(e).endswith("(test_a_long_error_keeps_its_cause_at_the_end)")


def test_an_importer_that_checks_every_op_first_is_not_blamed_on_its_last_node(arrivals):
    # TVM's own check raises after its loop over the graph, with `node` left at the last node
    from bench.backends.base import ImportFailed

    model = onnx.load(str(arrivals["lstm"]))
    try:
        for node in model.graph.node:
            pass
        raise NotImplementedError("The following operators are not supported for frontend ONNX: LSTM")
    except NotImplementedError as e:
        failed = ImportFailed.wrap("TVM's ONNX importer", e, model)
    assert str(failed).startswith("TVM's ONNX importer failed at LSTM (node 'LSTM_3'): NotImplementedError")
    assert "Reshape_101" not in str(failed)


def test_fp16_on_tvm_keeps_batch_normalization_in_float32(tmp_path):
    """Conv -> BatchNormalization -> Conv in float16: TVM's BatchNormalization decomposes to float32
    and tvm.compile refused the next Conv ("Binary operators must have the same datatype")."""
    from bench.backends.base import CompileRequest
    from bench.backends.tvm import TvmBackend
    from bench.models.prepare import InputInfo, ModelInfo, PreparedModel

    path = foreign.save(foreign.conv_bn_conv(), tmp_path / "conv_bn_conv.onnx")
    info = ModelInfo("cbc", str(path), (InputInfo("x", "float32", (1, 3, 16, 16)),), "unknown", path)
    request = CompileRequest(PreparedModel(info, path, "c" * 64, 15), "fp16", 1, info.shapes(1), 1, tmp_path / "w",
                             ArtifactCache(tmp_path / "cache"))
    compiled = TvmBackend().compile(request)
    try:
        x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
        got = compiled.run({"x": x})
        want = _run(path, x)[0]
        assert np.abs(got[next(iter(got))] - want).max() < 0.05 * np.abs(want).max()
        assert request.notes["precision_route"].endswith("BatchNormalization kept in float32 for this engine")
        assert compiled.facts["executes_as"].startswith("fp16")
    finally:
        compiled.release()


@pytest.mark.parametrize("weights", ["initializers", "constant nodes"])
def test_fp16_keeps_a_node_whose_constants_float16_cannot_hold_in_float32(weights, tmp_path):
    # a BatchNormalization with running variance 1e7: clamped to float16 it wrecked a real detector
    # (cosine 0.11); paddle2onnx writes weights as Constant nodes, which must stay float32 too
    model = foreign.conv_bn_conv(variance=1e7)
    path = foreign.save(model if weights == "initializers" else foreign.as_constant_nodes(model), tmp_path / "wide.onnx")
    fp16, _ = fp16_onnx(path, "wide", ArtifactCache(tmp_path))
    assert route_of(fp16).endswith("1 node(s) kept in float32, their constants beyond float16's range (bn)")
    assert graph_problem(fp16) == ""
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    got, want = _run(fp16, x)[0].ravel(), _run(path, x)[0].ravel()
    assert np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.999


def test_a_prepared_model_whose_outputs_are_not_the_originals_is_not_used(tmp_path):
    # Squeeze with its axes given as an input: ONNX Runtime's symbolic shape inference declared the
    # output [3, 4], it is [3, 1, 4] (axis 0 squeezed); an engine binding outputs by declaration fails
    graph = helper.make_graph([helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 4]),
                               helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m", "k"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = foreign.save(model, tmp_path / "squeeze.onnx")
    got, _, facts = prepare(path, "sq", {"x": [1, 3, 1, 4], "axes": [1]}, ArtifactCache(tmp_path / "cache"))
    assert got == path
    assert facts["preparation"] == "original file: the prepared model failed its check (output 'y' is declared [3, 4] but has shape [3, 1, 4])"


def test_shape_inference_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    # ONNX Runtime's symbolic shape inference saves sym_shape_infer_temp.onnx (and a uuid .data) into
    # the working directory when it cannot infer a shape: an op it does not know does that
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from bench.models.graph import no_strays

    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["r"], domain="custom"), helper.make_node("Relu", ["r"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("custom", 1)])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.data").write_text("a user's file")
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"), no_strays():
        SymbolicShapeInference.infer_shapes(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.data"]


def test_inputs_that_the_schema_types_apart_may_differ():
    # a float16 Resize takes float32 scales (its schema types them apart): not a mix
    from bench.models.graph import _type_mix

    scales = numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1, 4, 4])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    assert _type_mix(model) == ""


def test_an_output_written_by_a_node_kept_in_float32_keeps_its_declared_type(tmp_path):
    model = foreign.conv_bn_conv(variance=1e7)
    del model.graph.node[2]  # BatchNormalization (kept in float32) now writes the graph output
    model.graph.node[1].output[0] = "y"
    path = foreign.save(model, tmp_path / "bn_last.onnx")
    fp16, _ = fp16_onnx(path, "bn_last", ArtifactCache(tmp_path))
    assert [o.type.tensor_type.elem_type for o in onnx.load(str(fp16)).graph.output] == [TensorProto.FLOAT]
    assert graph_problem(fp16) == ""
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    got = _run(fp16, x)[0]
    assert got.dtype == np.float32 and np.allclose(got, _run(path, x)[0], rtol=1e-2, atol=1e-2)


def test_the_gate_plans_and_rejudges_a_model_that_arrives_quantized(arrivals_run):
    from bench.config import Tolerance
    from bench.results import load_run
    from bench.verdicts import gate

    _, run_dir, _ = arrivals_run
    run = load_run(run_dir)
    assert run.meta["quantized_models"] == ["quantized"]
    rows = gate(run).rows
    assert "missing" not in set(rows["verdict"])  # the planned fp32 cell is the as-given one
    # a run stored before runs named their quantized models: its as-given rows say which
    del run.meta["quantized_models"]
    assert "missing" not in set(gate(run).rows["verdict"])
    given = rows[(rows["model"] == "quantized") & (rows["precision"] == AS_GIVEN)]
    assert list(given["verdict"]) == ["pass", "skipped"]  # onnxruntime; tvm has no ConvInteger
    # tolerances given for int8 judge the as-given rows too (they are int8): the row shows them
    impossible = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0)
    rejudged = gate(run, {"int8": impossible}).rows
    ran = rejudged[(rejudged["model"] == "quantized") & (rejudged["precision"] == AS_GIVEN) & (rejudged["backend"] == "onnxruntime")]
    assert list(ran["atol"]) == [0.0]


def _tvm_against_ort(path, shapes, feeds, tmp_path):
    """Compile the prepared model with TVM and compare it with ONNX Runtime on the original."""
    from bench.backends.base import CompileRequest
    from bench.backends.tvm import TvmBackend
    from bench.models.prepare import InputInfo, ModelInfo, PreparedModel

    cache = ArtifactCache(tmp_path / "cache")
    prepared, _, facts = prepare(path, path.stem, shapes, cache)
    info = ModelInfo(path.stem, str(path), tuple(InputInfo(k, str(v.dtype), v.shape) for k, v in feeds.items()), "unknown", path)
    compiled = TvmBackend().compile(CompileRequest(PreparedModel(info, prepared, "p" * 64, 13), "fp32", 1,
                                                   {k: tuple(v) for k, v in shapes.items()}, 1, tmp_path / "w", cache))
    try:
        got = next(iter(compiled.run(feeds).values()))
    finally:
        compiled.release()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return facts


def test_an_opset_11_resize_to_a_size_is_upgraded_so_tvm_takes_it(tmp_path):
    # Resize-11 requires roi and scales; TVM refused the empty scales beside sizes ("Only one of scales and sizes")
    path = foreign.save(foreign.resize_to_size_opset11(), tmp_path / "resize_size11.onnx")
    x = np.random.default_rng(0).random((1, 3, 12, 12), dtype=np.float32)
    facts = _tvm_against_ort(path, {"x": [1, 3, 12, 12]}, {"x": x}, tmp_path)
    assert facts["opset_upgraded"] == "11 -> 13" and facts["empty_inputs_dropped"] == 2 and facts["preparation"] == "prepared"


def test_range_scaled_atol_of_an_output_that_does_not_vary_is_the_atol_itself():
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult

    from bench.config import Tolerance
    from bench.validate import absolute_atols

    ref = RunResults([("ref", [IterationResult({"mask": np.ones((2, 2), np.float32), "boxes": np.asarray([0.0, 640.0], np.float32)})])])
    tol = Tolerance(atol=0.01, rtol=0.0, scale="range")
    assert absolute_atols(tol, None, ref["ref"]) == {"mask": 0.01, "boxes": pytest.approx(6.4)}


def test_a_loops_carried_values_may_each_have_their_own_type():
    from bench.models.graph import _type_mix

    carried = [("f", TensorProto.FLOAT), ("h", TensorProto.FLOAT16), ("i", TensorProto.INT32), ("j", TensorProto.INT64)]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])] + [helper.make_node("Identity", [f"{n}_in"], [f"{n}_out"]) for n, _ in carried],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(f"{n}_in", t, [2]) for n, t in carried],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])] + [helper.make_tensor_value_info(f"{n}_out", t, [2]) for n, t in carried])
    inits = [numpy_helper.from_array(np.asarray(3, np.int64), "trips"), numpy_helper.from_array(np.asarray(True), "cond"),
             numpy_helper.from_array(np.zeros(2, np.float16), "h0"), numpy_helper.from_array(np.zeros(2, np.int32), "i0"),
             numpy_helper.from_array(np.zeros(2, np.int64), "j0")]
    graph = helper.make_graph([helper.make_node("Loop", ["trips", "cond", "x", "h0", "i0", "j0"], [n for n, _ in carried], name="decode",
                                                body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info(n, t, [2]) for n, t in carried], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    assert _type_mix(model) == ""


def test_an_ai_onnx_domain_is_the_default_domain_and_extra_inputs_are_not_bound_to_the_last_parameter():
    # Pad(x: float, pads: int64) in a model that imports the default domain as 'ai.onnx'
    from bench.models.graph import _type_mix

    pads = numpy_helper.from_array(np.asarray([0, 1, 0, 1], np.int64), "pads")
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx", 13)])
    onnx.checker.check_model(model, full_check=True)
    assert _type_mix(model) == ""


def test_fp16_of_an_ir3_model_whose_weights_are_constant_nodes(tmp_path):
    model = foreign.as_constant_nodes(foreign.conv_bn_conv())
    model.ir_version = 3
    path = foreign.save(model, tmp_path / "ir3.onnx")
    fp16, _ = fp16_onnx(path, "ir3", ArtifactCache(tmp_path))
    assert graph_problem(fp16) == ""
