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
"""

from __future__ import annotations

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


def fp16_onnx(src: Path, sha256: str, cache: ArtifactCache) -> tuple[Path, bool]:
    def build(d: Path) -> None:
        import onnx
        from onnxconverter_common import float16

        model = _retype_casts(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
        onnx.save(model, str(d / "model.onnx"))

    key = {"transform": "fp16", "version": 2, "model_sha256": sha256, "keep_io_types": True,
           "onnxconverter-common": _version("onnxconverter-common"), "onnx": _version("onnx")}
    d, hit = cache.get_or_build("onnx-fp16", key, build)
    return d / "model.onnx", hit


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


def int8_onnx(src: Path, sha256: str, calibration: list[dict[str, np.ndarray]], cache: ArtifactCache,
              flavor: str = "cpu") -> tuple[Path, bool]:
    options = INT8_FLAVORS[flavor]

    def build(d: Path) -> None:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(calibration)

            def get_next(self) -> Any:
                return next(self.it, None)

        pre = d / "preprocessed.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre), str(d / "model.onnx"), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=options["per_channel"],
            activation_type=getattr(QuantType, options["activation_type"]), weight_type=getattr(QuantType, options["weight_type"]),
            reduce_range=options["reduce_range"], calibrate_method=getattr(CalibrationMethod, options["calibrate_method"]),
            extra_options={"ActivationSymmetric": options["symmetric"], "WeightSymmetric": True,
                           "QuantizeBias": options.get("quantize_bias", True)},
        )
        pre.unlink()
        if options["symmetric"]:
            import onnx

            problems = symmetric_int8_problems(onnx.load(str(d / "model.onnx"), load_external_data=False))
            if problems:
                raise RuntimeError(f"the {flavor} int8 graph is not symmetric signed int8: " + "; ".join(problems[:5]))

    key = {"transform": "int8", "model_sha256": sha256, **options, "calibration": feeds_digest(calibration),
           "calibration_samples": len(calibration), "onnxruntime": _version("onnxruntime") if _version("onnxruntime") != "none" else _version("onnxruntime-gpu")}
    d, hit = cache.get_or_build("onnx-int8", key, build)
    return d / "model.onnx", hit


def onnx_for(request: Any, int8_flavor: str = "cpu") -> tuple[Path, bool]:
    """The ONNX file that carries request.precision, built (or found in the cache) from the fp32 model."""
    model = request.model
    if request.precision == "fp32":
        return model.path, False
    if request.precision == "fp16":
        return fp16_onnx(model.path, model.sha256, request.cache)
    if request.precision == "int8":
        return int8_onnx(model.path, model.sha256, request.calibration(), request.cache, int8_flavor)
    raise ValueError(f"unknown precision {request.precision!r}")
