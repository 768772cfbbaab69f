"""Apache TVM through Relax: ONNX frontend, LLVM target for this host's CPU, Relax VirtualMachine.

Two variants, two registry names: `tvm` builds untuned (TVM's default CPU pipeline schedules
nothing, so its figures describe fallback code) and `tvm_tuned` runs MetaSchedule first, with a
trial budget from `backend_options.tvm_tuned`. Compiled libraries are cached; tuning databases are
kept and extended, never re-tuned.

fp16 and int8 come from the ONNX-level conversions in bench.precision. What runs is read from the
Relax module: a QDQ model imports as dequantize -> float kernels, and the row says so.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.backends.base import (HOST_CLOCK, Availability, BackendBase, CompiledBase, CompileRequest, Feeds, ImportFailed, Unsupported,
                                 execution_summary, import_framework, refused_ops)
from bench import machine_lock
from bench.cache import digest, file_sha256
from bench.process import announce_progress
from bench.options import BackendOptions, TunedOptions, TvmOptions
from bench.precision import onnx_for

_COMPUTE = re.compile(r'R\.Tensor\(\([^)]*\), dtype="(\w+)"\) = R\.(?:nn\.conv2d|nn\.conv2d_transpose|matmul)\(')
_DTYPES = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int32": "int8"}


def executed_precision(mod: Any) -> str:
    """Element types produced by the convolutions and matmuls of a Relax module."""
    script = mod.script()  # printing a full-size model takes seconds: once
    counts = Counter(_DTYPES.get(m, m) for m in _COMPUTE.findall(script))
    summary = execution_summary(counts)
    if "dequantize" in script and "int8" not in counts:
        summary += " (int8 weights dequantized; float kernels)"
    return summary


def tvm_onnx_ops() -> set[str]:
    """The ONNX ops TVM's Relax frontend converts: its converter map, and those its importer handles
    itself (see TVM's `_check_for_unsupported_ops`)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map()) | {"If", "Constant"}


def host_target(threads: int) -> Any:
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": threads})


class TvmBackend(BackendBase):
    Options: type[BackendOptions] = TvmOptions
    # imported once by the worker fork server (bench.worker): seconds a worker would pay otherwise
    preload = ("bench.backends.tvm", "bench.backends.tvm_tuning", "tvm", "tvm.relax", "tvm.relax.frontend.onnx")
    name = "tvm"
    variant = "untuned"
    keeps_dynamic_batch = False
    # TVM 0.27 imports a float16 BatchNormalization whose inference decomposition computes in float32,
    # and tvm.compile then refuses the next op ("Binary operators must have the same datatype ...
    # float32 on the LHS"; Conv -> BatchNormalization -> Conv reproduces it): kept in float32 here.
    fp16_float32_ops: tuple[str, ...] = ("BatchNormalization",)
    precisions = ("fp32", "fp16", "int8")

    def availability(self) -> Availability:
        tvm, unusable = import_framework("tvm", "apache-tvm", "pip install 'bench[tvm]'")
        if unusable:
            return unusable
        if not tvm.runtime.enabled("llvm"):
            return Availability(False, "this TVM build has no LLVM backend, so it cannot compile for the CPU")
        import importlib.metadata as md

        versions = {"tvm": tvm.__version__}
        try:
            versions["apache-tvm-ffi"] = md.version("apache-tvm-ffi")
        except md.PackageNotFoundError:
            pass
        return Availability(True, versions=versions)

    def _import(self, request: CompileRequest) -> tuple[Any, bool, list[str]]:
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        path, hit = self._graph(request)
        model = onnx.load(str(path))
        refused = refused_ops(model, tvm_onnx_ops(), "TVM's ONNX importer")
        if refused:
            raise Unsupported(refused)
        try:
            mod = from_onnx(model, shape_dict={k: list(v) for k, v in request.shapes.items()}, keep_params_in_input=False)
        except Exception as e:
            raise ImportFailed.wrap("TVM's ONNX importer", e, model) from None
        return mod, hit, [o.name for o in model.graph.output]

    def _optimize(self, mod: Any, target: Any, request: CompileRequest) -> tuple[Any, dict[str, Any]]:
        """The Relax module to build; the untuned variant takes it as imported."""
        return mod, {}

    def _cache_key(self, request: CompileRequest, target: Any) -> dict[str, Any]:
        import tvm

        key = {"model_sha256": request.model.sha256, "precision": request.precision,
               "shapes": {k: list(v) for k, v in request.shapes.items()}, "target": str(target),
               "tvm": tvm.__version__, "variant": self.variant}
        if request.precision != "fp32":
            # The converted graph itself, whose contents carry the calibration data (seed, samples,
            # images), the quantizer's options and versions; fp32's graph is the model (keys unchanged).
            key["graph_sha256"] = file_sha256(self._graph(request)[0])
        return key

    def _graph(self, request: CompileRequest) -> tuple[Path, bool]:
        """The ONNX file carrying the request's precision (bench.precision.onnx_for), converted once
        per request however many steps ask (with the cache off, each would convert again)."""
        memo = self.__dict__.setdefault("_graphs", {})
        if id(request) not in memo:
            memo[id(request)] = (request, onnx_for(request, fp16_float32_ops=self.fp16_float32_ops))  # kept so its id is not reused
        return memo[id(request)][1]

    # --- the steps a device variant (bench.backends.tvm_cuda) overrides ---------------------------

    cache_kind = "tvm-lib"

    def _target(self, request: CompileRequest) -> Any:
        return host_target(request.threads)

    def _provider(self, target: Any) -> str:
        return f"llvm -mcpu={target.attrs['mcpu']}"

    def _pipeline(self, target: Any) -> tuple[Any, dict[str, Any]]:
        """The Relax pipeline for tvm.compile, and facts it gathers while it runs (filled in then)."""
        return "default", {}

    def _after_compile(self, executable: Any, target: Any, d: Path) -> dict[str, Any]:
        """Extra artifacts beside lib.so, and facts about them for info.json."""
        return {}

    def _load(self, entry: Path, info: dict[str, Any], request: CompileRequest) -> "TvmCompiled":
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(str(entry / "lib.so")), tvm.cpu())
        return TvmCompiled(vm, {"device": "cpu", "threads": int(tvm.runtime.num_threads())}, info["outputs"])

    def compile(self, request: CompileRequest) -> "TvmCompiled":
        # The runtime's thread pool reads this once, on first use: each cell runs in a fresh worker.
        # Set, not defaulted: a value inherited from the shell must not override the config's threads.
        os.environ["TVM_NUM_THREADS"] = str(request.threads)
        import tvm

        target = self._target(request)

        def build(d: Path) -> None:
            mod, _, outputs = self._import(request)
            # Read before scheduling: a tuned module's compute is TIR, no longer Relax operators.
            executes_as = executed_precision(mod)
            mod, info = self._optimize(mod, target, request)
            pipeline, gathered = self._pipeline(target)
            try:
                executable = tvm.compile(mod, target=target, relax_pipeline=pipeline)
            except Exception as e:
                raise ImportFailed.wrap("tvm.compile", e) from None
            executable.export_library(str(d / "lib.so"))
            info = {**info, **gathered, **self._after_compile(executable, target, d)}
            (d / "info.json").write_text(json.dumps({"outputs": outputs, "executes_as": executes_as, **info}))

        entry, hit = request.cache.get_or_build(self.cache_kind, self._cache_key(request, target), build)
        info = json.loads((entry / "info.json").read_text())
        compiled = self._load(entry, info, request)
        compiled.graph_path_of = lambda: self._graph(request)[0]  # asked only by profile(): converting costs a timed process nothing
        compiled.facts = {
            "variant": self.variant,
            "provider": self._provider(target),
            "backend_version": tvm.__version__,
            "executes_as": info["executes_as"],
            "cache_hit": hit,
            "artifact_dir": str(entry),
            **compiled.facts,
            **{k: v for k, v in info.items() if k not in ("outputs", "executes_as")},
        }
        return compiled


def _load_tensor_intrinsics() -> None:
    """Import TVM's tensor intrinsics, quickly. MetaSchedule imports them in the tuning process and
    in each builder worker (its initializer): hundreds of TVMScript functions, each of whose
    decorators calls inspect.stack(), which resolves every frame's module by scanning sys.modules.
    That took 76 s per process on this 2-core machine with 2000 modules loaded; with a stack built
    from linecache alone (what TVMScript reads of it: frames, lines, names), under 2 s."""
    import inspect
    import linecache

    def stack(context: int = 1) -> list:
        frame, out = sys._getframe(1), []
        while frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            out.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name,
                                         [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return out

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    slow, inspect.stack = inspect.stack, stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = slow


def _records(work_dir: Path) -> tuple[int, int]:
    """(tuning records, those that failed to build or run) in a MetaSchedule JSON database."""
    path = work_dir / "database_tuning_record.json"
    if not path.is_file():
        return 0, 0
    total = failed = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        total += 1
        try:
            run_secs = json.loads(line)[1][1]
        except (ValueError, IndexError, TypeError):
            continue
        if not run_secs or min(float(x) for x in run_secs) >= 1e9:
            failed += 1
    return total, failed


class TvmTunedBackend(TvmBackend):
    """MetaSchedule before building, every task covered (bench.backends.tvm_tuning).
    backend_options.tvm_tuned: trials (total budget, default 64), min_trials_per_task (default 2;
    a budget below tasks x minimum is raised to it, and the row says so), trials_per_iter (default
    16), builder_timeout_s (300), search (evolutionary, MetaSchedule's default; replay-trace samples
    schedules at random, far cheaper per trial and weaker: for tests and smoke runs).

    The tuning database lives in the artifact cache, keyed by model, precision, shapes, target and
    TVM version; it is extended, never redone: a budget already spent tunes nothing, a larger one
    tunes only the difference. Rows record trials, tuning time, and how many of the model's tasks
    have a tuned schedule (`tuned_tasks` of `total_tasks`); a cell with untuned tasks says so in
    its variant, `tuned (17/33 tasks)`: those tasks run TVM's fallback code."""

    Options = TunedOptions
    name = "tvm_tuned"
    variant = "tuned"
    # what MetaSchedule imports only once it tunes: its default cost model and its worker pools
    TUNING_MODULES = ("xgboost", "cloudpickle")

    def availability(self) -> Availability:
        base = super().availability()
        if not base.usable:
            return base
        import importlib.util

        missing = [m for m in self.TUNING_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"MetaSchedule's tuning needs {' and '.join(missing)}, not installed here; "
                                       "pip install 'bench[tvm-tune]'")
        return base

    def _budget(self, request: CompileRequest) -> dict[str, Any]:
        o = TunedOptions.model_validate({k: v for k, v in request.options.items() if k in TunedOptions.model_fields})
        return o.model_dump()

    def _cache_key(self, request: CompileRequest, target: Any) -> dict[str, Any]:
        return {**super()._cache_key(request, target), **self._budget(request)}

    def _cannot_tune_here(self, target: Any) -> str | None:
        """Why trials cannot be measured on this machine (None: they can). The CPU always can."""
        return None

    def _optimize(self, mod: Any, target: Any, request: CompileRequest) -> tuple[Any, dict[str, Any]]:
        import fcntl
        import time

        import tvm
        from tvm.relax import transform

        from bench.backends.tvm_tuning import CURVE, TuneJob, coverage

        budget = self._budget(request)
        db_key = {k: v for k, v in super()._cache_key(request, target).items() if k != "variant"}
        db_dir = request.cache.root / "tvm-tuning" / digest(db_key)
        db_dir.mkdir(parents=True, exist_ok=True)
        (db_dir / "key.json").write_text(json.dumps(db_key, default=str))
        tuning_mod = _tuning_input(mod, target)
        with open(db_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs tuning the same model take turns
            state_path = db_dir / "state.json"
            state = json.loads(state_path.read_text()) if state_path.is_file() else {"trials_spent": 0, "tuning_s": 0.0}
            remaining = budget["trials"] - state["trials_spent"]
            blocked = self._cannot_tune_here(target) if remaining > 0 else None
            if blocked:
                from bench.backends.base import Unsupported

                have = coverage(db_dir, tuning_mod, target)
                raise Unsupported(f"{have['tuned_tasks']}/{have['total_tasks']} tasks tuned, {remaining} of "
                                  f"{budget['trials']} trials still to run, and {blocked}")
            if remaining > 0:
                onnx_path, _ = self._graph(request)
                job = TuneJob(str(onnx_path), {k: list(v) for k, v in request.shapes.items()}, str(target), str(db_dir), remaining,
                              budget["min_trials_per_task"] if state["trials_spent"] == 0 else 0, budget["trials_per_iter"],
                              budget["builder_timeout_s"], request.threads, budget["search"], budget["weighting"])
                # MetaSchedule's runner times every candidate: it holds the machine's timing lock, so
                # another run's timed loop and these measurements never share the cores.
                with machine_lock.timing(f"MetaSchedule tuning of {request.model.name} {request.precision}",
                                         lambda who: announce_progress(f"waiting to tune: the machine's timing lock is held by {who}")):
                    t0 = time.perf_counter()  # tuning time, not time spent waiting for the lock
                    summary = _run_tuning(job)
                state.update(trials_spent=state["trials_spent"] + summary["trials"], tuning_s=state["tuning_s"] + time.perf_counter() - t0,
                             trials_per_minute=summary["trials_per_minute"], builder_pool_starts=summary["builder_pool_starts"])
                state_path.write_text(json.dumps(state))
            records, failed = _records(db_dir)
            covered = coverage(db_dir, tuning_mod, target)
            curve = (db_dir / CURVE).read_text() if (db_dir / CURVE).is_file() else "[]"
        with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3):
            mod = transform.MetaScheduleApplyDatabase(str(db_dir))(tuning_mod)
        tuned, total = covered["tuned_tasks"], covered["total_tasks"]
        return mod, {"variant": self.variant if tuned == total else f"{self.variant} ({tuned}/{total} tasks)",
                     "tuning_trials": records, "tuning_failed_trials": failed, "tuning_s": round(state["tuning_s"], 1),
                     "tuning_budget": budget["trials"], "tuning_trials_spent": state["trials_spent"],
                     "tuned_tasks": tuned, "total_tasks": total, "tuning_estimated_ms": covered["estimated_ms"],
                     "tuning_trials_per_minute": state.get("trials_per_minute"), "tuning_curve": curve}


def _tuning_input(mod: Any, target: Any) -> Any:
    """The module as MetaSchedule sees it (the passes of Relax's static_shape_tuning pipeline)."""
    import tvm
    from tvm import relax
    from tvm.relax import transform

    with tvm.target.Target(target):
        return tvm.transform.Sequential([transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(),
                                         relax.get_pipeline("zero")])(mod)


def _run_tuning(job: Any) -> dict[str, Any]:
    """Tune in a process of its own: its builder and runner pools must not share a process with the
    timed loop (measured here: 20 ms a call instead of 0.27 ms). The summary is read while the
    process runs (a child joined before its queue is drained can block on the queue's pipe), then
    the process is joined."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=_tune_process, args=(job, result))
    proc.start()
    summary = None
    while summary is None:
        try:
            summary = result.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                try:  # it may have put its summary and exited within the last second
                    summary = result.get(timeout=1.0)
                except queue.Empty:
                    break
    proc.join()
    if proc.exitcode != 0 or summary is None:
        raise RuntimeError(f"the MetaSchedule tuning process exited with code {proc.exitcode}"
                           + ("" if summary is not None else " without a summary"))
    return summary


def _tune_process(job: Any, result: Any) -> None:
    """Child process: import the model as the parent does, then tune every task into job.db_dir."""
    from bench.process import die_with_parent

    die_with_parent(os.getppid())  # the cell's worker: when it is killed, tuning stops too
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from bench.backends.tvm_tuning import tune

    _load_tensor_intrinsics()  # before MetaSchedule imports them the slow way
    target = tvm.target.Target(json.loads(job.target_json))
    mod = _tuning_input(from_onnx(onnx.load(job.onnx_path), shape_dict=job.shapes, keep_params_in_input=False), target)
    result.put(tune(mod, target, job, _load_tensor_intrinsics, log=lambda line: announce_progress(f"tune {line}")))


def _to_numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _to_numpy(item)]


class TvmCompiled(CompiledBase):
    clock = staticmethod(HOST_CLOCK)
    cannot_run = ""  # why this variant cannot run here (compiled for a device this machine lacks)
    timed_region = ("vm['main'](*inputs): inputs converted to TVM tensors on the device once, before timing; the VM "
                    "allocates its output tensors inside each call (Relax's calling convention); nothing copied to the host")

    def __init__(self, vm: Any, facts: dict[str, Any], output_names: list[str], device: Any = None):
        self.vm = vm
        self.facts = facts
        self._main = vm["main"]
        self._outputs = output_names
        self._device = device

    def _args(self, feeds: Feeds) -> list[Any]:
        import tvm

        return [tvm.runtime.tensor(np.ascontiguousarray(a), device=self._device or tvm.cpu()) for a in feeds.values()]

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        arrays = _to_numpy(self._main(*self._args(feeds)))
        if len(arrays) != len(self._outputs):
            raise RuntimeError(f"TVM returned {len(arrays)} outputs, the model declares {len(self._outputs)}")
        return dict(zip(self._outputs, arrays))

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        main, args = self._main, self._args(feeds)
        return lambda: main(*args)

    def profile(self, feeds: Feeds) -> Any:
        """Every call the Relax VM makes, timed by its instrument hook (TVM 0.27's VM has no profile()
        on this build), mapped to the graph by op type and order (bench.profiling.tvm_profile)."""
        import time

        import onnx

        from bench.profiling import run_passes, tvm_profile, unprofiled_us, vm_call_times

        args, sync = self._args(feeds), (self._device.sync if self._device is not None else (lambda: None))
        timed = self.prepare(feeds)
        wall = unprofiled_us(lambda: (timed(), sync()))
        calls = vm_call_times(self.vm, sync)
        passes: list[list[tuple[str, int]]] = []
        walls: list[int] = []

        def one() -> None:
            calls.clear()
            t0 = time.perf_counter_ns()
            self._main(*args)
            sync()
            walls.append(time.perf_counter_ns() - t0)
            passes.append(list(calls))

        run_passes(one)
        return tvm_profile(passes, walls, onnx.load(str(self.graph_path_of()), load_external_data=False), wall_us=wall)

    def release(self) -> None:
        self._main = self.vm = None
