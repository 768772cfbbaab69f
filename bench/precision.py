"""Precision conversions done on the ONNX graph, shared by the backends that consume ONNX:
fp16 (float16 weights and compute, float32 inputs and outputs kept) and int8 (static QDQ
quantization, per-channel weights, calibrated). Results are cached by model hash and options.
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
                "reduce_range": True, "calibrate_method": "MinMax"}


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


def int8_onnx(src: Path, sha256: str, calibration: list[dict[str, np.ndarray]], cache: ArtifactCache) -> tuple[Path, bool]:
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
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        pre.unlink()

    key = {"transform": "int8", "model_sha256": sha256, **INT8_OPTIONS, "calibration": feeds_digest(calibration),
           "calibration_samples": len(calibration), "onnxruntime": _version("onnxruntime") if _version("onnxruntime") != "none" else _version("onnxruntime-gpu")}
    d, hit = cache.get_or_build("onnx-int8", key, build)
    return d / "model.onnx", hit


def onnx_for(request: Any) -> tuple[Path, bool]:
    """The ONNX file that carries request.precision, built (or found in the cache) from the fp32 model."""
    model = request.model
    if request.precision == "fp32":
        return model.path, False
    if request.precision == "fp16":
        return fp16_onnx(model.path, model.sha256, request.cache)
    if request.precision == "int8":
        return int8_onnx(model.path, model.sha256, request.calibration(), request.cache)
    raise ValueError(f"unknown precision {request.precision!r}")
