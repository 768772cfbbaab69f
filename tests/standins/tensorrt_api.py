"""TensorRT's Python API, 10.x or 11.x, as a contract stand-in (tests only; see tests/standins).

Written from NVIDIA's documentation and the bindings' source:
- Python API reference (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/): Builder,
  INetworkDefinition, OnnxParser, IBuilderConfig, IOptimizationProfile, ITimingCache, Runtime,
  ICudaEngine, IExecutionContext, EngineInspector, Logger/ILogger, nptype.
- "Migrating from TensorRT 10.x to 11.x" (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
  tensorrt-10x-to-11x.html, -python-api-reference.html, -IEngineInspector.html) and the bindings of
  v10.16 and v11.1 (github.com/NVIDIA/TensorRT python/src/infer/pyCore.cpp, pyGraph.cpp): what 11.x
  removed. BuilderFlag FP16/BF16/FP8/FP4/INT8/INT4/OBEY_/PREFER_PRECISION_CONSTRAINTS;
  IBuilderConfig.int8_calibrator, set/get_calibration_profile, set/get/clear_quantization_flag;
  the calibrator classes and QuantizationFlag; NetworkDefinitionCreationFlag.EXPLICIT_BATCH;
  ILayer.precision/precision_is_set; ICudaEngine.device_memory_size; TacticSource CUBLAS/CUBLAS_LT/
  CUDNN. STRONGLY_TYPED stays in 11.x, deprecated and ignored (strong typing is always on). The
  inspector's engine-level "Bindings" became "I/O Tensors", and a layer tensor's "Format/Datatype"
  became "Format" and "Datatype".
- Explicit quantization (TensorRT developer guide, "Working with Quantized Types"): Q/DQ scales
  and zero points are constants, int8 is signed and symmetric, zero points must be 0.
- Strong typing (developer guide, "Strong Typing vs Weak Typing"): a strongly typed network takes
  its types from the graph; the precision builder flags are not allowed with it.
- Engine portability (support matrix): a plan runs only with the TensorRT version that built it,
  on a GPU of the compute capability it was built for.
- The inspector (NvInferRuntime.h, IEngineInspector::setExecutionContext): without an execution
  context, values that depend on input shapes are not known; a layer's format then reads
  "N/A due to dynamic shapes".

What a stand-in engine computes is real: the ONNX graph it was built from, run by ONNX Runtime's CPU
provider on the bytes our code placed in (stand-in) device memory.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path


import numpy as np

from tests.standins import record, simulated_gpu

PLAN_MAGIC = b"STANDIN-TRT-PLAN\0"
_TO_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
          "UINT8": np.uint8}
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}
_TYPE_TEXT = {"FLOAT": "FP32", "HALF": "FP16", "INT8": "Int8"}


def _enum(name: str, members: list[str]) -> type[enum.IntEnum]:
    return enum.IntEnum(name, [(m, i) for i, m in enumerate(members)])


class HostMemory(bytes):
    """IHostMemory: a buffer (the buffer protocol, `nbytes`), usable as a context manager."""

    @property
    def nbytes(self) -> int:
        return len(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_module(version: str) -> types.ModuleType:
    major = int(version.split(".")[0])
    weak = major < 11
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = __file__

    common_flags = ["TF32", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS", "SAFETY_SCOPE",
                    "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING",
                    "ERROR_ON_TIMING_CACHE_MISS", "DISABLE_COMPILATION_CACHE", "DIRECT_IO"]
    weak_flags = ["FP16", "BF16", "FP8", "FP4", "INT8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                  "WEIGHTLESS"]
    trt.BuilderFlag = _enum("BuilderFlag", common_flags + (weak_flags if weak else []))
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag",
                                              (["EXPLICIT_BATCH"] if weak else []) + ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS",
                                                                                      "PREFER_JIT_PYTHON_PLUGINS"])
    trt.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM",
                                                  "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"])
    trt.DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.ProfilingVerbosity = _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    trt.LayerInformationFormat = _enum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.LayerType = _enum("LayerType", ["CONVOLUTION", "ACTIVATION", "POOLING", "ELEMENTWISE", "MATRIX_MULTIPLY", "SHUFFLE",
                                        "REDUCE", "CONSTANT", "QUANTIZE", "DEQUANTIZE", "SHAPE", "UNARY", "SOFTMAX", "CAST",
                                        "NORMALIZATION", "RESIZE", "CONCATENATION", "SLICE", "GATHER", "IDENTITY"])
    trt.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    trt.TacticSource = _enum("TacticSource", (["CUBLAS", "CUBLAS_LT", "CUDNN"] if weak else [])
                             + ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"])
    trt.PreviewFeature = _enum("PreviewFeature", (["PROFILE_SHARING_0806"] if weak else []) + ["ALIASED_PLUGIN_IO_10_03"])
    trt.TensorFormat = _enum("TensorFormat", ["LINEAR", "CHW2", "HWC8", "CHW4", "CHW16", "CHW32", "DHWC8", "CDHW32", "HWC",
                                              "DLA_LINEAR", "DLA_HWC4", "HWC16", "DHWC"])
    trt.OnnxParserFlag = _enum("OnnxParserFlag", ["NATIVE_INSTANCENORM"])
    trt.EngineCapability = _enum("EngineCapability", ["STANDARD", "SAFETY", "DLA_STANDALONE"])
    if weak:
        trt.QuantizationFlag = _enum("QuantizationFlag", ["CALIBRATE_BEFORE_FUSION"])
        trt.CalibrationAlgoType = _enum("CalibrationAlgoType", ["LEGACY_CALIBRATION", "ENTROPY_CALIBRATION",
                                                                "ENTROPY_CALIBRATION_2", "MINMAX_CALIBRATION"])

    class ILogger:
        Severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

        def __init__(self):
            pass

        def log(self, severity, msg):  # overridden by users
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(ILogger.Severity)

        def __init__(self, min_severity=None):
            super().__init__()

    trt.ILogger, trt.Logger = ILogger, Logger

    def _log(logger, severity, msg):
        record("tensorrt", "log", severity=severity.name, msg=msg)
        try:
            logger.log(severity, msg)
        except Exception:
            pass

    def nptype(dtype):
        name = trt.DataType(int(dtype)).name
        if name not in _TO_NP:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return _TO_NP[name]

    trt.nptype = nptype
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    class ITensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)
            self.is_shape_tensor = False
            self.is_execution_tensor = True

    class ILayer:
        def __init__(self, name, kind):
            self.name, self.type = name, kind
            if weak:
                self.precision_is_set = False

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags
            self.strongly_typed = (not weak) or bool(flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            self.inputs, self.outputs, self.layers = [], [], []
            self.onnx_bytes = b""
            self.quantized = False
            self.fp16_graph = False

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

        def get_layer(self, i):
            return self.layers[i]

        def __iter__(self):
            return iter(self.layers)

        def __len__(self):
            return len(self.layers)

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

    class ParserError:
        def __init__(self, desc, node=-1):
            self._desc, self._node = desc, node

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def code(self):
            return 8  # ErrorCode.kUNSUPPORTED_NODE

        def __str__(self):
            return f"In node {self._node} with name: (checkQDQ): UNSUPPORTED_NODE: {self._desc}"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []
            self.flags = 0

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def clear_flag(self, flag):
            self.flags &= ~(1 << int(flag))

        def parse_from_file(self, path):
            import onnx
            from onnx import TensorProto, numpy_helper

            record("tensorrt", "parse_from_file", path=str(path), strongly_typed=self.network.strongly_typed)
            model = onnx.load(str(path))
            net = self.network
            inits = {i.name: i for i in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name in inits:
                    continue
                t = vi.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
                net.inputs.append(ITensor(vi.name, trt.DataType[_ONNX_TO_TRT.get(t.elem_type, "FLOAT")], dims))
            for vi in model.graph.output:
                t = vi.type.tensor_type
                net.outputs.append(ITensor(vi.name, trt.DataType[_ONNX_TO_TRT.get(t.elem_type, "FLOAT")],
                                           [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]))
            kinds = {"Conv": "CONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "QuantizeLinear": "QUANTIZE",
                     "DequantizeLinear": "DEQUANTIZE", "Relu": "ACTIVATION", "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE",
                     "Cast": "CAST", "Shape": "SHAPE"}
            for i, node in enumerate(model.graph.node):
                # an unnamed node: onnx-tensorrt names its layer as getNodeName does, "node_of_" + its first output
                net.layers.append(ILayer(node.name or f"node_of_{node.output[0]}", trt.LayerType[kinds.get(node.op_type, "IDENTITY")]))
                if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    net.quantized = True
                    zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                    if zp is not None and zp.data_type != TensorProto.INT8:
                        self.errors.append(ParserError(f"TensorRT supports only signed INT8 Q/DQ; zero point {zp.name!r} is "
                                                       f"{TensorProto.DataType.Name(zp.data_type)}", i))
                    elif zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                        self.errors.append(ParserError(f"Non-zero zero point is not supported: {zp.name!r} (TensorRT quantization "
                                                       "is symmetric)", i))
            net.fp16_graph = any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer)
            net.onnx_bytes = Path(path).read_bytes()
            return not self.errors

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            lo, mid, hi = (tuple(int(v) for v in s) for s in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi)) or any(a > b or b > c for a, b, c in zip(lo, mid, hi)):
                raise ValueError(f"IOptimizationProfile.set_shape({name}): need min <= opt <= max, got {lo}, {mid}, {hi}")
            self.shapes[name] = (lo, mid, hi)

        def get_shape(self, name):
            return self.shapes[name]

        def __bool__(self):
            return bool(self.shapes)

    class ITimingCache:
        def __init__(self, data: bytes):
            self.entries = json.loads(data.decode()) if data else {}

        def combine(self, other, ignore_mismatch):
            self.entries.update(other.entries)
            return True

        def serialize(self):
            return HostMemory(json.dumps(self.entries).encode())

    def _check_type(value, kind, call):
        if not isinstance(value, kind):
            raise TypeError(f"{call}(): incompatible function arguments. The following argument types are supported:\n"
                            f"    1. (self: tensorrt.IBuilderConfig, pool: tensorrt.{kind.__name__}, ...)\nInvoked with: {value!r}")

    class IBuilderConfig:
        def __init__(self):
            self._flags = {trt.BuilderFlag.TF32}  # TF32 is on by default
            self.pools = {}
            self.profiles = []
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self._level = 3
            self.timing_cache = None
            self.DLA_core = -1
            self.default_device_type = trt.DeviceType.GPU
            self.engine_capability = trt.EngineCapability.STANDARD
            self._tactics = 0
            self._preview = set()

        def set_flag(self, flag):
            _check_type(flag, trt.BuilderFlag, "set_flag")
            record("tensorrt", "set_flag", flag=flag.name)
            self._flags.add(flag)

        def clear_flag(self, flag):
            _check_type(flag, trt.BuilderFlag, "clear_flag")
            record("tensorrt", "clear_flag", flag=flag.name)
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        def set_memory_pool_limit(self, pool, size):
            _check_type(pool, trt.MemoryPoolType, "set_memory_pool_limit")
            record("tensorrt", "set_memory_pool_limit", pool=pool.name, size=int(size))
            self.pools[pool] = int(size)

        def get_memory_pool_limit(self, pool):
            return self.pools.get(pool, 1 << 40)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        num_optimization_profiles = property(lambda self: len(self.profiles))

        @property
        def builder_optimization_level(self):
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level):
            if not 0 <= int(level) <= 5:
                raise ValueError("builder_optimization_level must be in [0, 5]")
            self._level = int(level)

        def create_timing_cache(self, data):
            record("tensorrt", "create_timing_cache", nbytes=len(bytes(data)))
            return ITimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            record("tensorrt", "set_timing_cache", entries=len(cache.entries))
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

        def get_tactic_sources(self):
            return self._tactics

        def set_tactic_sources(self, value):
            self._tactics = value
            return True

        def get_preview_feature(self, feature):
            return feature in self._preview

        def set_preview_feature(self, feature, enable):
            (self._preview.add if enable else self._preview.discard)(feature)

    if weak:
        class IBuilderConfig10(IBuilderConfig):
            int8_calibrator = None

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile
                return True

            def get_calibration_profile(self):
                return getattr(self, "calibration_profile", None)

            def get_quantization_flag(self, flag):
                return False

            def set_quantization_flag(self, flag):
                pass

            def clear_quantization_flag(self, flag):
                pass

        config_class = IBuilderConfig10
    else:
        config_class = IBuilderConfig
    config_class.__name__ = "IBuilderConfig"

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = 0
            if weak:
                self.platform_has_fast_fp16 = self.platform_has_fast_int8 = True

        def create_network(self, flags=0):
            record("tensorrt", "create_network", flags=int(flags))
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return config_class()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            precision_flags = [f for f in ("FP16", "BF16", "INT8", "FP8") if hasattr(trt.BuilderFlag, f)
                               and config.get_flag(getattr(trt.BuilderFlag, f))]
            record("tensorrt", "build_serialized_network", strongly_typed=network.strongly_typed, flags=precision_flags,
                   tf32=config.get_flag(trt.BuilderFlag.TF32), profiles=len(config.profiles),
                   verbosity=config.profiling_verbosity.name, calibrator=bool(getattr(config, "int8_calibrator", None)))
            if network.strongly_typed and precision_flags:
                _log(self.logger, ILogger.Severity.ERROR, f"BuilderFlag {precision_flags} not allowed with a strongly typed network")
                return None
            dynamic = [t.name for t in network.inputs if -1 in t.shape]
            covered = config.profiles[0].shapes if config.profiles else {}
            missing = [n for n in dynamic if n not in covered]
            if missing:
                _log(self.logger, ILogger.Severity.ERROR, f"Network has dynamic or shape inputs, but no optimization profile "
                                                          f"covers {missing}")
                return None
            if network.strongly_typed:
                compute = "INT8" if network.quantized else ("HALF" if network.fp16_graph else "FLOAT")
            else:
                compute = "INT8" if "INT8" in precision_flags and (network.quantized or config.int8_calibrator) else \
                    ("HALF" if "FP16" in precision_flags else "FLOAT")
            if config.timing_cache is not None:
                config.timing_cache.entries[f"build{len(config.timing_cache.entries)}"] = compute
            name, major_cc, minor_cc = simulated_gpu()
            header = {"version": version, "cc": f"{major_cc}{minor_cc}", "gpu": name, "compute": compute,
                      "inputs": [[t.name, t.dtype.name, list(t.shape)] for t in network.inputs],
                      "outputs": [[t.name, t.dtype.name, list(t.shape)] for t in network.outputs],
                      "profile": {k: [list(s) for s in v] for k, v in covered.items()},
                      "layers": [[layer.name, layer.type.name] for layer in network.layers]}
            return HostMemory(PLAN_MAGIC + json.dumps(header).encode() + b"\0" + network.onnx_bytes)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, plan):
            data = bytes(plan)
            if not data.startswith(PLAN_MAGIC):
                _log(self.logger, ILogger.Severity.ERROR, "Serialization assertion failed: magic tag does not match")
                return None
            head, _, onnx_bytes = data[len(PLAN_MAGIC):].partition(b"\0")
            header = json.loads(head)
            _, major_cc, minor_cc = simulated_gpu()
            if header["version"] != version:
                _log(self.logger, ILogger.Severity.ERROR, f"The engine plan file is not compatible with this version of TensorRT, "
                                                          f"expecting library version {version} got {header['version']}")
                return None
            if header["cc"] != f"{major_cc}{minor_cc}":
                _log(self.logger, ILogger.Severity.ERROR, f"The engine plan file is generated on an incompatible device, expecting "
                                                          f"compute {major_cc}.{minor_cc} got compute {header['cc'][0]}.{header['cc'][1:]}")
                return None
            return ICudaEngine(header, onnx_bytes)

    class ICudaEngine:
        def __init__(self, header, onnx_bytes):
            self.header, self.onnx_bytes = header, onnx_bytes
            self.io = [(n, trt.TensorIOMode.INPUT, d, s) for n, d, s in header["inputs"]] + \
                      [(n, trt.TensorIOMode.OUTPUT, d, s) for n, d, s in header["outputs"]]
            if weak:
                self.device_memory_size = 1 << 20
            self.device_memory_size_v2 = 1 << 20
            self.num_optimization_profiles = 1

        num_io_tensors = property(lambda self: len(self.io))
        num_layers = property(lambda self: len(self.header["layers"]))

        def _find(self, name):
            for entry in self.io:
                if entry[0] == name:
                    return entry
            raise KeyError(name)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return self._find(name)[1]

        def get_tensor_dtype(self, name):
            return trt.DataType[self._find(name)[2]]

        def get_tensor_shape(self, name):
            return tuple(self._find(name)[3])

        def get_tensor_format(self, name, profile_index=0):
            return trt.TensorFormat.LINEAR

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self.header["profile"][name]]

        def create_execution_context(self):
            return IExecutionContext(self)

        def create_engine_inspector(self):
            return EngineInspector(self)

        def serialize(self):
            return HostMemory(PLAN_MAGIC + json.dumps(self.header).encode() + b"\0" + self.onnx_bytes)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.shapes, self.addresses = {}, {}
            self.active_optimization_profile = 0
            self._session, self._out_shapes = None, None

        def set_input_shape(self, name, shape):
            shape = tuple(int(v) for v in shape)
            lo, _, hi = self.engine.header["profile"].get(name, [shape, shape, shape])
            ok = len(shape) == len(lo) and all(a <= v <= b for a, v, b in zip(lo, shape, hi))
            record("tensorrt", "set_input_shape", name=name, shape=list(shape), ok=ok)
            if ok:
                self.shapes[name] = shape
                self._out_shapes = None
            return ok

        def _run(self, feeds):
            import onnxruntime as ort

            if self._session is None:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                self._session = ort.InferenceSession(self.engine.onnx_bytes, opts, providers=["CPUExecutionProvider"])
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(names, feeds)))

        def get_tensor_shape(self, name):
            n, mode, dtype, shape = self.engine._find(name)
            if mode == trt.TensorIOMode.INPUT:
                return self.shapes.get(name, tuple(shape))
            if self._out_shapes is None:
                inputs = [e for e in self.engine.io if e[1] == trt.TensorIOMode.INPUT]
                if any(e[0] not in self.shapes for e in inputs):
                    return tuple(shape)
                zeros = {e[0]: np.zeros(self.shapes[e[0]], _TO_NP[e[2]]) for e in inputs}
                self._out_shapes = {k: v.shape for k, v in self._run(zeros).items()}
            return tuple(self._out_shapes[name])

        def set_tensor_address(self, name, ptr):
            try:
                self.engine._find(name)
            except KeyError:
                return False
            self.addresses[name] = int(ptr)
            return True

        def get_tensor_address(self, name):
            return self.addresses.get(name, 0)

        def infer_shapes(self):
            return []

        @property
        def all_binding_shapes_specified(self):
            return all(e[0] in self.shapes for e in self.engine.io if e[1] == trt.TensorIOMode.INPUT)

        def execute_async_v3(self, stream_handle):
            from polygraphy.cuda import cuda

            streams = cuda.wrapper().handle.streams
            ok = int(stream_handle) in streams and self.all_binding_shapes_specified and \
                all(e[0] in self.addresses for e in self.engine.io)
            record("tensorrt", "execute_async_v3", ok=ok)
            if not ok:
                return False
            feeds = {}
            for name, mode, dtype, _ in self.engine.io:
                if mode == trt.TensorIOMode.INPUT:
                    shape = self.shapes[name]
                    n = int(np.prod(shape)) * np.dtype(_TO_NP[dtype]).itemsize
                    raw = (ctypes.c_char * n).from_address(self.addresses[name])
                    feeds[name] = np.frombuffer(bytes(raw), dtype=_TO_NP[dtype]).reshape(shape)
            for name, value in self._run(feeds).items():
                data = np.ascontiguousarray(value.astype(_TO_NP[self.engine._find(name)[2]]))
                ctypes.memmove(self.addresses[name], data.ctypes.data, data.nbytes)
            if self.profiler is not None:  # IProfiler: one report per layer of the engine, by the inspector's names
                for name, kind in self.engine.header["layers"]:
                    if kind not in ("QUANTIZE", "DEQUANTIZE"):
                        self.profiler.report_layer_time(name, 0.01)
            return True

        @property
        def profiler(self):
            return self.__dict__.get("_profiler")

        @profiler.setter
        def profiler(self, value):
            # IExecutionContext.profiler takes an IProfiler (a subclass whose __init__ called IProfiler.__init__)
            ok = value is None or (isinstance(value, IProfiler) and getattr(value, "_initialized", False))
            record("tensorrt", "set_profiler", ok=ok)
            if not ok:
                raise TypeError("IExecutionContext.profiler: incompatible type; expected tensorrt.IProfiler")
            self.__dict__["_profiler"] = value

    class IProfiler:
        """tensorrt.IProfiler: subclasses call IProfiler.__init__ and override report_layer_time(layer_name: str, ms: float)."""

        def __init__(self):
            self._initialized = True

        def report_layer_time(self, layer_name, ms):
            raise NotImplementedError("IProfiler.report_layer_time is pure virtual")

    class EngineInspector:
        def __init__(self, engine):
            self.engine = engine
            self.execution_context = None

        def _tensor(self, name, dims, dtype):
            ctx = self.execution_context
            known = ctx is not None and ctx.all_binding_shapes_specified
            text = _TYPE_TEXT.get(dtype, "FP32")
            if weak:
                fmt = {"Format/Datatype": f"Row major linear {text} format" if known or -1 not in dims else "N/A due to dynamic shapes"}
            else:
                fmt = {"Format": "Row major linear" if known or -1 not in dims else "N/A due to dynamic shapes",
                       "Datatype": text if known or -1 not in dims else "N/A due to dynamic shapes"}
            return {"Name": name, "Location": "Device", "Dimensions": list(dims), **fmt}

        def get_engine_information(self, fmt):
            record("tensorrt", "get_engine_information", with_context=self.execution_context is not None)
            head = self.engine.header
            dims = next((s for _, _, s in head["inputs"]), [-1])
            layers = []
            for name, kind in head["layers"]:
                if kind in ("QUANTIZE", "DEQUANTIZE"):
                    continue
                layer_type = {"CONVOLUTION": "CaskConvolution", "MATRIX_MULTIPLY": "CaskGemmMatrixMultiply"}.get(kind, "PointWiseV2")
                # Compute layers read the engine's compute type; the stand-in writes float out of the last one,
                # as an int8 layer does where nothing after it is quantized.
                last = name == head["layers"][-1][0]
                layers.append({"Name": name, "LayerType": layer_type,
                               "Inputs": [self._tensor(f"{name}_in", dims, head["compute"])],
                               "Outputs": [self._tensor(f"{name}_out", dims, "FLOAT" if last else head["compute"])]})
            info = {"Layers": layers}
            if weak:
                info["Bindings"] = [e[0] for e in self.engine.io]
            else:
                info["I/O Tensors"] = [{"Name": n, "IOMode": "Input" if m == trt.TensorIOMode.INPUT else "Output",
                                        "DataType": {"FLOAT": "Float", "HALF": "Half"}.get(d, d), "Dimensions": s}
                                       for n, m, d, s in self.engine.io]
            return json.dumps(info)

        def get_layer_information(self, index, fmt):
            return json.dumps(json.loads(self.get_engine_information(fmt))["Layers"][index])

    for cls in (Builder, INetworkDefinition, ITensor, ILayer, OnnxParser, IOptimizationProfile, ITimingCache, Runtime, ICudaEngine,
                IExecutionContext, EngineInspector, IProfiler):
        setattr(trt, cls.__name__, cls)
    trt.IBuilderConfig = config_class
    trt.IHostMemory = HostMemory
    if weak:
        class IInt8Calibrator:
            def __init__(self):
                pass

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            def get_algorithm(self):
                return trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2

        for cls in (IInt8Calibrator, IInt8EntropyCalibrator2):
            setattr(trt, cls.__name__, cls)
        trt.IInt8LegacyCalibrator = trt.IInt8EntropyCalibrator = trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2
    return trt


def install(version: str) -> types.ModuleType:
    """Put a stand-in `tensorrt` of this version in sys.modules, and the CUDA runtime stand-in
    behind Polygraphy's wrapper."""
    import sys

    from tests.standins import cudart

    cudart.install()
    current = sys.modules.get("tensorrt")
    if current is not None and getattr(current, "__file__", None) == __file__ and current.__version__ == version:
        return current
    module = make_module(version)
    sys.modules["tensorrt"] = module
    return module
