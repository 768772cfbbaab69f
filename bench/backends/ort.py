"""ONNX Runtime: the CPU execution provider, and (with onnxruntime-gpu) the CUDA and TensorRT ones.

fp16 and int8 are ONNX-level conversions (bench.precision). What each session really executes is
read back from the graph ONNX Runtime optimized: its CPU provider has few fp16 kernels and casts
much of an fp16 graph back to fp32, and a QDQ graph runs int8 kernels only where it fused them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np

from typing import Literal

from pydantic import Field

from bench.backends.base import HOST_CLOCK, Availability, BackendOptions, CompileRequest, Feeds, execution_summary, import_framework
from bench.precision import onnx_for

COMPUTE_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "MatMul", "Gemm", "FusedMatMul", "FusedGemm"}
INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "NhwcQLinearConv"}


def executed_precision(optimized_path: str) -> str:
    """Element types of the compute ops in the graph ONNX Runtime optimized."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(optimized_path, load_external_data=False)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in INT8_OPS:
            counts["int8"] += 1
        elif node.op_type in COMPUTE_OPS:
            # The weight's type: activations' value_info may be missing after optimization.
            kinds = [types.get(n) for n in node.input[:2] if n in types]
            counts[names.get(kinds[-1], "other") if kinds else "unknown"] += 1
    return execution_summary(counts)


class OrtOptions(BackendOptions):
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime's graph optimizations: disabled, basic, extended or all")


class OnnxRuntimeBackend:
    Options = OrtOptions
    name = "onnxruntime"
    variant = "default"
    keeps_dynamic_batch = False
    precisions = ("fp32", "fp16", "int8")
    provider = "CPUExecutionProvider"
    package_hint = "pip install 'bench[cpu]'"

    def availability(self) -> Availability:
        ort, unusable = import_framework("onnxruntime", "onnxruntime", self.package_hint)
        if unusable:
            return unusable
        available = ort.get_available_providers()
        if self.provider not in available:
            return Availability(False, f"{self.provider} is not in this onnxruntime build (it has {', '.join(available)}); {self.package_hint}")
        return Availability(True, versions={"onnxruntime": ort.__version__})

    def session_options(self, request: CompileRequest) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = request.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = self.Options.model_validate(request.options).graph_optimization_level
        opts.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        opts.log_severity_level = 3
        return opts

    def compile(self, request: CompileRequest) -> "OrtCompiled":
        import onnxruntime as ort

        path, hit = onnx_for(request)
        opts = self.session_options(request)
        request.work_dir.mkdir(parents=True, exist_ok=True)
        optimized = request.work_dir / f"ort-optimized-{request.precision}-b{request.batch_size}.onnx"
        opts.optimized_model_filepath = str(optimized)
        session = ort.InferenceSession(str(path), sess_options=opts, providers=[self.provider])
        used = session.get_providers()
        if not used or used[0] != self.provider:
            # A session silently running elsewhere would publish the wrong device's numbers.
            raise RuntimeError(f"asked for {self.provider}, the session runs on {used}")
        try:
            executes_as = executed_precision(str(optimized))
        except Exception as e:  # reading back is best effort; never guess
            executes_as = f"unknown ({type(e).__name__})"
        finally:
            optimized.unlink(missing_ok=True)
        facts = {
            "variant": self.variant,
            "provider": ",".join(used),
            "device": "cpu" if self.provider == "CPUExecutionProvider" else "cuda",
            "threads": request.threads,
            "backend_version": ort.__version__,
            "executes_as": executes_as,
            "cache_hit": hit,
            "options": f"graph_optimization_level={self.Options.model_validate(request.options).graph_optimization_level}",
        }
        return OrtCompiled(session, facts)


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime_cuda"
    provider = "CUDAExecutionProvider"
    package_hint = "install onnxruntime-gpu (pip install 'bench[gpu]') on a machine with CUDA"


class OnnxRuntimeTensorrtBackend(OnnxRuntimeBackend):
    name = "onnxruntime_trt"
    provider = "TensorrtExecutionProvider"
    package_hint = "install onnxruntime-gpu and TensorRT (pip install 'bench[gpu]') on a machine with CUDA"


def bind(session: Any, feeds: Feeds, device: str) -> Any:
    """An IOBinding with every input copied to `device` once and every output bound to a buffer
    allocated there by one untimed run: a call then neither wraps inputs nor allocates outputs."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, 0))
    names = [o.name for o in session.get_outputs()]
    for name in names:
        binding.bind_output(name, device)
    session.run_with_iobinding(binding)  # allocates the outputs once, at their real shapes
    outputs = binding.get_outputs()
    binding.clear_binding_outputs()
    for name, value in zip(names, outputs):
        binding.bind_ortvalue_output(name, value)
    return binding


class OrtCompiled:
    clock = staticmethod(HOST_CLOCK)

    def __init__(self, session: Any, facts: dict[str, Any]):
        self.session = session
        self.facts = facts
        self._outputs = [o.name for o in session.get_outputs()]
        self._device = "cpu" if facts.get("device", "cpu") == "cpu" else "cuda"
        self.timed_region = (f"session.run_with_iobinding: inputs pre-bound as OrtValues on {self._device}, outputs bound to "
                             f"{self._device} buffers allocated before timing; nothing copied to the host"
                             + ("" if self._device == "cpu" else "; host clock after the provider's stream synchronization"))

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, dict(feeds))))

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        run, binding = self.session.run_with_iobinding, bind(self.session, feeds, self._device)
        return lambda: run(binding)

    def release(self) -> None:
        self.session = None
