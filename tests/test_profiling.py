"""Per-layer profiles (bench.profiling, bench.layers): each engine's records mapped to the ONNX graph,
the node that dominates found on top by both CPU backends for real, TensorRT's documented formats
mapped, and the views built on them (op-type breakdown, gap table, bench explain / bench profile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import layers
from bench.profiling import (BY_POSITION, BY_TYPE, EXACT, UNMAPPED, Layer, Profile, _match_in_order, Graph, ort_profile, trt_profile,
                             tvm_profile, tvm_tokens)

DATA = Path(__file__).parent / "data" / "trt"


def _w(rng, name, shape, scale=0.2):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def trt_block(seed: int = 0) -> onnx.ModelProto:
    """input -> /stem/Conv(bias) -> /stem/Relu -> /block/Conv -> /block/Add(+stem) -> /block/Relu -> head (Flatten, MatMul, Add)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["/stem/Conv_output_0"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/stem/Conv_output_0"], ["/stem/Relu_output_0"], name="/stem/Relu"),
        helper.make_node("Conv", ["/stem/Relu_output_0", "w2"], ["/block/Conv_output_0"], name="/block/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["/block/Conv_output_0", "/stem/Relu_output_0"], ["/block/Add_output_0"], name="/block/Add"),
        helper.make_node("Relu", ["/block/Add_output_0"], ["/block/Relu_output_0"], name="/block/Relu"),
        helper.make_node("Flatten", ["/block/Relu_output_0"], ["/head/Flatten_output_0"], name="/head/Flatten"),
        helper.make_node("MatMul", ["/head/Flatten_output_0", "w3"], ["/head/MatMul_output_0"], name="/head/MatMul"),
        helper.make_node("Add", ["/head/MatMul_output_0", "b3"], ["output"], name="/head/Add"),
    ]
    graph = helper.make_graph(nodes, "trt_block", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
                              [_w(rng, "w1", (16, 3, 3, 3)), _w(rng, "b1", (16,)), _w(rng, "w2", (16, 16, 3, 3)),
                               _w(rng, "w3", (16 * 32 * 32, 10), 0.01), _w(rng, "b3", (10,))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dominated(seed: int = 0) -> onnx.ModelProto:
    """A network where one node, 'heavy' (a 3x3 convolution, 96 -> 96 channels), holds nearly all the
    work: the layers around it are a 1x1 convolution to 96 channels, Relus, an Add and a pooling."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["input", "w_in", "b_in"], ["a"], name="widen"),
        helper.make_node("Relu", ["a"], ["b"], name="relu_a"),
        helper.make_node("Conv", ["b", "w_heavy", "b_heavy"], ["c"], name="heavy", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "b"], ["d"], name="residual"),
        helper.make_node("Relu", ["d"], ["e"], name="relu_d"),
        helper.make_node("GlobalAveragePool", ["e"], ["output"], name="pool"),
    ]
    graph = helper.make_graph(nodes, "dominated", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 24, 24])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 96, 1, 1])],
                              [_w(rng, "w_in", (96, 8, 1, 1)), _w(rng, "b_in", (96,)), _w(rng, "w_heavy", (96, 96, 3, 3), 0.05),
                               _w(rng, "b_heavy", (96,))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --- the mappings, on records of each engine's format -------------------------------------------------


def test_tvm_kernel_names_split_into_their_ops():
    assert tvm_tokens("fused_conv2d6_add5_relu3") == ["conv2d", "add", "relu"]
    assert tvm_tokens("fused_conv2d29_add23_maximum11_minimum11") == ["conv2d", "add", "maximum", "minimum"]
    assert tvm_tokens("max_pool2d") == ["max_pool2d"]
    assert tvm_tokens("adaptive_avg_pool2d1") == ["adaptive_avg_pool2d"]
    assert tvm_tokens("fused_matmul_add24") == ["matmul", "add"]


def test_tvm_kernels_map_in_order_fused_or_not():
    graph = Graph.of(trt_block())
    # untuned TVM: one kernel per op, the Conv's bias a separate add
    unfused = [["conv2d"], ["add"], ["relu"], ["conv2d"], ["add"], ["relu"], ["reshape"], ["matmul"], ["add"]]
    got = _match_in_order(graph, unfused)
    assert [n for n, _ in got] == [["/stem/Conv"], ["/stem/Conv"], ["/stem/Relu"], ["/block/Conv"], ["/block/Add"], ["/block/Relu"],
                                    ["/head/Flatten"], ["/head/MatMul"], ["/head/Add"]]
    assert {c for _, c in got} == {BY_TYPE}
    # tuned TVM: fused PrimFuncs; a transpose no ONNX node of the graph names goes to its neighbour
    fused = [["conv2d", "add", "relu"], ["conv2d", "add", "relu"], ["transpose"], ["matmul", "add"]]
    got = _match_in_order(graph, fused)
    assert got[0] == (["/stem/Conv", "/stem/Conv", "/stem/Relu"], BY_TYPE)
    assert got[1] == (["/block/Conv", "/block/Add", "/block/Relu"], BY_TYPE)
    assert got[2] == (["/block/Relu"], BY_POSITION)
    assert got[3][0] == ["/head/MatMul", "/head/Add"]


def test_tvm_anchors_that_do_not_count_alike_are_only_by_position():
    graph = Graph.of(trt_block())
    # one more conv2d kernel than the graph has Conv nodes (a weight transform, say): every later match may be shifted
    got = _match_in_order(graph, [["conv2d"], ["conv2d"], ["add"], ["conv2d"], ["relu"], ["matmul", "add"]])
    assert [c for _, c in got[:2]] == [BY_POSITION, BY_POSITION] and got[5][1] == BY_TYPE


def test_onnxruntime_events_map_through_renamed_and_fused_nodes():
    model = trt_block()
    # ONNX Runtime's optimized graph: the stem fused into an NCHWc Conv named after its output tensor,
    # the block's Conv+Add+Relu fused under the Conv's name, the head kept by name.
    def ev(name, op, dur, ts):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts, "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = []
    for run in range(3):
        t = run * 1000
        events += [{"cat": "Session", "name": "model_run", "dur": 200, "ts": t},
                   ev("/stem/Relu_output_0_nchwc", "Conv", 50, t + 1), ev("/block/Conv", "FusedConv", 100, t + 60),
                   ev("reorder_out", "ReorderOutput", 5, t + 165), ev("/head/Flatten", "Flatten", 1, t + 170), ev("/head/MatMul", "MatMul", 19, t + 172),
                   ev("/head/Add", "Add", 5, t + 192)]
    profile = ort_profile(events, model, None, warmup_runs=1, wall_us=180.0)
    by = {layer.kernel: layer for layer in profile.layers}
    assert by["/stem/Relu_output_0_nchwc"].nodes == ("/stem/Conv", "/stem/Relu")
    # no optimized graph given (a compiling provider cannot save one): the fused chain follows its head
    assert by["/block/Conv"].nodes == ("/block/Conv", "/block/Add", "/block/Relu") and by["/block/Conv"].confidence == EXACT
    assert by["/head/MatMul"].nodes == ("/head/MatMul",)
    assert by["reorder_out"].confidence == UNMAPPED and by["reorder_out"].op_types == ("ReorderOutput",)
    assert profile.passes == 2  # the warm-up run and its nodes left out
    assert profile.coverage == pytest.approx(180 / 200) and profile.mapped == pytest.approx(175 / 200)
    assert profile.overhead == pytest.approx(200 / 180)


def test_graph_names_unnamed_and_repeated_nodes_apart():
    model = trt_block()
    model.graph.node[1].name = ""
    model.graph.node[4].name = "/stem/Conv"
    graph = Graph.of(model)
    assert graph.order[:5] == ["/stem/Conv", "Relu_1", "/block/Conv", "/block/Add", "/stem/Conv#4"]
    assert graph.biased == {"/stem/Conv"} and not graph.static


def test_onnxruntime_nchwc_kernels_take_the_nodes_fused_into_them():
    """Mid-graph, as ONNX Runtime's layout transformer writes it: a fused Conv+Add+Relu named after its
    output, `<tensor>_nchwc`, must take the Conv and Add, not leave them to the kernel before it."""
    def ev(name, op, dur, ts):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts, "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "dur": 200, "ts": 0}, ev("/stem/Relu_output_0_nchwc", "Conv", 50, 1),
              ev("/block/Relu_output_0_nchwc", "Conv", 100, 60), ev("/head/Flatten", "Flatten", 1, 170), ev("/head/MatMul", "MatMul", 19, 172)]
    by = {layer.kernel: layer for layer in ort_profile(events, trt_block(), None).layers}
    assert by["/stem/Relu_output_0_nchwc"].nodes == ("/stem/Conv", "/stem/Relu")
    assert by["/block/Relu_output_0_nchwc"].nodes == ("/block/Conv", "/block/Add", "/block/Relu")
    assert by["/head/MatMul"].nodes == ("/head/MatMul", "/head/Add")  # the bias add: only the MatMul feeds it
    # unnamed nodes: ONNX Runtime says <op>_<index> counting the nodes it keeps (a Constant node becomes an initializer)
    unnamed = trt_block()
    unnamed.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=numpy_helper.from_array(np.zeros(1, np.float32))))
    for node in unnamed.graph.node:
        node.name = ""
    named = ort_profile([{"cat": "Session", "name": "model_run", "dur": 10, "ts": 0}, ev("Conv_2", "Conv", 5, 1)], unnamed, None)
    assert "Conv_3" in named.layers[0].nodes and named.layers[0].confidence == EXACT  # the second Conv, 4th in the file


def test_tensorrt_layers_map_from_inspector_and_profile_of_the_documented_formats():
    inspector = json.loads((DATA / "inspector.json").read_text())
    records = json.loads((DATA / "profile.json").read_text())
    profile = trt_profile(inspector, records, trt_block(), wall_us=110.0)
    by = {layer.kernel: layer for layer in profile.layers}
    assert by["/stem/Conv + /stem/Relu"].nodes == ("/stem/Conv", "/stem/Relu")  # from Metadata
    assert by["/stem/Conv + /stem/Relu"].confidence == EXACT
    assert by["/block/Conv + /block/Add + /block/Relu"].nodes == ("/block/Conv", "/block/Add", "/block/Relu")  # from the name
    foreign = by["{ForeignNode[/head/Flatten.../head/Add]}"]
    assert foreign.nodes == ("/head/Flatten", "/head/MatMul", "/head/Add") and foreign.confidence == BY_POSITION
    reformat = by["Reformatting CopyNode for Input Tensor 0 to /stem/Conv + /stem/Relu"]
    assert reformat.confidence == UNMAPPED and reformat.op_types == ("(reformat)",)
    assert profile.passes == 200
    assert by["/block/Conv + /block/Add + /block/Relu"].median_us == pytest.approx(57.3)
    assert profile.mapped == pytest.approx((22.5 + 57.3 + 16.4) / 110) and profile.coverage == pytest.approx(100.3 / 110)
    assert max(profile.layers, key=lambda x: x.us_per_pass).op_type == "Conv"


def test_coverage_is_taken_pass_by_pass():
    """On a busy machine each pass is preempted in a different layer: the layers' medians are of quiet
    passes, the median pass is a slowed one; each pass's own share says what the profile covers."""
    def ev(name, dur, ts):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts, "args": {"op_name": "Conv"}}

    events = []
    for i, (a, b, wall) in enumerate([(100, 10, 120), (10, 100, 120), (10, 10, 30)]):
        t = i * 1000
        events += [{"cat": "Session", "name": "model_run", "dur": wall, "ts": t}, ev("/stem/Conv", a, t + 1), ev("/block/Conv", b, t + 2 + a)]
    got = ort_profile(events, trt_block(), None)
    assert got.covered_us == pytest.approx(20.0) and got.profiled_wall_us == pytest.approx(120.0)  # medians: 17% apart
    assert got.coverage == pytest.approx(110 / 120) and got.mapped == pytest.approx(110 / 120)
    calls = [[("conv2d", 100_000), ("vm.builtin.alloc_tensor", 1_000)], [("conv2d", 10_000), ("vm.builtin.alloc_tensor", 50_000)],
             [("conv2d", 10_000), ("vm.builtin.alloc_tensor", 1_000)]]
    tvm = tvm_profile(calls, [110_000, 70_000, 12_000], trt_block())
    assert tvm.coverage == pytest.approx(11 / 12) and tvm.mapped == pytest.approx(10 / 12)


def test_a_profile_that_covers_little_says_so():
    layer = Layer("k", ("n",), ("Conv",), EXACT, 1, 50.0)
    assert "cover 50%" in Profile("p", [layer], 100.0, 3, {"profiled_wall_us": 100.0}).note
    assert Profile("p", [layer], 55.0, 3, {"profiled_wall_us": 55.0}).note == ""
    slowed = Profile("p", [layer], 30.0, 3, {"profiled_wall_us": 55.0})
    # the layers sum to 50 us of a 30 us unprofiled pass: the 20 us excess comes off each call alike
    assert "slowed the forward pass 1.83x" in slowed.note and slowed.estimated_us(layer) == pytest.approx(30.0)
    assert slowed.of_latency == pytest.approx(50 / 30) and slowed.coverage == pytest.approx(50 / 55)
    between = Profile("p", [layer], 52.0, 3, {"profiled_wall_us": 60.0})  # the profiler's cost lies between layers
    assert between.estimated_us(layer) == pytest.approx(50.0)


def _frame(cells: dict[str, list[tuple[str, tuple[str, ...], str, float]]]) -> pd.DataFrame:
    items = []
    for cell, rows in cells.items():
        backend, _, precision = cell.partition(" ")
        p = Profile("p", [Layer(k, nodes, ops, EXACT if nodes else UNMAPPED, 1, us) for k, nodes, ops, us in rows], 1000.0, 3)
        items.append({"model": "m", "backend": backend, "precision": precision or "fp32", "batch_size": 1, "scenario": "single_stream",
                      "streams": 1, "rate": "", "target": "local", "variant": "v", "profile": p.to_dict()})
    return layers.frame(items)


def test_gap_table_compares_node_groups_each_engine_ran_whole():
    df = _frame({"slow": [("conv_k", ("c1",), ("Conv",), 600.0), ("relu_k", ("r1",), ("Relu",), 50.0), ("conv2_k", ("c2",), ("Conv",), 100.0)],
                 "fast": [("fused", ("c1", "r1"), ("Conv", "Relu"), 100.0), ("conv2_k", ("c2",), ("Conv",), 90.0),
                          ("reorder", (), ("(unmapped)",), 5.0)]})
    gap = layers.gap_table(df, {"backend": "slow"}, {"backend": "fast"})
    top = gap.iloc[0]
    assert top["group"] == "c1 (+1)" and top["op_types"] == "Conv+Relu"
    assert top["a_ms"] == pytest.approx(0.65) and top["b_ms"] == pytest.approx(0.1) and top["gap_ms"] == pytest.approx(0.55)
    assert list(gap["group"]) == ["c1 (+1)", "c2", "(unmapped)"]
    bars = layers.by_op_type(df)
    assert bars.loc[("m", "slow fp32 b1"), "Conv"] == pytest.approx(0.7)
    assert top["share_of_gap"] == pytest.approx(0.55 / 0.56)  # of the time lost where slow is slower


def test_gap_table_pairs_each_cell_with_one_partner():
    conv = [("k", ("c1",), ("Conv",), 100.0)]
    df = _frame({"tvm fp32": conv, "tvm fp16": conv, "ort fp32": [("k", ("c1",), ("Conv",), 40.0)], "ort fp16": conv})
    gap = layers.gap_table(df, {"backend": "tvm"}, {"backend": "ort", "precision": "fp32"})
    assert sorted(gap["precision"]) == ["fp16", "fp32"] and list(gap["gap_ms"]) == pytest.approx([0.06, 0.06])
    assert layers.gap_table(df, {"backend": "tvm"}, {"model": "m"}).empty  # several partners: none is the one


# --- both CPU backends, for real: the dominant node on top ---------------------------------------------


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
    from bench.config import config_from_dict
    from bench.runner import execute, plan

    work = tmp_path_factory.mktemp("profiled")
    onnx.save(dominated(), str(work / "dominated.onnx"))
    cfg = config_from_dict({
        "name": "profiled", "models": [{"name": "dominated", "source": str(work / "dominated.onnx"), "input_shapes": {"input": ["batch", 8, 24, 24]}}],
        "backends": ["onnxruntime", "tvm"], "precisions": ["fp32"], "batch_sizes": [1],
        "timing": {"warmup": 1, "min_iterations": 3, "min_time_s": 0.0}, "validation": {"iterations": 1}, "repeats": 1, "profile": True,
    })
    run_dir = execute(plan(cfg, work), work / "results", run_id="profiled", isolate=False, cache_dir=work / "cache")
    return run_dir


@pytest.mark.parametrize("backend", ["onnxruntime", "tvm"])
def test_the_dominant_node_is_on_top_for_both_cpu_backends(profiled_run, backend):
    df = layers.load(profiled_run)
    mine = df[df["backend"] == backend].sort_values("us_per_pass", ascending=False)
    assert "heavy" in list(mine.iloc[0]["onnx_nodes"]), mine[["kernel", "onnx_nodes", "us_per_pass"]].head().to_string()
    assert mine.iloc[0]["share"] > 0.5
    summary = next(s for s in layers.cell_summaries(profiled_run) if s["backend"] == backend)
    assert summary["coverage"] >= 0.8 and summary["mapped"] >= 0.8, summary
    cells = pd.read_csv(profiled_run / "cells.csv")
    assert cells.loc[cells["backend"] == backend, "profile_coverage"].iloc[0] == pytest.approx(summary["coverage"], abs=1e-3)
    assert (profiled_run / "layers.parquet").is_file()


def test_explain_prints_where_one_backend_loses_to_the_other(profiled_run):
    from typer.testing import CliRunner

    from bench.cli import app

    out = CliRunner().invoke(app, ["explain", str(profiled_run), "--a", "backend=tvm", "--b", "backend=onnxruntime"])
    assert out.exit_code == 0, out.output
    assert "heavy" in out.output and "gap ms" in out.output, out.output
    bad = CliRunner().invoke(app, ["explain", str(profiled_run), "--a", "engine=tvm", "--b", "backend=onnxruntime"])
    assert bad.exit_code == 2 and "KEY one of" in bad.output


def test_bench_profile_profiles_a_stored_run_after_the_fact(profiled_run, tmp_path):
    import shutil

    from bench.runner import profile_run

    copy = tmp_path / "copy"
    shutil.copytree(profiled_run, copy)
    shutil.rmtree(copy / "profiles")
    (copy / "layers.parquet").unlink()
    done = profile_run(copy, profiled_run.parent.parent, {"backend": "onnxruntime"}, isolate=False,
                       cache_dir=profiled_run.parent.parent / "cache")
    assert [d["backend"] for d in done] == ["onnxruntime"] and done[0]["profile_coverage"] > 0.5
    assert set(layers.load(copy)["backend"]) == {"onnxruntime"}


def test_the_report_shows_op_type_bars_and_the_gap_table(profiled_run, tmp_path):
    from bench.report import build_report

    report = build_report(profiled_run, tmp_path) / "report.md"
    text = report.read_text()
    assert "## Where the time goes" in text and "tvm fp32 b1 vs onnxruntime fp32 b1" in text
    assert "| heavy" in text
    assert (report.parent / "op_types_dominated.png").is_file()
    assert (report.parent / "pareto_dominated.png").is_file()
