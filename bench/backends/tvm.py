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
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.backends.base import HOST_CLOCK, Availability, CompileRequest, Feeds, execution_summary, import_framework
from bench.cache import digest
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


def host_target(threads: int) -> Any:
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": threads})


class TvmBackend:
    name = "tvm"
    variant = "untuned"
    precisions = ("fp32", "fp16", "int8")

    def availability(self) -> Availability:
        tvm, unusable = import_framework("tvm", "apache-tvm", "pip install 'bench[cpu]'")
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

        path, hit = onnx_for(request)
        model = onnx.load(str(path))
        mod = from_onnx(model, shape_dict={k: list(v) for k, v in request.shapes.items()}, keep_params_in_input=False)
        return mod, hit, [o.name for o in model.graph.output]

    def _optimize(self, mod: Any, target: Any, request: CompileRequest) -> tuple[Any, dict[str, Any]]:
        """The Relax module to build; the untuned variant takes it as imported."""
        return mod, {}

    def _cache_key(self, request: CompileRequest, target: Any) -> dict[str, Any]:
        import tvm

        return {"model_sha256": request.model.sha256, "precision": request.precision,
                "shapes": {k: list(v) for k, v in request.shapes.items()}, "target": str(target),
                "tvm": tvm.__version__, "variant": self.variant}

    def compile(self, request: CompileRequest) -> "TvmCompiled":
        # The runtime's thread pool reads this once, on first use: each cell runs in a fresh worker.
        os.environ.setdefault("TVM_NUM_THREADS", str(request.threads))
        import tvm
        from tvm import relax

        target = host_target(request.threads)
        extra: dict[str, Any] = {}

        def build(d: Path) -> None:
            mod, _, outputs = self._import(request)
            mod, info = self._optimize(mod, target, request)
            extra.update(info)
            executable = tvm.compile(mod, target=target)
            executable.export_library(str(d / "lib.so"))
            (d / "info.json").write_text(json.dumps({"outputs": outputs, "executes_as": executed_precision(mod), **info}))

        entry, hit = request.cache.get_or_build("tvm-lib", self._cache_key(request, target), build)
        info = json.loads((entry / "info.json").read_text())
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(entry / "lib.so")), tvm.cpu())
        facts = {
            "variant": self.variant,
            "provider": f"llvm -mcpu={target.attrs['mcpu']}",
            "threads": int(tvm.runtime.num_threads()),
            "backend_version": tvm.__version__,
            "executes_as": info["executes_as"],
            "cache_hit": hit,
            **{k: v for k, v in info.items() if k not in ("outputs", "executes_as")},
        }
        return TvmCompiled(vm, facts, info["outputs"])


def _load_tensor_intrinsics() -> None:
    """Builder-worker initializer. Each worker imports this on its first build (about 30 s on a
    2-core machine); done at start-up, it no longer eats the build timeout (see shared STACK.md)."""
    import tvm.s_tir.tensor_intrin  # noqa: F401


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
    """MetaSchedule before building. backend_options.tvm_tuned: trials (total budget, default 64),
    max_trials_per_task (default: trials), trials_per_iter (default 64), builder_timeout_s (300).

    The tuning database lives in the artifact cache, keyed by model, precision, shapes, target and
    TVM version; it is extended, never redone: a budget already spent tunes nothing, a larger one
    tunes only the difference. Rows record the trials the database holds and the tuning time."""

    name = "tvm_tuned"
    variant = "tuned"

    def _budget(self, request: CompileRequest) -> dict[str, int]:
        o = request.options
        trials = int(o.get("trials", 64))
        return {"trials": trials, "max_trials_per_task": int(o.get("max_trials_per_task", trials)),
                "trials_per_iter": int(o.get("trials_per_iter", 64)), "builder_timeout_s": int(o.get("builder_timeout_s", 300))}

    def _cache_key(self, request: CompileRequest, target: Any) -> dict[str, Any]:
        return {**super()._cache_key(request, target), **self._budget(request)}

    def _optimize(self, mod: Any, target: Any, request: CompileRequest) -> tuple[Any, dict[str, Any]]:
        import fcntl
        import multiprocessing
        import time

        import tvm
        from tvm.relax import transform

        budget = self._budget(request)
        db_key = {k: v for k, v in super()._cache_key(request, target).items() if k != "variant"}
        db_dir = request.cache.root / "tvm-tuning" / digest(db_key)
        db_dir.mkdir(parents=True, exist_ok=True)
        (db_dir / "key.json").write_text(json.dumps(db_key, default=str))
        with open(db_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs tuning the same model take turns
            state_path = db_dir / "state.json"
            state = json.loads(state_path.read_text()) if state_path.is_file() else {"trials_spent": 0, "tuning_s": 0.0}
            remaining = budget["trials"] - state["trials_spent"]
            if remaining > 0:
                # Tuning runs in a process of its own: its builder and runner pools must not share
                # a process with the timed loop (measured here: 20 ms a call instead of 0.27 ms).
                before, _ = _records(db_dir)
                t0 = time.perf_counter()
                onnx_path, _ = onnx_for(request)
                proc = multiprocessing.get_context("spawn").Process(target=_tune_process, args=(
                    str(onnx_path), {k: list(v) for k, v in request.shapes.items()}, str(target), str(db_dir),
                    remaining, min(budget["max_trials_per_task"], remaining), budget["trials_per_iter"],
                    budget["builder_timeout_s"], request.threads))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    raise RuntimeError(f"the MetaSchedule tuning process exited with code {proc.exitcode}")
                after, _ = _records(db_dir)
                # Count what was measured; a budget the search space cannot fill is spent all the same.
                state["trials_spent"] += max(after - before, remaining if after == before else 0)
                state["tuning_s"] += time.perf_counter() - t0
                state_path.write_text(json.dumps(state))
            records, failed = _records(db_dir)
        mod = _tuning_input(mod, target)
        with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3):
            mod = transform.MetaScheduleApplyDatabase(str(db_dir))(mod)
        return mod, {"tuning_trials": records, "tuning_failed_trials": failed,
                     "tuning_s": round(state["tuning_s"], 1), "tuning_budget": budget["trials"]}


def _tuning_input(mod: Any, target: Any) -> Any:
    """The module as MetaSchedule sees it (the passes of Relax's static_shape_tuning pipeline)."""
    import tvm
    from tvm import relax
    from tvm.relax import transform

    with tvm.target.Target(target):
        return tvm.transform.Sequential([transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(),
                                         relax.get_pipeline("zero")])(mod)


def _tune_process(onnx_path: str, shapes: dict, target_json: str, db_dir: str, trials: int, per_task: int,
                  per_iter: int, builder_timeout_s: int, threads: int) -> None:
    """Child process: import the model as the parent does, then tune it into db_dir."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import tune_relax

    target = tvm.target.Target(json.loads(target_json))
    mod = _tuning_input(from_onnx(onnx.load(onnx_path), shape_dict=shapes, keep_params_in_input=False), target)
    builder = ms.builder.LocalBuilder(max_workers=threads, timeout_sec=builder_timeout_s, initializer=_load_tensor_intrinsics)
    tune_relax(mod, params={}, target=target, work_dir=db_dir, max_trials_global=trials, max_trials_per_task=per_task,
               num_trials_per_iter=per_iter, builder=builder, seed=0)


def _to_numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _to_numpy(item)]


class TvmCompiled:
    clock = staticmethod(HOST_CLOCK)

    def __init__(self, vm: Any, facts: dict[str, Any], output_names: list[str]):
        self.vm = vm
        self.facts = facts
        self._main = vm["main"]
        self._outputs = output_names

    def _args(self, feeds: Feeds) -> list[Any]:
        import tvm

        return [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in feeds.values()]

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        arrays = _to_numpy(self._main(*self._args(feeds)))
        if len(arrays) != len(self._outputs):
            raise RuntimeError(f"TVM returned {len(arrays)} outputs, the model declares {len(self._outputs)}")
        return dict(zip(self._outputs, arrays))

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        main, args = self._main, self._args(feeds)
        return lambda: main(*args)

    def release(self) -> None:
        self._main = self.vm = None
