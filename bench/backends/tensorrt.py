"""TensorRT, built with Polygraphy's loaders, timed on the GPU with CUDA events.

One engine per (model, precision) covers every batch size of the grid through one optimization
profile (min = smallest batch, opt = this cell's batch, max = largest). int8 uses an entropy
calibrator fed with the same calibration set as the other backends, in batches of the cell's size
(the profile's opt shape, which the calibration profile accepts). `executes_as` is read from the
built engine's inspector. A timed call is one enqueue between a pair of CUDA events. Engines and timing caches are
cached (the timing cache is saved beside each engine). Everything imports lazily: on a machine without TensorRT or a CUDA device, `availability`
says which, and the cells are skipped with that reason.

The pure parts (`profile_shapes`, `builder_flags`, `engine_precision`, the event-pair arithmetic and
its error paths) are tested everywhere; the rest needs a GPU and TensorRT, which this project's own
machines cannot install.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from pydantic import Field

from bench.backends.base import Availability, BackendOptions, CompileRequest, Feeds, import_framework


def profile_shapes(shapes: Mapping[str, tuple[int, ...]], batch_sizes: tuple[int, ...], batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per input: the batch axis spans the grid's batch sizes, opt is this cell's."""
    sizes = sorted(set(batch_sizes) | {batch})
    out = {}
    for name, shape in shapes.items():
        if not shape or shape[0] != batch:
            out[name] = (tuple(shape),) * 3  # no batch axis: static
            continue
        rest = tuple(shape[1:])
        out[name] = ((sizes[0], *rest), (batch, *rest), (sizes[-1], *rest))
    return out


def builder_flags(precision: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for Polygraphy's CreateConfig."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision!r}")
    flags: dict[str, Any] = {"fp16": precision in ("fp16", "int8"), "int8": precision == "int8", "tf32": False}
    if "workspace_mb" in options:
        flags["memory_pool_limits"] = {"workspace": int(options["workspace_mb"]) << 20}
    if "builder_optimization_level" in options:
        flags["builder_optimization_level"] = int(options["builder_optimization_level"])
    return flags


def cuda_device() -> tuple[str | None, str]:
    """(device name, '') when a CUDA device is usable, else (None, why not)."""
    try:
        from polygraphy import cuda

        handle = cuda.wrapper().handle
    except Exception as e:
        return None, f"the CUDA runtime library could not be loaded ({type(e).__name__}: {e})"
    count = ctypes.c_int(0)
    status = handle.cudaGetDeviceCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return None, f"no CUDA device (cudaGetDeviceCount returned status {status}, {count.value} devices)"
    return f"cuda:0 of {count.value}", ""


def cuda_check(handle: Any, status: int, call: str) -> None:
    """Raise, naming the call and CUDA's own words, when a CUDA runtime call did not return success."""
    if status != 0:
        describe = handle.cudaGetErrorString
        try:
            describe.restype = ctypes.c_char_p  # a ctypes function returns an int otherwise
        except AttributeError:
            pass
        try:
            words = describe(status).decode()
        except Exception:
            words = "no description"
        raise RuntimeError(f"{call} failed with CUDA error {status} ({words})")


class CudaEventPair:
    """Times one forward call on the GPU: a start event recorded on the stream before the enqueue,
    an end event after, a wait for the end event, and their elapsed time, as int64 nanoseconds.
    A pair per call, so no reading is relative to a distant base event (cudaEventElapsedTime is a
    float32 of milliseconds: microsecond steps once the base is seconds away). Every CUDA call's
    status is checked. This is the `interval` the harness times a call with (bench.timing.measure)."""

    def __init__(self, stream_ptr: int, handle: Any = None):
        if handle is None:
            from polygraphy import cuda

            handle = cuda.wrapper().handle
        self.h = handle
        self.stream = ctypes.c_void_p(stream_ptr)
        self.start, self.end = self._event(), self._event()

    def _event(self) -> ctypes.c_void_p:
        ev = ctypes.c_void_p()
        cuda_check(self.h, self.h.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")
        return ev

    def __call__(self, fn: Callable[[], object]) -> int:
        h = self.h
        cuda_check(h, h.cudaEventRecord(self.start, self.stream), "cudaEventRecord(start)")
        fn()
        cuda_check(h, h.cudaEventRecord(self.end, self.stream), "cudaEventRecord(end)")
        cuda_check(h, h.cudaEventSynchronize(self.end), "cudaEventSynchronize(end)")
        ms = ctypes.c_float()
        cuda_check(h, h.cudaEventElapsedTime(ctypes.byref(ms), self.start, self.end), "cudaEventElapsedTime")
        return int(round(ms.value * 1e6))

    def close(self) -> None:
        for ev in (self.start, self.end):
            self.h.cudaEventDestroy(ev)


def enqueue_checked(execute: Callable[[int], bool], stream_ptr: int) -> Callable[[], None]:
    """A forward call that fails loudly when TensorRT refuses the enqueue (execute_async_v3 returns
    False), instead of being timed as a fast no-op."""
    def forward() -> None:
        if not execute(stream_ptr):
            raise RuntimeError("TensorRT's execute_async_v3 returned False: the inference was not enqueued")

    return forward


_TRT_TYPES = (("int8", "int8"), ("fp8", "fp8"), ("half", "fp16"), ("fp16", "fp16"), ("bf16", "bf16"), ("float", "fp32"),
              ("fp32", "fp32"), ("int32", "int32"), ("bool", "bool"))


def engine_precision(info: Mapping[str, Any]) -> str:
    """What a built engine computes in, from its inspector's layer information (JSON, built with
    detailed profiling verbosity): the element type of each compute layer's outputs, counted."""
    from collections import Counter

    from bench.backends.base import execution_summary

    counts: Counter[str] = Counter()
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        kind = str(layer.get("LayerType", ""))
        if kind not in ("CaskConvolution", "CaskDeconvolution", "CaskGemmConvolution", "CaskGemmMatrixMultiply",
                        "MatrixMultiply", "Convolution", "gemm", "CaskFlattenConvolution", "Myelin", "CaskPooling"):
            continue
        for out in layer.get("Outputs", [])[:1]:
            text = str(out.get("Format/Datatype", "")).lower()
            counts[next((name for key, name in _TRT_TYPES if key in text), "other")] += 1
    return execution_summary(counts)


class TrtOptions(BackendOptions):
    workspace_mb: int | None = Field(None, ge=1, description="builder workspace limit in MiB")
    builder_optimization_level: int | None = Field(None, ge=0, le=5, description="TensorRT builder optimization level 0-5")


class TensorrtBackend:
    Options = TrtOptions
    name = "tensorrt"
    variant = "engine"
    keeps_dynamic_batch = True  # one engine, one optimization profile spanning the grid's batch sizes
    precisions = ("fp32", "fp16", "int8")

    def availability(self) -> Availability:
        trt, unusable = import_framework("tensorrt", "tensorrt", "pip install 'bench[gpu]' on a machine with CUDA")
        if unusable:
            return unusable
        device, why = cuda_device()
        if device is None:
            return Availability(False, why)
        return Availability(True, versions={"tensorrt": trt.__version__})

    def compile(self, request: CompileRequest) -> "TrtCompiled":
        import tensorrt as trt
        from polygraphy.backend.trt import Calibrator, CreateConfig, EngineBytesFromNetwork, EngineFromBytes, NetworkFromOnnxPath, Profile

        profile = Profile()
        for name, (lo, opt, hi) in profile_shapes(request.shapes, request.batch_sizes, request.batch_size).items():
            profile.add(name, lo, opt, hi)

        def build(d: Path) -> None:
            calibrator = None
            if request.precision == "int8":
                calibrator = Calibrator(data_loader=request.calibration(), cache=str(d / "calibration.cache"))
            config = CreateConfig(profiles=[profile], calibrator=calibrator, profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
                                  **builder_flags(request.precision, request.options))
            network = NetworkFromOnnxPath(str(request.model.path))
            engine_bytes = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(d / "timing.cache"))()
            (d / "engine.plan").write_bytes(bytes(engine_bytes))

        key = {"model_sha256": request.model.sha256, "precision": request.precision, "tensorrt": trt.__version__,
               "profile": {k: [list(s) for s in v] for k, v in profile_shapes(request.shapes, request.batch_sizes, request.batch_size).items()},
               "options": dict(request.options)}
        entry, hit = request.cache.get_or_build("trt-engine", key, build)
        engine = EngineFromBytes((entry / "engine.plan").read_bytes())()
        try:
            import json

            inspector = engine.create_engine_inspector()
            executes_as = engine_precision(json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))
        except Exception as e:  # read from the engine or say it could not be; never the requested precision
            executes_as = f"unknown ({type(e).__name__})"
        facts = {"variant": self.variant, "provider": "TensorRT", "device": "cuda", "threads": request.threads,
                 "backend_version": trt.__version__, "executes_as": executes_as, "cache_hit": hit}
        return TrtCompiled(engine, facts, request.shapes)


class TrtCompiled:
    """Device buffers are allocated once; `prepare` copies inputs in beforehand, so a timed call
    enqueues the execution alone."""

    timed_region = ("execute_async_v3 between a start and an end CUDA event on its stream: device buffers allocated and "
                    "inputs copied before timing, outputs left on the device")

    def __init__(self, engine: Any, facts: dict[str, Any], shapes: Mapping[str, tuple[int, ...]]):
        import tensorrt as trt
        from polygraphy import cuda

        self.engine, self.facts = engine, facts
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.interval = CudaEventPair(self.stream.ptr)
        self.clock = time.perf_counter_ns  # host time, for what is not a forward call
        self.buffers: dict[str, Any] = {}
        self.outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, shapes[name])
                shape = tuple(shapes[name])
            else:
                self.outputs.append(name)
                shape = None
            self.buffers[name] = (dtype, shape)
        for name in self.outputs:
            self.buffers[name] = (self.buffers[name][0], tuple(self.context.get_tensor_shape(name)))
        self.device = {n: cuda.DeviceArray(shape=s, dtype=d) for n, (d, s) in self.buffers.items()}
        for n, arr in self.device.items():
            self.context.set_tensor_address(n, arr.ptr)

    def _load(self, feeds: Feeds) -> None:
        for name, arr in feeds.items():
            self.device[name].copy_from(np.ascontiguousarray(arr, dtype=self.buffers[name][0]), stream=self.stream)
        self.stream.synchronize()

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        self._load(feeds)
        enqueue_checked(self.context.execute_async_v3, self.stream.ptr)()
        self.stream.synchronize()
        return {n: self.device[n].numpy().copy() for n in self.outputs}

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        self._load(feeds)
        return enqueue_checked(self.context.execute_async_v3, self.stream.ptr)

    def release(self) -> None:
        self.interval.close()
        for arr in self.device.values():
            arr.free()
        self.stream.free()
        self.context = self.engine = None
