"""Small ONNX models written the way other exporters write them (built with onnx.helper, no torch):
shape-computing subgraphs, dynamic height and width, a `dim_value: -1` batch, several inputs of
different dtypes, weights stored as external data. Each mirrors a habit seen in real exported files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _model(nodes, name, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="foreign-exporter")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def shape_chain(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> a crop whose end is computed (Shape -> Slice -> Sub) -> GlobalAveragePool, then
    a flatten written as Shape -> Cast -> Gather -> Cast -> Unsqueeze -> Concat -> Reshape (what TF
    and older PyTorch exporters emit), then Gemm. Batch, height and width
    are all dynamic (`N`, `height`, `width`)."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w", (8, 3, 3, 3)), _init(rng, "b", (8,)), _init(rng, "fc_w", (10, 8)), _init(rng, "fc_b", (10,)),
             _const("zero", 0), _const("axes0", [0]), _const("minus1", [-1]),
             _const("two", [2]), _const("four", [4]), _const("one", [1]), _const("zeros2", [0, 0]), _const("axes23", [2, 3])]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        # crop the last row and column: ends = Shape(r)[2:4] - 1 (shape arithmetic with Sub)
        helper.make_node("Shape", ["r"], ["r_shape"], name="shape_r"),
        helper.make_node("Slice", ["r_shape", "two", "four"], ["r_hw"], name="slice_hw"),
        helper.make_node("Sub", ["r_hw", "one"], ["crop_end"], name="crop_end"),
        helper.make_node("Slice", ["r", "zeros2", "crop_end", "axes23"], ["rc"], name="crop"),
        helper.make_node("GlobalAveragePool", ["rc"], ["g"], name="gap"),
        helper.make_node("Shape", ["g"], ["g_shape"], name="shape"),
        helper.make_node("Cast", ["g_shape"], ["g_shape32"], name="cast_shape", to=TensorProto.INT32),
        helper.make_node("Gather", ["g_shape32", "zero"], ["n32"], name="gather_n", axis=0),
        helper.make_node("Cast", ["n32"], ["n"], name="cast_n", to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze_n"),
        helper.make_node("Concat", ["n1", "minus1"], ["new_shape"], name="concat_shape", axis=0),
        helper.make_node("Reshape", ["g", "new_shape"], ["flat"], name="flatten_reshape"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "height", "width"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    return _model(nodes, "shape_chain", [x], [y], inits)


def dynamic_resize(seed: int = 0) -> onnx.ModelProto:
    """A segmentation-style head: Conv, then Resize to twice the input size computed from
    Shape -> Slice -> Mul -> Concat, then a 1x1 Conv. Height and width are `?` (no name) and the
    batch is `dim_value: -1`."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w1", (4, 3, 3, 3)), _init(rng, "b1", (4,)), _init(rng, "w2", (2, 4, 1, 1)), _init(rng, "b2", (2,)),
             _const("start2", [2]), _const("end4", [4]), _const("start0", [0]), _const("two", [2]),
             numpy_helper.from_array(np.zeros(0, np.float32), "empty_roi"),
             numpy_helper.from_array(np.zeros(0, np.float32), "empty_scales")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Shape", ["r1"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "start0", "start2"], ["nc"], name="slice_nc"),
        helper.make_node("Slice", ["s", "start2", "end4"], ["hw"], name="slice_hw"),
        helper.make_node("Mul", ["hw", "two"], ["hw2"], name="double_hw"),
        helper.make_node("Concat", ["nc", "hw2"], ["sizes"], name="concat_sizes", axis=0),
        helper.make_node("Resize", ["r1", "empty_roi", "empty_scales", "sizes"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Conv", ["up", "w2", "b2"], ["mask"], name="conv2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, None, None])
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [-1, 2, None, None])
    model = _model(nodes, "dynamic_resize", [x], [y], inits)
    # helper writes None as an empty dim and -1 as dim_value -1, as such exporters do
    return model


def minus_one_batch(seed: int = 0) -> onnx.ModelProto:
    """Batch written as `dim_value: -1`; a Range/Expand position bias and a Flatten written as
    Reshape with a shape from Shape -> Slice (TF-style). Fixed 3x16x16 image."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w", (6, 3, 3, 3)), _init(rng, "b", (6,)), _init(rng, "fc_w", (6 * 8 * 8, 5)), _init(rng, "fc_b", (5,)),
             _const("start0", [0]), _const("end1", [1]), _const("minus1", [-1]),
             _const("r_start", 0), _const("r_limit", 8), _const("r_delta", 1),
             numpy_helper.from_array(np.asarray(0.01, np.float32), "pos_scale")]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        # a position bias along width: Range -> Cast -> Mul -> Expand to the activation's shape
        helper.make_node("Range", ["r_start", "r_limit", "r_delta"], ["pos"], name="range"),
        helper.make_node("Cast", ["pos"], ["posf"], name="cast_pos", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["posf", "pos_scale"], ["pos_s"], name="scale_pos"),
        helper.make_node("Shape", ["r"], ["r_shape"], name="shape_r"),
        helper.make_node("Expand", ["pos_s", "r_shape"], ["pos_full"], name="expand_pos"),
        helper.make_node("Add", ["r", "pos_full"], ["rp"], name="add_pos"),
        helper.make_node("Shape", ["rp"], ["rp_shape"], name="shape_rp"),
        helper.make_node("Slice", ["rp_shape", "start0", "end1"], ["n"], name="slice_n"),
        helper.make_node("Concat", ["n", "minus1"], ["flat_shape"], name="concat_flat", axis=0),
        helper.make_node("Reshape", ["rp", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"], name="fc_bias"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 5])
    return _model(nodes, "minus_one_batch", [x], [y], inits)


def two_inputs(seed: int = 0, vocab: int = 50) -> onnx.ModelProto:
    """Token ids (int64, [batch, seq]) and an attention mask (bool, [batch, seq]): embedding Gather,
    masked mean over the sequence, MatMul classifier. `seq` is a named dynamic dimension."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "emb", (vocab, 16), 1.0), _init(rng, "fc_w", (16, 3)), _init(rng, "fc_b", (3,)),
             _const("axes1", [1]), _const("axes2", [2]),
             numpy_helper.from_array(np.asarray(1e-3, np.float32), "eps")]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed", axis=0),
        helper.make_node("Cast", ["mask"], ["m"], name="cast_mask", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes2"], ["m3"], name="unsqueeze_mask"),
        helper.make_node("Mul", ["e", "m3"], ["em"], name="apply_mask"),
        helper.make_node("ReduceSum", ["em", "axes1"], ["s"], name="sum_seq", keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axes1"], ["cnt"], name="count_seq", keepdims=0),
        helper.make_node("Add", ["cnt", "eps"], ["cnt_eps"], name="add_eps"),
        helper.make_node("Div", ["s", "cnt_eps"], ["mean"], name="mean"),
        helper.make_node("MatMul", ["mean", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc_b"], ["scores"], name="fc_bias"),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])
    return _model(nodes, "two_inputs", [ids, mask], [y], inits)


# --- round 2: each class of failure seen on real files, reproduced in a few nodes ---------------------


def small_cnn(opset: int = 17, ir_version: int = 8, seed: int = 0, resize: bool = False, tail_reshape: bool = False) -> onnx.ModelProto:
    """Conv -> Relu [-> Resize x2 with an empty `roi`, as opset-11 exporters write it] -> Conv ->
    Relu -> GlobalAveragePool -> Flatten -> Gemm; at any opset from 9 and any IR version."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w1", (8, 3, 3, 3)), _init(rng, "b1", (8,)), _init(rng, "w2", (8, 8, 3, 3)), _init(rng, "b2", (8,)),
             _init(rng, "fc_w", (10, 8)), _init(rng, "fc_b", (10,))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    last = "r1"
    if resize:  # Resize-11: roi and scales are required inputs; an empty roi is how exporters say "none"
        inits += [numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
                  numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales")]
        nodes.append(helper.make_node("Resize", ["r1", "roi", "scales"], ["up"], name="Resize_7", mode="nearest"))
        last = "up"
    nodes += [helper.make_node("Conv", [last, "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    model = helper.make_model(helper.make_graph(nodes, "small_cnn", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", opset)], producer_name="foreign-exporter")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def resize_to_size_opset11(seed: int = 0) -> onnx.ModelProto:
    """PyTorch's opset-11 export of interpolate(size=...): Resize(x, roi=[], scales=[], sizes)."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w1", (4, 3, 3, 3)), _init(rng, "b1", (4,)), numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
             numpy_helper.from_array(np.zeros(0, np.float32), "scales"), _const("sizes", [1, 4, 24, 24])]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="Conv_0", pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "roi", "scales", "sizes"], ["y"], name="Resize_1", mode="linear",
                              coordinate_transformation_mode="pytorch_half_pixel")]
    return _model(nodes, "resize_to_size", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 24, 24])], inits, opset=11)


def lstm_head(seed: int = 0) -> onnx.ModelProto:
    """A recognizer's shape: Conv features read as a sequence by an LSTM, then a Reshape as the
    graph's last node (an importer that names its loop's last node names the Reshape)."""
    rng = np.random.default_rng(seed)
    hidden = 6
    inits = [_init(rng, "w", (4, 3, 3, 3)), _init(rng, "b", (4,)), _init(rng, "W", (1, 4 * hidden, 4 * 8)),
             _init(rng, "R", (1, 4 * hidden, hidden)), _const("seq_shape", [0, 4 * 8, 8]), _const("perm_shape", [8, -1, 4 * 8]),
             _const("out_shape", [-1, 8 * hidden])]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="Conv_0", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["c", "seq_shape"], ["seq"], name="Reshape_1"),       # N, C*H, W
        helper.make_node("Transpose", ["seq"], ["tseq"], name="Transpose_2", perm=[2, 0, 1]),  # W, N, C*H
        helper.make_node("LSTM", ["tseq", "W", "R"], ["h"], name="LSTM_3", hidden_size=hidden),  # W, 1, N, hidden
        helper.make_node("Transpose", ["h"], ["th"], name="Transpose_4", perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["th", "out_shape"], ["y"], name="Reshape_101"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8 * hidden])
    return _model(nodes, "lstm_head", [x], [y], inits, opset=13)


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer turned into a Constant node, as paddle2onnx writes weights."""
    nodes = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in model.graph.initializer]
    del model.graph.initializer[:]
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)
    onnx.checker.check_model(model)
    return model


def conv_bn_conv(seed: int = 0, variance: float = 1.0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Conv, unfused, as paddle2onnx and older exporters leave it. A
    real detector's running variance reached 1e8 (beyond float16), with its conv scaled to match."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w1", (8, 3, 3, 3), 0.3 * variance ** 0.5), _init(rng, "gamma", (8,)), _init(rng, "beta", (8,)),
             _init(rng, "mean", (8,)), numpy_helper.from_array((rng.uniform(0.5, 2, (8,)) * variance).astype(np.float32), "var"),
             _init(rng, "w2", (8, 8, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Conv", ["bn", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    return _model(nodes, "conv_bn_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits, opset=15)


def dynamically_quantized(path: Path, seed: int = 0) -> Path:
    """What onnxruntime.quantization.quantize_dynamic writes from a small CNN: ConvInteger and
    DynamicQuantizeLinear (and MatMulInteger for the classifier), a model that arrives int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = save(small_cnn(opset=13, seed=seed), path.with_name(path.stem + "-fp32.onnx"))
    quantize_dynamic(str(src), str(path), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "Gemm"])
    return path


def save(model: onnx.ModelProto, path: Path, external_data: bool = False) -> Path:
    """Write the model; with external_data, every initializer goes to `<name>.data` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.stem + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


FOREIGN = {"shape_chain": shape_chain, "dynamic_resize": dynamic_resize, "minus_one_batch": minus_one_batch,
           "two_inputs": two_inputs}
