"""ONNX Runtime: the CPU execution provider, and (with onnxruntime-gpu) the CUDA and TensorRT ones.

fp16 and int8 are ONNX-level conversions (bench.precision). What each session really executes is
read back from the graph ONNX Runtime optimized: its CPU provider has few fp16 kernels and casts
much of an fp16 graph back to fp32, and a QDQ graph runs int8 kernels only where it fused them.

The GPU providers as their users run them (options recorded in the row's `options`):
- CUDA: `use_tf32=0` unless `tf32: true` (the provider's default is TF32 for fp32 math, which
  would make an "fp32" row compare other math than TensorRT's, which clears TF32).
- TensorRT: registered with the CUDA provider behind it (nodes TensorRT rejects run on CUDA, not
  on the CPU), fp16 and int8 from the same graphs as the TensorRT backend (the fp16 graph; the
  TensorRT-flavored, symmetric signed Q/DQ graph) with no weak-typing flags, so the provider
  builds a strongly typed network, its engine cache kept per GPU identity. A compiling provider
  cannot save `optimized_model_filepath` (ONNX Runtime refuses to serialize compiled nodes), so it
  is never set.
- Placement: `get_providers()` always lists the CPU provider, so where nodes ran is read from
  ONNX Runtime's own profiler over one untimed run at compile time (profiling ends before any
  timed call): `placement` counts nodes per provider, and `cpu_fallback` names the nodes a GPU
  session left on the CPU. Such a row is marked in the report, never published as GPU work alone.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from bench.backends.base import (HOST_CLOCK, Availability, BackendBase, CompiledBase, CompileRequest, Feeds, execution_summary,
                                 import_framework)
from bench.options import OrtGpuOptions, OrtOptions
from bench.precision import onnx_for

COMPUTE_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "MatMul", "Gemm", "FusedMatMul", "FusedGemm"}
INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "NhwcQLinearConv"}


def executed_precision(optimized_path: str, qdq_is_int8: bool = False) -> str:
    """Element types of the compute ops in the graph ONNX Runtime optimized. With `qdq_is_int8`
    (a graph handed whole to a compiling provider, TensorRT, which fuses Q/DQ into int8 kernels),
    a compute op fed by a DequantizeLinear counts as int8; ONNX Runtime's own optimized graph
    keeps such a pair only where it did not fuse it, so there it is float math."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(optimized_path, load_external_data=False)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
    counts: Counter[str] = Counter()
    dequantized = {o for node in model.graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    for node in model.graph.node:
        if node.op_type in INT8_OPS or (qdq_is_int8 and node.op_type in COMPUTE_OPS and node.input and node.input[0] in dequantized):
            counts["int8"] += 1
        elif node.op_type in COMPUTE_OPS:
            # The weight's type: activations' value_info may be missing after optimization.
            kinds = [types.get(n) for n in node.input[:2] if n in types]
            counts[names.get(kinds[-1], "other") if kinds else "unknown"] += 1
    return execution_summary(counts)


def placement(profile: list[dict[str, Any]]) -> dict[str, Any]:
    """Nodes per execution provider, from an ONNX Runtime profile (its "Node" events carry
    args.provider and args.op_name): {'nodes': {provider: n}, 'cpu': [(name, op)], 'copies': n}.
    A compiling provider (TensorRT) shows one node per fused subgraph, so counts mix kinds: they
    say where work ran, not how many ONNX nodes each provider took."""
    nodes: Counter[str] = Counter()
    cpu: dict[str, str] = {}
    copies = 0
    seen: set[str] = set()
    for ev in profile:
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or "provider" not in args or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        if name in seen:
            continue
        seen.add(name)
        op = str(args.get("op_name", "?"))
        if op.startswith("Memcpy"):
            copies += 1
            continue
        nodes[str(args["provider"])] += 1
        outputs = [k for t in args.get("output_type_shape") or [] if isinstance(t, dict) for k in t]
        if args["provider"] == "CPUExecutionProvider" and not (outputs and set(outputs) == {"int64"}):
            cpu[name] = op  # int64-only outputs: shape arithmetic, which the CUDA provider leaves on the CPU by design
    return {"nodes": dict(nodes), "cpu": sorted(cpu.items()), "copies": copies}


def placement_facts(placed: Mapping[str, Any], provider: str) -> dict[str, Any]:
    counts = ", ".join(f"{p} x{n}" for p, n in sorted(placed["nodes"].items(), key=lambda kv: -kv[1])) or "no nodes seen"
    facts: dict[str, Any] = {"placement": counts + (f"; {placed['copies']} copy node(s)" if placed["copies"] else ""),
                             "cpu_fallback": None}
    if provider != "CPUExecutionProvider" and placed["cpu"]:
        total = sum(placed["nodes"].values())
        ops = Counter(op for _, op in placed["cpu"])
        facts["cpu_fallback"] = (f"{len(placed['cpu'])} of {total} nodes (or fused subgraphs) ran on the CPU: "
                                 + ", ".join(f"{op} x{n}" for op, n in ops.most_common())
                                 + f" (e.g. {placed['cpu'][0][0]})")
    return facts


class OnnxRuntimeBackend(BackendBase):
    Options: type[OrtOptions] = OrtOptions
    name = "onnxruntime"
    variant = "default"
    keeps_dynamic_batch = False
    precisions = ("fp32", "fp16", "int8")
    provider = "CPUExecutionProvider"
    device = "cpu"
    package_hint = "pip install 'bench[ort]'"
    int8_flavor = "cpu"  # which int8 graph (bench.precision.INT8_FLAVORS)
    options_note = ""  # what the row's options cannot say by themselves
    compiling = False  # a provider that compiles the graph: ONNX Runtime cannot save its optimized model

    def availability(self) -> Availability:
        ort, unusable = import_framework("onnxruntime", "onnxruntime", self.package_hint)
        if unusable:
            return unusable
        available = ort.get_available_providers()
        if self.provider not in available:
            return Availability(False, f"{self.provider} is not in this onnxruntime build (it has {', '.join(available)}); {self.package_hint}")
        return Availability(True, versions={"onnxruntime": ort.__version__})

    def providers(self, request: CompileRequest, options: Any, identity: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
        """The providers the session is created with, in order, with their options (`identity`:
        the GPU's, bench.gpu, empty on the CPU)."""
        return [(self.provider, {})]

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

        options = self.Options.model_validate(request.options)
        path, hit = onnx_for(request, self.int8_flavor)
        opts = self.session_options(request)
        request.work_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{self.name}-{request.precision}-b{request.batch_size}"
        optimized = None if self.compiling else request.work_dir / f"ort-optimized-{tag}.onnx"
        if optimized is not None:
            opts.optimized_model_filepath = str(optimized)
        opts.enable_profiling = True  # for one untimed run below: where each node ran
        opts.profile_file_prefix = str(request.work_dir / f"ort-placement-{tag}")
        identity = self.identity(options)
        asked = self.providers(request, options, identity)
        session = ort.InferenceSession(str(path), sess_options=opts, providers=[(p, dict(o)) for p, o in asked])
        used = session.get_providers()
        if not used or used[0] != self.provider:
            # A session silently running elsewhere would publish the wrong device's numbers.
            raise RuntimeError(f"asked for {self.provider}, the session runs on {used}")
        placed = self._placement(session, request)
        if optimized is None:
            try:
                given = executed_precision(str(path), qdq_is_int8=True)
            except Exception as e:
                given = f"unknown ({type(e).__name__})"
            tf32 = "; TF32 allowed in fp32 layers" if "fp32" in given else ""
            executes_as = f"{given} (types of the graph {self.provider} compiled, not read back{tf32})"
        else:
            try:
                executes_as = executed_precision(str(optimized))
            except Exception as e:  # reading back is best effort; never guess
                executes_as = f"unknown ({type(e).__name__})"
            finally:
                optimized.unlink(missing_ok=True)
        facts = {
            "variant": self.variant,
            "provider": self.provider,
            "device": self.device,
            "threads": request.threads,
            "backend_version": ort.__version__,
            "executes_as": executes_as,
            "cache_hit": hit,
            "options": "; ".join([f"graph_optimization_level={options.graph_optimization_level}",
                                  *(f"{p}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for p, o in asked if o),
                                  *([self.options_note] if self.options_note else [])]),
            **placement_facts(placed, self.provider),
            **identity,
        }
        compiled = OrtCompiled(session, facts, getattr(options, "device_id", 0))
        compiled.profiled_session = lambda d: self._profiled_session(request, path, asked, d)
        compiled.graph_path = path
        return compiled

    def _profiled_session(self, request: CompileRequest, path: Path, asked: list[tuple[str, dict[str, str]]], d: Path) -> Any:
        """A session like the timed one with the profiler on (and its optimized graph saved in `d`,
        where the provider allows it), for Compiled.profile."""
        import onnxruntime as ort

        opts = self.session_options(request)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(d / "ort-profile")
        if not self.compiling:
            opts.optimized_model_filepath = str(d / "ort-optimized.onnx")
        return ort.InferenceSession(str(path), sess_options=opts, providers=[(p, dict(o)) for p, o in asked])

    def identity(self, options: Any) -> dict[str, str]:
        return {}

    def _placement(self, session: Any, request: CompileRequest) -> dict[str, Any]:
        """One untimed run on seeded inputs with the profiler on, then the profiler ended (no timed call
        is profiled): which provider ran each node."""
        import json

        from bench.inputs import seeded_feeds

        session.run(None, seeded_feeds(request.model.info, request.batch_size, seed=0, iterations=1)[0])
        path = Path(session.end_profiling())
        try:
            return placement(json.loads(path.read_text()))
        finally:
            path.unlink(missing_ok=True)


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    Options = OrtGpuOptions
    name = "onnxruntime_cuda"
    provider = "CUDAExecutionProvider"
    device = "cuda"
    package_hint = "install onnxruntime-gpu (pip install 'bench[gpu]') on a machine with CUDA"
    int8_flavor = "tensorrt"  # the CUDA provider's QDQ kernels are symmetric signed int8 too

    def cuda_options(self, options: Any) -> dict[str, str]:
        return {"device_id": str(options.device_id), "use_tf32": "1" if options.tf32 else "0"}

    def providers(self, request: CompileRequest, options: Any, identity: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
        return [("CUDAExecutionProvider", self.cuda_options(options))]

    def identity(self, options: Any) -> dict[str, str]:
        from bench import gpu

        return gpu.identity(options.device_id)


class OnnxRuntimeTensorrtBackend(OnnxRuntimeCudaBackend):
    name = "onnxruntime_trt"
    provider = "TensorrtExecutionProvider"
    package_hint = "install onnxruntime-gpu and TensorRT (pip install 'bench[gpu]') on a machine with CUDA"
    compiling = True
    # The provider has no TF32 option: TensorRT's builder default (TF32 allowed) applies to its fp32
    # engines, unlike the tensorrt backend's (TF32 cleared). Said in every row, not hidden.
    options_note = "TensorRT's own TF32 default applies to its fp32 layers (the provider has no option for it)"

    def providers(self, request: CompileRequest, options: Any, identity: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
        engines = request.cache.keep_dir("ort-trt-engines", {"onnxruntime": _ort_version(), **identity})
        # No trt_fp16_enable / trt_int8_enable: with neither, the provider builds a strongly typed
        # network (onnxruntime PR 24298), so the fp16 graph and the Q/DQ graph carry the precision,
        # as in the tensorrt backend; those flags are TensorRT 10's weak typing, gone in 11.
        trt = {"device_id": str(options.device_id), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(engines),
               "trt_timing_cache_enable": "True", "trt_fp16_enable": "False", "trt_int8_enable": "False"}
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", self.cuda_options(options))]


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


def bind(session: Any, feeds: Feeds, device: str, device_id: int = 0) -> Any:
    """An IOBinding with every input copied to `device` once and every output bound to a buffer
    allocated there by one untimed run: a call then neither wraps inputs nor allocates outputs."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, device_id))
    names = [o.name for o in session.get_outputs()]
    for name in names:
        binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding)  # allocates the outputs once, at their real shapes
    outputs = binding.get_outputs()
    binding.clear_binding_outputs()
    for name, value in zip(names, outputs):
        binding.bind_ortvalue_output(name, value)
    return binding


class OrtCompiled(CompiledBase):
    clock = staticmethod(HOST_CLOCK)

    def __init__(self, session: Any, facts: dict[str, Any], device_id: int = 0):
        self.session = session
        self.facts = facts
        self._device_id = device_id
        self._outputs = [o.name for o in session.get_outputs()]
        self._device = "cpu" if facts.get("device", "cpu") == "cpu" else "cuda"
        self.timed_region = (f"session.run_with_iobinding: inputs pre-bound as OrtValues on {self._device}, outputs bound to "
                             f"{self._device} buffers allocated before timing; nothing copied to the host"
                             + ("" if self._device == "cpu" else "; host clock after the provider's stream synchronization"))

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, dict(feeds))))

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        run, binding = self.session.run_with_iobinding, bind(self.session, feeds, self._device, self._device_id)
        return lambda: run(binding)

    def profile(self, feeds: Feeds) -> Any:
        """ONNX Runtime's own profiler over a second session of the same graph and options (the timed
        session never profiles), its nodes mapped to the model's (bench.profiling.ort_profile)."""
        import json
        import tempfile

        import onnx

        from bench.backends.base import Unsupported
        from bench.profiling import ort_profile, run_passes, unprofiled_us

        if self._device != "cpu":
            # its node events time each kernel's launch on the host, not its work on the device
            raise Unsupported("ONNX Runtime's profiler times a GPU provider's kernel launches on the host, not the kernels: "
                              "no per-layer profile for this provider")
        wall = unprofiled_us(self.prepare(feeds))
        with tempfile.TemporaryDirectory(prefix="bench-ort-profile-") as tmp:
            d = Path(tmp)
            session = self.profiled_session(d)
            binding = bind(session, feeds, self._device, self._device_id)  # one run
            session.run_with_iobinding(binding)  # and one more: both left out
            passes = run_passes(lambda: session.run_with_iobinding(binding))
            events = json.loads(Path(session.end_profiling()).read_text())
            optimized = d / "ort-optimized.onnx"
            graph = onnx.load(str(optimized), load_external_data=False) if optimized.is_file() else None
            profile = ort_profile(events, onnx.load(str(self.graph_path), load_external_data=False), graph, warmup_runs=2, wall_us=wall)
        profile.facts["passes_run"] = passes
        return profile

    def release(self) -> None:
        self.session = None
