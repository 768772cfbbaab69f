"""Precision conversions done on the ONNX graph, shared by the backends that consume ONNX:
fp16 (float16 weights and compute, float32 inputs and outputs kept) and int8 (static QDQ
quantization, per-channel weights, calibrated). Results are cached by model hash and options.

int8 comes in two flavors of the same calibration (`INT8_FLAVORS`):
- `cpu`: unsigned activations with zero points, 7-bit weights (what ONNX Runtime's CPU kernels
  run best on x86 without VNNI);
- `tensorrt`: what TensorRT's explicit quantization takes (strongly typed networks, the only kind
  on TensorRT 11): signed int8 everywhere, symmetric, zero point 0, per-channel weights. ModelOpt's
  `modelopt.onnx.quantization` is NVIDIA's documented route to such a graph, but its `onnx` extra
  pins onnx 1.21 and onnxruntime-gpu 1.24 and its base package needs torch, which clash with this
  project's pins; ONNX Runtime's quantizer with these settings writes the same kind of graph (Q/DQ
  pairs on activations, int8 weight initializers behind DequantizeLinear with a per-channel axis,
  biases left in float: TensorRT fuses them itself and takes no int32 Q/DQ).
  `symmetric_int8_problems` checks it before any engine sees it, and the suite runs it on ONNX
  Runtime's CPU provider against the fp32 reference (tests/test_gpu_contracts.py).

On any opset: per-channel weights need DequantizeLinear's `axis` (opset 13). A model below 13 is
upgraded with ONNX's version converter first; where that fails (or the upgraded graph does not
check), it is quantized per tensor at its own opset (QuantizeLinear exists from opset 10). The row's
`precision_route` says which. fp16 leaves quantization operators and their inputs alone. Every
converted graph passes bench.models.graph.graph_problem (ONNX's full check, consistent float types,
ONNX Runtime loads it) before any backend sees it: an engine that takes an invalid graph silently
computes something else.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from bench.cache import ArtifactCache

# x86 CPUs without VNNI saturate u8*s8 products in ONNX Runtime's int8 kernels; reduce_range
# (7-bit weights) avoids it. Measured here: max abs error 0.83 without, 0.15 with, on a tiny ResNet.
INT8_OPTIONS = {"format": "QDQ", "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                "reduce_range": True, "calibrate_method": "MinMax", "symmetric": False}
INT8_FLAVORS = {
    "cpu": INT8_OPTIONS,
    "tensorrt": {"format": "QDQ", "per_channel": True, "activation_type": "QInt8", "weight_type": "QInt8",
                 "reduce_range": False, "calibrate_method": "MinMax", "symmetric": True, "quantize_bias": False},
}


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "none"


def feeds_digest(feeds: Iterable[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name, arr in feed.items():
            h.update(name.encode())
            h.update(str(arr.shape).encode() + str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _retype_casts(model: Any) -> Any:
    """onnxconverter-common retypes a Cast's output to float16 but leaves the node's `to=FLOAT`
    (a bool mask cast to float, say), which no runtime loads: make the two agree."""
    from onnx import TensorProto

    outputs = {o.name for o in model.graph.output}  # kept float32 (keep_io_types)
    fp16_values = {vi.name for vi in model.graph.value_info
                   if vi.type.tensor_type.elem_type == TensorProto.FLOAT16 and vi.name not in outputs}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_values:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    return model


FP16_MAX = 65504.0  # the largest finite float16


def beyond_float16(model: Any) -> list[str]:
    """Nodes with a constant float input that float16 cannot hold (|x| > 65504): a BatchNormalization
    whose running variance is 1e7, say. Converted, it would be clamped and the output wrong; such a
    node stays in float32. Unnamed nodes are named here so that they can be listed."""
    from onnx import TensorProto, numpy_helper

    consts = {t.name: t for t in model.graph.initializer}  # Constant nodes made initializers first (fp16_onnx)
    out: list[str] = []
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            t = consts.get(name)
            if t is not None and t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE):
                values = numpy_helper.to_array(t)
                if values.size and np.nanmax(np.abs(values)) > FP16_MAX:
                    node.name = node.name or f"{node.op_type}_{i}_fp32"
                    out.append(node.name)
                    break
    return out


def _constants_as_initializers(model: Any) -> Any:
    """Constant nodes (paddle2onnx writes every weight so) as initializers: the converter keeps an
    initializer that feeds a float32-kept node in float32, but casts a kept Constant node's output
    to float16 and back (a running variance of 1e7 became inf)."""
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    const = [n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" and n.output[0] not in outputs
             for n in nodes]
    if not any(const):
        return model
    model.ir_version = max(model.ir_version, 4)  # IR 3 wants every initializer listed as a graph input too
    for n, is_const in zip(nodes, const):
        if is_const:
            t = model.graph.initializer.add()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
    kept = [copy.deepcopy(n) for n, is_const in zip(nodes, const) if not is_const]  # copies: the list is emptied next
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def _restore_output_types(model: Any, source: Any) -> Any:
    """Outputs of the types the source declares: a node kept in float32 (or float16) that writes a
    graph output leaves it in that type whatever keep_io_types says; a Cast puts it back."""
    from onnx import helper

    from bench.models.graph import all_nodes

    want = {o.name: o.type.tensor_type.elem_type for o in source.graph.output}
    for o in model.graph.output:
        if o.name in want and o.type.tensor_type.elem_type != want[o.name]:
            inner = f"{o.name}_before_cast"
            for node in all_nodes(model.graph):  # a subgraph may read the output by name
                node.output[:] = [inner if x == o.name else x for x in node.output]
                node.input[:] = [inner if x == o.name else x for x in node.input]
            model.graph.node.append(helper.make_node("Cast", [inner], [o.name], name=f"{o.name}_cast_back", to=want[o.name]))
            o.type.tensor_type.elem_type = want[o.name]
    return model


class ConversionRefused(Exception):
    """The precision cannot be written for this model with the tools the suite uses (a quantizer
    that fails on it or writes an invalid graph, an opset too old): the cell is skipped with the reason."""


def _checked(path: Path, what: str) -> None:
    """Raise unless the written graph is one ONNX and ONNX Runtime accept with consistent types."""
    from bench.models.graph import graph_problem

    problem = graph_problem(path)
    if problem:
        raise ConversionRefused(f"the {what} graph written for this model is invalid, so no backend is given it: {problem}")


def _write_route(d: Path, route: str) -> None:
    (d / "route.txt").write_text(route + "\n")


def route_of(path: Path) -> str | None:
    """How a converted graph was written (see `_write_route`), or None for a model used as given."""
    side = path.parent / "route.txt"
    return side.read_text().strip() if side.is_file() else None


def fp16_onnx(src: Path, sha256: str, cache: ArtifactCache, float32_ops: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """The fp16 graph; `float32_ops` are op types an engine needs kept in float32 (said in the route)."""

    def build(d: Path) -> None:
        import onnx
        from onnxconverter_common import float16

        from bench.models.graph import QUANTIZED_OPS

        block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | QUANTIZED_OPS | set(float32_ops))  # quantized parts stay as they are
        source = onnx.load(str(src), load_external_data=False)  # for its output types
        model = _constants_as_initializers(onnx.load(str(src)))
        wide = beyond_float16(model)
        model = _retype_casts(float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block,
                                                               node_block_list=wide, max_finite_val=FP16_MAX))
        model = _restore_output_types(model, source)
        onnx.save(model, str(d / "model.onnx"))
        _checked(d / "model.onnx", "fp16")
        kept = (f"; {len(wide)} node(s) kept in float32, their constants beyond float16's range ({', '.join(wide[:3])}"
                + (", ..." if len(wide) > 3 else "") + ")") if wide else ""
        present = sorted({n.op_type for n in model.graph.node} & set(float32_ops))
        ops = f"; {', '.join(present)} kept in float32 for this engine" if present else ""
        _write_route(d, f"fp16: float16 weights and compute, float32 inputs and outputs (onnxconverter-common){kept}{ops}")

    key = {"transform": "fp16", "version": 6, "model_sha256": sha256, "keep_io_types": True, "float32_ops": sorted(float32_ops),
           "onnxconverter-common": _version("onnxconverter-common"), "onnx": _version("onnx")}
    d, hit = cache.get_or_build("onnx-fp16", key, build)
    return d / "model.onnx", hit


PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) arrived in opset 13
QDQ_OPSET = 10  # QuantizeLinear and DequantizeLinear arrived in opset 10


def _opset_for_int8(src: Path, d: Path, per_channel: bool) -> tuple[Path, bool, str]:
    """(the graph to quantize, per channel or not, the route in words): the model itself at opset
    13 or more; else upgraded by ONNX's version converter (checked); else per tensor at its own opset."""
    import onnx

    from bench.models.graph import graph_problem, one_line, opset_of, upgrade_opset

    model = onnx.load(str(src))
    opset = opset_of(model)
    kind = "per-channel" if per_channel else "per-tensor"
    if not per_channel or opset >= PER_CHANNEL_OPSET:
        return src, per_channel, f"int8 QDQ {kind} at opset {opset}"
    try:
        onnx.save(upgrade_opset(model, PER_CHANNEL_OPSET), str(d / "upgraded.onnx"))
        why = graph_problem(d / "upgraded.onnx")
    except Exception as e:  # ConvertError and friends
        why = one_line(e, 200)
    if not why:
        return d / "upgraded.onnx", True, f"int8 QDQ per-channel; opset {opset} -> {PER_CHANNEL_OPSET} (ONNX version converter)"
    if opset < QDQ_OPSET:
        raise ConversionRefused(f"int8 needs opset {QDQ_OPSET} or more (QuantizeLinear); this model is opset {opset} "
                                f"and ONNX's version converter cannot upgrade it: {why}")
    return src, False, (f"int8 QDQ per-tensor at opset {opset} (per-channel needs opset {PER_CHANNEL_OPSET}; "
                        f"the version converter could not upgrade it: {why})")


def symmetric_int8_problems(model: Any) -> list[str]:
    """What keeps a Q/DQ graph from TensorRT's explicit quantization: a QuantizeLinear or
    DequantizeLinear whose zero point is not int8, or not all zeros. Empty when it is fit."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            # Absent zero point: by the spec a QuantizeLinear then writes uint8 (unless output_dtype,
            # opset 21, says INT8); a DequantizeLinear reads its input's own type, checked where it is made.
            out_type = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            if node.op_type == "QuantizeLinear" and out_type != TensorProto.INT8:
                problems.append(f"{node.name or node.op_type}: no zero point, so it quantizes to UINT8")
            continue
        zp = inits.get(node.input[2]) or consts.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name or node.op_type}: zero point {node.input[2]!r} is not a constant")
            continue
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{node.name or node.op_type}: zero point of type {TensorProto.DataType.Name(zp.data_type)}, not INT8")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name or node.op_type}: non-zero zero point (asymmetric)")
    return problems


def _quantize(src: Path, dst: Path, reader: Any, options: Mapping[str, Any], per_channel: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src), str(dst), reader,
        quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=getattr(QuantType, options["activation_type"]), weight_type=getattr(QuantType, options["weight_type"]),
        reduce_range=options["reduce_range"], calibrate_method=getattr(CalibrationMethod, options["calibrate_method"]),
        extra_options={"ActivationSymmetric": options["symmetric"], "WeightSymmetric": True,
                       "QuantizeBias": options.get("quantize_bias", True)},
    )


def where_raised(e: BaseException) -> str:
    """'AssertionError at symbolic_shape_infer.py:37 (is_sequence)', with the message when there is one."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}{at}" + (f": {text[:300]}" if text else "")


def int8_onnx(src: Path, sha256: str, calibration: list[dict[str, np.ndarray]], cache: ArtifactCache,
              flavor: str = "cpu") -> tuple[Path, bool]:
    options = INT8_FLAVORS[flavor]

    def build(d: Path) -> None:
        from onnxruntime.quantization import CalibrationDataReader
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from bench.models.graph import no_strays

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(calibration)

            def get_next(self) -> Any:
                return next(self.it, None)

        pre = d / "preprocessed.onnx"
        graph, per_channel, route = _opset_for_int8(src, d, options["per_channel"])
        try:
            with no_strays():
                quant_pre_process(str(graph), str(pre))
            graph = pre
        except Exception as e:  # symbolic shape inference refuses some graphs (If outputs, contrib ops)
            # pre-processing only helps the quantizer (shapes, fusions); the quantizer runs without it
            route += f"; ONNX Runtime's quant_pre_process skipped: it failed ({where_raised(e)})"
        try:
            _quantize(Path(graph), d / "model.onnx", Reader(), options, per_channel)
        except Exception as e:
            # failed, not skipped: a quantizer's exception may as well be this suite's mistake (its feeds)
            raise RuntimeError(f"ONNX Runtime's int8 quantizer failed on this model: {where_raised(e)}") from e
        pre.unlink(missing_ok=True)
        (d / "upgraded.onnx").unlink(missing_ok=True)
        _checked(d / "model.onnx", "int8")
        _write_route(d, route)

        if options["symmetric"]:
            import onnx

            problems = symmetric_int8_problems(onnx.load(str(d / "model.onnx"), load_external_data=False))
            if problems:
                raise RuntimeError(f"the {flavor} int8 graph is not symmetric signed int8: " + "; ".join(problems[:5]))

    key = {"transform": "int8", "version": 2, "onnx": _version("onnx"), "model_sha256": sha256, **options, "calibration": feeds_digest(calibration),
           "calibration_samples": len(calibration), "onnxruntime": _version("onnxruntime") if _version("onnxruntime") != "none" else _version("onnxruntime-gpu")}
    d, hit = cache.get_or_build("onnx-int8", key, build)
    return d / "model.onnx", hit


def onnx_for(request: Any, int8_flavor: str = "cpu", fp16_float32_ops: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """The ONNX file that carries request.precision, built (or found in the cache) from the fp32
    model (a model that arrives quantized runs as given: AS_GIVEN). How it was written goes into
    request.notes["precision_route"], for the row."""
    from bench.config import AS_GIVEN

    model = request.model
    if request.precision in ("fp32", AS_GIVEN):
        return model.path, False
    if request.precision == "fp16":
        path, hit = fp16_onnx(model.path, model.sha256, request.cache, fp16_float32_ops)
    elif request.precision == "int8":
        path, hit = int8_onnx(model.path, model.sha256, request.calibration(), request.cache, int8_flavor)
    else:
        raise ValueError(f"unknown precision {request.precision!r}")
    request.notes["precision_route"] = route_of(path)
    return path, hit
