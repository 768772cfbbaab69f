"""Apache TVM through Relax: ONNX frontend, LLVM target for this host's CPU, Relax VirtualMachine.

Untuned here: the CPU default pipeline schedules nothing, so these figures describe TVM's fallback
code, and every row says `variant=untuned`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from bench.backends.base import HOST_CLOCK, Availability, CompileRequest, Feeds


class TvmBackend:
    name = "tvm"
    variant = "untuned"
    precisions = ("fp32",)

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

    def compile(self, request: CompileRequest) -> "TvmCompiled":
        # The runtime's thread pool reads this once, on first use; a pool already started keeps its
        # size, which is why facts record the count the runtime reports, not the one asked for.
        os.environ.setdefault("TVM_NUM_THREADS", str(request.threads))
        import onnx
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        model = onnx.load(str(request.model.path))
        mod = from_onnx(model, shape_dict={k: list(v) for k, v in request.shapes.items()}, keep_params_in_input=False)
        target = tvm.target.Target(
            {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": request.threads}
        )
        executable = tvm.compile(mod, target=target)
        vm = relax.VirtualMachine(executable, tvm.cpu())
        facts = {
            "variant": self.variant,
            "provider": f"llvm -mcpu={target.attrs['mcpu']}",
            "threads": int(tvm.runtime.num_threads()),
            "backend_version": tvm.__version__,
            "executes_as": request.precision,
        }
        return TvmCompiled(vm, facts, [o.name for o in model.graph.output])


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
