"""TensorRT 10.x and 11.x, built with Polygraphy's loaders, timed on the GPU with CUDA events.

Typing. TensorRT 11 has no weak typing (NVIDIA, "Migrating from TensorRT 10.x to 11.x": removed
`BuilderFlag.FP16/INT8/...`, `IBuilderConfig.int8_calibrator`, `set_calibration_profile`): networks
are strongly typed, fp16 comes from an fp16 ONNX graph and int8 from explicit Q/DQ nodes. One code
path serves 10.x and 11.x: strongly typed by default (`typing: strong`), fp16 from the suite's fp16
graph, int8 from its TensorRT-flavored Q/DQ graph (bench.precision: signed, symmetric, zero point 0,
per-channel weights, calibrated on the suite's seeded calibration set and checked before the
engine sees it). `typing: weak` (TensorRT 10.x only) keeps the old route: the fp32 graph with the
FP16/INT8 builder flags and an entropy calibrator. TF32 is off unless `tf32: true`, so an fp32 row
is fp32 math. Rows say `trt_typing`.

One engine per (model, precision) covers every batch size of the grid through one optimization
profile (min = smallest batch, opt = this cell's batch, max = largest). `executes_as` is read from
the engine inspector given an execution context with the cell's input shapes (without one, a
dynamic-shape engine's layers read "N/A due to dynamic shapes"); both inspector formats are read
(10.x `Format/Datatype`, 11.x `Datatype`). A timed call is one enqueue between a pair of CUDA
events. Engines are cached under the GPU's identity (bench.gpu: name, compute capability, driver,
CUDA runtime) and TensorRT's version, since engines do not move across GPUs; the timing cache is
kept per GPU identity and loaded by the next build.

A second opinion: where `trtexec` is on the PATH, the same engine file is timed by NVIDIA's own
tool (`--exportTimes`, per-iteration compute times, no data transfers, as bench's timed region)
after bench's own loop, and the row carries `trtexec_p50_ms` and `trtexec_ratio` (bench's median
of that process over trtexec's).

Everything imports lazily: on a machine without TensorRT or a CUDA device, `availability` says
which. Tests drive compile, the inspector and the timed loop through Polygraphy against contract
stand-ins of the 10.x and 11.x APIs (tests/standins/); this project's machines cannot install
TensorRT, so no row of this backend has run on real hardware in its CI.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from bench import gpu
from bench.backends.base import Availability, BackendBase, CompiledBase, CompileRequest, Feeds, Unsupported, import_framework
from bench.options import TrtOptions
from bench.cache import file_sha256
from bench.config import AS_GIVEN
from bench.precision import feeds_digest, onnx_for


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


def api_facts(trt: Any) -> dict[str, Any]:
    """What the installed TensorRT offers: its major version, whether weak typing (precision builder
    flags, calibrators) exists, and whether strong typing is a flag to set or always on."""
    version = str(trt.__version__)
    major = int(version.split(".")[0])
    return {"version": version, "major": major,
            "weak_typing": hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8"),
            "strongly_typed_flag": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")}


def typing_mode(requested: str, api: Mapping[str, Any]) -> str:
    """'strong' or 'weak', or Unsupported naming what this TensorRT lacks."""
    if requested == "weak" and not api["weak_typing"]:
        raise Unsupported(f"TensorRT {api['version']} has no weak typing (removed in 11.x: BuilderFlag.FP16/INT8 and calibrators); "
                          "use typing: strong (the default), which builds fp16 and int8 from the suite's fp16 and Q/DQ graphs")
    if requested == "strong" and not api["strongly_typed_flag"] and api["weak_typing"]:
        raise Unsupported(f"TensorRT {api['version']} has no strongly typed networks; set backend_options.tensorrt.typing: weak")
    return requested


def builder_flags(precision: str, options: Mapping[str, Any], trt: Any, typing: str = "strong") -> dict[str, Any]:
    """Keyword arguments for Polygraphy's CreateConfig. Precision flags only for weak typing (a
    strongly typed network takes its types from the graph, and 11.x has no such flags)."""
    if precision not in ("fp32", "fp16", "int8", AS_GIVEN):
        raise ValueError(f"unknown precision {precision!r}")
    flags: dict[str, Any] = {"tf32": bool(options.get("tf32", False))}
    if typing == "weak":
        # a model that arrives quantized carries its Q/DQ nodes: weak typing still needs int8 enabled
        int8 = precision in ("int8", AS_GIVEN)
        flags.update(fp16=precision == "fp16" or int8, int8=int8)
    if options.get("workspace_mb") is not None:
        flags["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(options["workspace_mb"]) << 20}
    if options.get("builder_optimization_level") is not None:
        flags["builder_optimization_level"] = int(options["builder_optimization_level"])
    return flags


def cuda_device() -> tuple[str | None, str]:
    """(device name, '') when a CUDA device is usable, else (None, why not)."""
    try:
        handle = gpu.runtime_handle()
    except Exception as e:
        return None, f"the CUDA runtime library could not be loaded ({type(e).__name__}: {e})"
    status, count = gpu.device_count(handle)
    if status != 0 or count == 0:
        return None, f"no CUDA device (cudaGetDeviceCount returned status {status}, {count} devices)"
    return f"cuda:0 of {count}", ""


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

    timer = "cuda_event_pair"

    def __init__(self, stream_ptr: int, handle: Any = None):
        self.h = gpu.runtime_handle() if handle is None else handle
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


_TRT_TYPES = (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("half", "fp16"), ("fp16", "fp16"),
              ("float", "fp32"), ("fp32", "fp32"), ("int32", "int32"), ("bool", "bool"))
COMPUTE_LAYERS = ("CaskConvolution", "CaskDeconvolution", "CaskGemmConvolution", "CaskGemmMatrixMultiply", "MatrixMultiply",
                  "Convolution", "gemm", "CaskFlattenConvolution", "Myelin", "CaskPooling")
NO_SHAPES = "n/a due to dynamic shapes"


def layer_datatype(tensor: Mapping[str, Any]) -> str:
    """A layer tensor's element type as the inspector writes it: 11.x has `Datatype` (and
    `Format` apart; its engine-level I/O entries spell it `DataType`), 10.x one `Format/Datatype`."""
    for key in ("Datatype", "DataType", "Format/Datatype", "Format"):
        if key in tensor:
            return str(tensor[key]).lower()
    return ""


def engine_precision(info: Mapping[str, Any]) -> str:
    """What a built engine computes in, from its inspector's layer information (JSON, built with
    detailed profiling verbosity): the element type each compute layer reads (its first input:
    an int8 convolution may write float where the next layer is not quantized), counted.
    Formats an inspector could not resolve (no execution context on a dynamic-shape engine) make
    the answer 'unknown (...)', never a guess."""
    from collections import Counter

    from bench.backends.base import execution_summary

    counts: Counter[str] = Counter()
    unresolved = 0
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict) or str(layer.get("LayerType", "")) not in COMPUTE_LAYERS:
            continue
        for tensor in (layer.get("Inputs") or layer.get("Outputs") or [])[:1]:
            text = layer_datatype(tensor)
            if NO_SHAPES in text:
                unresolved += 1
                continue
            counts[next((name for key, name in _TRT_TYPES if key in text), "other")] += 1
    if unresolved and not counts:
        return "unknown (the inspector saw no input shapes: N/A due to dynamic shapes)"
    return execution_summary(counts)


def trtexec_times(records: list[Mapping[str, Any]]) -> list[float]:
    """Per-iteration GPU compute times (ms) from `trtexec --exportTimes` records."""
    times = [float(r["computeMs"]) for r in records if isinstance(r, Mapping) and "computeMs" in r]
    if not times:
        raise ValueError("trtexec's exported times hold no computeMs")
    return times


def trtexec_flags(trt_major: int) -> list[str]:
    """Flags that make trtexec's timed region bench's: no host/device copies, no CUDA graph, a
    spinning wait. 11.x made those the defaults (no copies, spin) or added the switch (--noCudaGraph);
    its old spellings are no-ops there, and 10.x knows none of the new ones."""
    return ["--noCudaGraph"] if trt_major >= 11 else ["--noDataTransfers", "--useSpinWait"]


def trtexec_opinion(engine_path: Path, shapes: Mapping[str, tuple[int, ...]], samples_ns: list[int], work: Path,
                    iterations: int, trt_major: int) -> dict[str, Any]:
    """Time the engine file with trtexec where it is on the PATH: `trtexec_p50_ms` and the ratio of
    bench's median (this process's samples) to it. Empty when there is no trtexec."""
    exe = shutil.which("trtexec")
    if exe is None or not samples_ns:
        return {}
    work.mkdir(parents=True, exist_ok=True)
    out = work / "trtexec-times.json"
    out.unlink(missing_ok=True)  # never an earlier run's times
    cmd = [exe, f"--loadEngine={engine_path}", "--shapes=" + ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items()),
           f"--iterations={max(int(iterations), 10)}", "--duration=0", "--warmUp=200", *trtexec_flags(trt_major),
           f"--exportTimes={out}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            return {"trtexec_note": f"trtexec exited {done.returncode}: {' | '.join(tail)}"}
        times = trtexec_times(json.loads(out.read_text()))
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return {"trtexec_note": f"trtexec gave no times: {type(e).__name__}: {e}"}
    ours, theirs = float(np.median(samples_ns)) / 1e6, float(np.median(times))
    return {"trtexec_p50_ms": round(theirs, 6), "trtexec_ratio": round(ours / theirs, 4) if theirs > 0 else None,
            "trtexec_note": f"{len(times)} iterations, computeMs, {' '.join(trtexec_flags(trt_major))}"}


class TensorrtBackend(BackendBase):
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
        api = api_facts(trt)
        return Availability(True, versions={"tensorrt": trt.__version__,
                                            "typing": "strong" + ("" if api["weak_typing"] else " only (no weak typing)")})

    def _graph(self, request: CompileRequest, typing: str) -> tuple[Path, dict[str, Any]]:
        """The ONNX file the network is parsed from, and what keys it: strong typing reads the
        precision from the graph (fp16 graph, TensorRT-flavored Q/DQ graph); weak typing parses
        the fp32 graph and calibrates int8 itself."""
        if typing == "strong":
            path, _ = onnx_for(request, int8_flavor="tensorrt")
            # the model itself (fp32, as given): its hash covers external weights; a converted graph: its file's
            return path, {"graph_sha256": request.model.sha256 if path == request.model.path else file_sha256(path)}
        key: dict[str, Any] = {"graph_sha256": request.model.sha256}
        if request.precision == "int8":
            key["calibration"] = feeds_digest(request.calibration())
        return request.model.path, key

    def compile(self, request: CompileRequest) -> "TrtCompiled":
        import tensorrt as trt
        from polygraphy.backend.trt import Calibrator, CreateConfig, EngineBytesFromNetwork, EngineFromBytes, NetworkFromOnnxPath, Profile

        opts = TrtOptions.model_validate(request.options)
        api = api_facts(trt)
        typing = typing_mode(opts.typing, api)
        identity = gpu.identity()
        path, graph_key = self._graph(request, typing)
        shapes = profile_shapes(request.shapes, request.batch_sizes, request.batch_size)
        profile = Profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.add(name, lo, opt, hi)
        timing_cache = timing_cache_path(request, identity, api["version"])

        def build(d: Path) -> None:
            calibrator = None
            if typing == "weak" and request.precision == "int8":
                calibrator = Calibrator(data_loader=request.calibration(), cache=str(d / "calibration.cache"))
            config = CreateConfig(profiles=[profile], calibrator=calibrator, profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
                                  load_timing_cache=str(timing_cache) if timing_cache.is_file() else None,
                                  **builder_flags(request.precision, opts.model_dump(), trt, typing))
            network = NetworkFromOnnxPath(str(path), strongly_typed=typing == "strong" and api["strongly_typed_flag"])
            engine_bytes = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing_cache))()
            (d / "engine.plan").write_bytes(bytes(engine_bytes))

        key = {"precision": request.precision, "tensorrt": api["version"], "typing": typing, **graph_key, **identity,
               "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
               "options": {k: v for k, v in opts.model_dump().items() if k != "trtexec"}}
        entry, hit = request.cache.get_or_build("trt-engine", key, build)
        engine = EngineFromBytes((entry / "engine.plan").read_bytes())()
        facts = {"variant": self.variant, "provider": "TensorRT", "device": "cuda", "threads": request.threads,
                 "backend_version": api["version"], "trt_typing": typing, "tf32": opts.tf32, "cache_hit": hit, **identity,
                 "options": f"typing={typing}, tf32={opts.tf32}, workspace_mb={opts.workspace_mb}, "
                            f"builder_optimization_level={opts.builder_optimization_level}"}
        compiled = TrtCompiled(engine, facts, request.shapes, entry / "engine.plan" if opts.trtexec else None, request.work_dir)
        compiled.graph_path = path  # the ONNX graph the engine was built from: what profile() maps layers to
        return compiled


def timing_cache_path(request: CompileRequest, identity: Mapping[str, str], version: str) -> Path:
    """Where tactic timings for this GPU and TensorRT version are kept between builds: in the
    artifact cache (shared by every engine of that GPU), or the cell's scratch when it is off."""
    return request.cache.keep_dir("trt-timing-cache", {"tensorrt": version, **identity}) / "timing.cache"


class TrtCompiled(CompiledBase):
    """Device buffers are allocated once; `prepare` copies inputs in beforehand, so a timed call
    enqueues the execution alone."""

    timed_region = ("execute_async_v3 between a start and an end CUDA event on its stream: device buffers allocated and "
                    "inputs copied before timing, outputs left on the device")

    def __init__(self, engine: Any, facts: dict[str, Any], shapes: Mapping[str, tuple[int, ...]], engine_path: Path | None = None,
                 work_dir: Path | None = None):
        import tensorrt as trt
        from polygraphy import cuda

        self.engine, self.facts, self.shapes = engine, facts, dict(shapes)
        self.engine_path, self.work_dir = engine_path, work_dir
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
                shape = tuple(shapes[name])
                if not self.context.set_input_shape(name, shape):
                    raise RuntimeError(f"TensorRT refused input shape {name}={list(shape)} (set_input_shape returned False): "
                                       "outside the engine's optimization profile")
            else:
                self.outputs.append(name)
                shape = None
            self.buffers[name] = (dtype, shape)
        for name in self.outputs:
            self.buffers[name] = (self.buffers[name][0], tuple(self.context.get_tensor_shape(name)))
        self.device = {n: cuda.DeviceArray(shape=s, dtype=d) for n, (d, s) in self.buffers.items()}
        for n, arr in self.device.items():
            if not self.context.set_tensor_address(n, arr.ptr):
                raise RuntimeError(f"TensorRT refused the device address of tensor {n!r}")
        self.facts["executes_as"] = self._executes_as(trt)

    def _executes_as(self, trt: Any) -> str:
        """Read from the engine inspector with this context, so its layers have concrete formats."""
        try:
            inspector = self.engine.create_engine_inspector()
            inspector.execution_context = self.context
            return engine_precision(json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))
        except Exception as e:  # read from the engine or say it could not be; never the requested precision
            return f"unknown ({type(e).__name__})"

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

    def profile(self, feeds: Feeds) -> Any:
        """TensorRT's per-layer times (an IProfiler on this context, the stream synchronized after each
        pass) with the engine inspector's layers (built with ProfilingVerbosity.DETAILED, so fused
        layers list their ONNX nodes), mapped by bench.profiling.trt_profile."""
        import statistics

        import onnx
        import tensorrt as trt

        from bench.profiling import run_passes, trt_profile, unprofiled_us

        forward, sync = self.prepare(feeds), self.stream.synchronize
        wall = unprofiled_us(lambda: (forward(), sync()))
        times: dict[str, list[float]] = {}

        class Recorder(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                times.setdefault(layer_name, []).append(float(ms))

        walls: list[float] = []

        def one() -> None:
            t0 = time.perf_counter_ns()
            forward()
            sync()
            walls.append((time.perf_counter_ns() - t0) / 1e3)

        self.context.profiler = Recorder()
        passes = run_passes(one)
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        records = [{"count": passes}] + [{"name": n, "timeMs": sum(v), "averageMs": sum(v) / len(v), "medianMs": statistics.median(v)}
                                         for n, v in times.items()]
        return trt_profile(info, records, onnx.load(str(self.graph_path), load_external_data=False), wall_us=wall,
                           profiled_wall_us=statistics.median(walls))

    def second_opinion(self, samples_ns: list[int]) -> dict[str, Any]:
        """trtexec's timing of the same engine file (see the module's docstring)."""
        if self.engine_path is None or self.work_dir is None:
            return {}
        major = int(str(self.facts["backend_version"]).split(".")[0])
        return trtexec_opinion(self.engine_path, self.shapes, samples_ns, self.work_dir / "trtexec", len(samples_ns), major)

    def release(self) -> None:
        self.interval.close()
        for arr in self.device.values():
            arr.free()
        self.stream.free()
        self.context = self.engine = None
