"""ONNX Runtime's GPU build (onnxruntime-gpu) as its Python sessions behave, for tests only: a
BENCH_PLUGINS hook that wraps the installed CPU build.

Written from ONNX Runtime's sources and docs (onnxruntime.ai/docs/execution-providers/CUDA-
ExecutionProvider.html and TensorRT-ExecutionProvider.html; onnxruntime/python/
onnxruntime_inference_collection.py; core/providers/cuda/cuda_execution_provider_info.cc;
include/onnxruntime/core/providers/tensorrt/tensorrt_provider_options.h; core/common/profiler.cc):
- get_available_providers() lists TensorrtExecutionProvider, CUDAExecutionProvider and the CPU one.
- Provider options are checked: an unknown key, or a TensorRT boolean that is not True/False,
  is an EP error. The CUDA provider's `use_tf32` defaults to 1.
- An EP error (a RuntimeError) at session creation does not raise: the wrapper prints its
  "EP Error" banner and retries with its fallback providers (CUDA and CPU when TensorRT and CUDA
  were both asked for, else CPU only). A TensorRT session asked to save `optimized_model_filepath`
  fails in Initialize ("Unable to serialize model as it contains compiled nodes"), raised as
  `onnxruntime.capi.onnxruntime_pybind11_state.Fail`, which is no RuntimeError: the constructor
  raises it.
- get_providers() always lists CPUExecutionProvider last.
- The profiler's "Node" events name the provider that ran each node; TensorRT's work shows as one
  fused node per subgraph (`TRTKernel_graph_<name>_<n>`). Ops named in
  BENCH_STANDIN_REJECT_OPS (comma-separated) are ones the GPU providers refuse: TensorRT hands
  them to the CUDA provider when it is registered behind it, else to the CPU; the CUDA provider
  leaves them on the CPU.
Arithmetic is the CPU build's own; device "cuda" OrtValues and bindings live in host memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.standins import record

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
CUDA_KEYS = {"device_id", "has_user_compute_stream", "user_compute_stream", "gpu_mem_limit", "arena_extend_strategy",
             "cudnn_conv_algo_search", "do_copy_in_default_stream", "gpu_external_alloc", "gpu_external_free",
             "gpu_external_empty_cache", "cudnn_conv_use_max_workspace", "enable_cuda_graph", "cudnn_conv1d_pad_to_nc1d",
             "tunable_op_enable", "tunable_op_tuning_enable", "tunable_op_max_tuning_duration_ms",
             "enable_skip_layer_norm_strict_mode", "prefer_nhwc", "use_ep_level_unified_stream", "use_tf32"}
TRT_BOOLS = {"trt_fp16_enable", "trt_int8_enable", "trt_int8_use_native_calibration_table", "trt_dla_enable", "trt_dump_subgraphs",
             "trt_engine_cache_enable", "trt_engine_decryption_enable", "trt_force_sequential_engine_build",
             "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback", "trt_timing_cache_enable", "trt_force_timing_cache",
             "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable", "trt_cuda_graph_enable",
             "trt_dump_ep_context_model", "trt_weight_stripped_engine_enable", "trt_engine_hw_compatible", "trt_bf16_enable"}
TRT_KEYS = TRT_BOOLS | {"device_id", "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_max_workspace_size",
                        "trt_int8_calibration_table_name", "trt_dla_core", "trt_engine_cache_path", "trt_engine_decryption_lib_path",
                        "trt_timing_cache_path", "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_tactic_sources",
                        "trt_extra_plugin_lib_paths", "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes",
                        "trt_ep_context_file_path", "trt_ep_context_embed_mode", "trt_onnx_model_folder_path",
                        "trt_engine_cache_prefix"}


class Fail(Exception):
    """onnxruntime.capi.onnxruntime_pybind11_state.Fail: registered with pybind11's default base."""


def _ep_error(name: str, options: dict) -> str | None:
    keys = CUDA_KEYS if name == CUDA else TRT_KEYS if name == TRT else set()
    for k, v in options.items():
        if k not in keys:
            return f'Unknown provider option: "{k}".' if name == CUDA else f"Invalid TensorRT EP option: {k}"
        if name == TRT and k in TRT_BOOLS and str(v) not in ("True", "true", "False", "false"):
            return f"[ERROR] [TensorRT] The value for the key '{k}' should be 'True' or 'False'. Default value is 'False'."
    return None


def register(backends: dict) -> None:
    import onnxruntime as ort

    from tests.standins import cudart

    if getattr(ort, "_bench_standin", False):
        return
    cudart.install()
    real_session, real_from_numpy = ort.InferenceSession, ort.OrtValue.ortvalue_from_numpy

    class InferenceSession(real_session):
        def __init__(self, path, sess_options=None, providers=None, **kw):
            asked = [(p[0], dict(p[1])) if isinstance(p, tuple) else (p, {}) for p in (providers or [CPU])]
            names = [p for p, _ in asked]
            fallback = [CUDA, CPU] if TRT in names and CUDA in names else [CPU]
            error = next((e for p, o in asked if (e := _ep_error(p, o))), None)
            if error is None and TRT in names and sess_options is not None and sess_options.optimized_model_filepath:
                record("onnxruntime", "InferenceSession", providers=names, options={}, optimized_model_filepath=True,
                       ep_error="Fail")
                raise Fail("[ONNXRuntimeError] : 1 : FAIL : Unable to serialize model as it contains compiled nodes. "
                           "Please disable any execution providers which generate compiled nodes.")
            if error is not None:
                print("*************** EP Error ***************")
                print(f"EP Error {error} when using {names}")
                print(f"Falling back to {fallback} and retrying.")
                print("****************************************")
                asked = [(p, {}) for p in fallback]
            self._standin = [p for p, _ in asked if p != CPU] + [CPU]
            self._standin_options = {p: o for p, o in asked}
            if CUDA in self._standin_options:
                self._standin_options[CUDA] = {"use_tf32": "1", **self._standin_options[CUDA]}
            record("onnxruntime", "InferenceSession", providers=self._standin, options=self._standin_options,
                   optimized_model_filepath=bool(sess_options and sess_options.optimized_model_filepath), ep_error=error)
            super().__init__(path, sess_options, providers=[CPU], **kw)

        def get_providers(self):
            return list(self._standin)

        def get_provider_options(self):
            return {p: {k: str(v) for k, v in o.items()} for p, o in self._standin_options.items()}

        def end_profiling(self):
            path = super().end_profiling()
            if path:
                events = json.loads(Path(path).read_text())
                reject = set(filter(None, os.environ.get("BENCH_STANDIN_REJECT_OPS", "").split(",")))
                first = self._standin[0]
                fused = None
                kept = []
                for ev in events:
                    args = ev.get("args") or {}
                    if ev.get("cat") == "Node" and "provider" in args and first != CPU:
                        if args.get("op_name") in reject:
                            args["provider"] = CUDA if first == TRT and CUDA in self._standin else CPU
                        elif first == TRT:  # TensorRT runs its subgraph as one compiled node
                            if fused is None and ev["name"].endswith("_kernel_time"):
                                fused = {**ev, "name": "TRTKernel_graph_main_0_kernel_time",
                                         "args": {**args, "op_name": "TRTKernel_graph_main_0", "provider": TRT}}
                                kept.append(fused)
                            continue
                        else:
                            args["provider"] = first
                    kept.append(ev)
                Path(path).write_text(json.dumps(kept))
            return path

        def io_binding(self):
            return _Binding(super().io_binding())

    class _Binding:
        def __init__(self, inner):
            self.inner = inner

        def bind_output(self, name, device_type="cpu", *a, **kw):
            return self.inner.bind_output(name, "cpu" if device_type == "cuda" else device_type, *a, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def ortvalue_from_numpy(arr, device_type="cpu", device_id=0, *a):
        return real_from_numpy(arr, "cpu" if device_type == "cuda" else device_type, 0, *a)

    _real_run_binding = real_session.run_with_iobinding

    def run_with_iobinding(self, binding, run_options=None):
        return _real_run_binding(self, binding.inner if isinstance(binding, _Binding) else binding, run_options)

    InferenceSession.run_with_iobinding = run_with_iobinding
    ort.InferenceSession = InferenceSession
    ort.OrtValue.ortvalue_from_numpy = staticmethod(ortvalue_from_numpy)
    ort.get_available_providers = lambda: [TRT, CUDA, CPU]
    ort._bench_standin = True
