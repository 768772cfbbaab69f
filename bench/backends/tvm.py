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

from bench.backends.base import HOST_CLOCK, Availability, CompileRequest, Feeds, execution_summary
from bench.precision import onnx_for

_COMPUTE = re.compile(r'R\.Tensor\(\([^)]*\), dtype="(\w+)"\) = R\.(?:nn\.conv2d|nn\.conv2d_transpose|matmul)\(')
_DTYPES = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int32": "int8"}


def executed_precision(mod: Any) -> str:
    """Element types produced by the convolutions and matmuls of a Relax module."""
    counts = Counter(_DTYPES.get(m, m) for m in _COMPUTE.findall(mod.script()))
    summary = execution_summary(counts)
    if "dequantize" in mod.script() and "int8" not in counts:
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
        try:
            import tvm
        except ImportError as e:
            return Availability(False, f"apache-tvm is not installed ({e}); pip install 'bench[cpu]'")
        except Exception as e:  # a broken native library raises all sorts
            return Availability(False, f"apache-tvm failed to import: {type(e).__name__}: {e}")
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
